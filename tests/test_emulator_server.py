"""The emulator's entry point: what it writes to disk (owner-only: credentials and keys) and its warning when
it listens beyond loopback (its admin API has no authentication by design)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.emulator.server import beyond_loopback


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_info_file_and_the_keys_are_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with EmulatorServer(EmulatorConfig(seed=1), workdir=tmp_path / "work" / "emulator") as server:
            info_file = tmp_path / "dot-syncer" / "emulator.json"
            server.write_info(info_file)
            info = json.loads(info_file.read_text())
    finally:
        os.umask(previous)
    assert info["client_secret"]
    assert mode(info_file) == 0o600 and mode(info_file.parent) == 0o700
    assert mode(tmp_path / "work" / "emulator") == 0o700 and mode(tmp_path / "work") == 0o700
    assert mode(Path(info["client_key"])) == 0o600


def test_rewriting_an_existing_info_file_makes_it_owner_only(tmp_path: Path) -> None:
    info_file = tmp_path / "emulator.json"
    info_file.write_text("{}")
    info_file.chmod(0o644)
    with EmulatorServer(EmulatorConfig(seed=1)) as server:
        server.write_info(info_file)
    assert mode(info_file) == 0o600 and json.loads(info_file.read_text())["client_secret"]


@pytest.mark.parametrize(
    "host, beyond",
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.10", True),
        ("no-such-host.invalid", True),
    ],
)
def test_which_addresses_reach_beyond_loopback(host: str, beyond: bool) -> None:
    assert beyond_loopback(host) is beyond


def run_emulator(*args: str) -> str:
    """`syncer emulator ARGS` until its banner is out: its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            if line.startswith("Press Ctrl+C") or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    return err


def test_the_emulator_warns_when_it_listens_beyond_loopback() -> None:
    err = run_emulator("--host", "0.0.0.0")
    warnings = [line for line in err.splitlines() if "reachable from other machines" in line]
    # The log line (WARNING syncer.emulator) and the banner's own line, which no log level hides.
    assert len(warnings) == 2, err
    assert any(" WARNING syncer.emulator: " in w for w in warnings) and any(w.startswith("WARNING: ") for w in warnings)
    assert "/_emulator" in warnings[0]


def test_the_emulator_is_quiet_on_loopback() -> None:
    assert "reachable from other machines" not in run_emulator("--host", "127.0.0.1")
