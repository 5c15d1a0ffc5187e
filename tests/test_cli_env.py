"""Operators' knobs: logs as JSON lines (masked like text logs), every flag from a SYNCER_* variable."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer import log
from syncer.cli import main


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, sqlite_url, graph, USERS_SPEC.format(delete="soft"))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_log_format_json_is_one_object_per_line(env: SyncEnv, restore_logging: None) -> None:
    env.graph.admin("POST", "seed", json={"users": 5})
    env.graph.admin("POST", "faults", json={"type": "status", "status": 429, "path": "/users/delta", "retryAfter": 1,
                                             "count": 1})
    result = CliRunner().invoke(main, ["--log-format", "json", "sync", "--spec", str(env.spec.path)])
    assert result.exit_code == 0, result.output
    entries = json_lines(result.stderr)
    (retry,) = [e for e in entries if e["logger"] == "syncer.graph" and e["level"] == "WARNING"]
    assert retry["message"].startswith("Graph: 429 TooManyRequests on GET /v1.0/users/delta")
    assert set(retry) == {"time", "level", "logger", "message"} and retry["time"].endswith("+00:00")


def test_json_logs_are_masked_like_text_logs(restore_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    log.configure("INFO", "json")
    logger = logging.getLogger("syncer.test")
    logger.warning('sent "Authorization: Bearer abc.def.ghi" with client_secret=hunter2')
    try:
        raise ValueError("GET https://g/v1.0/users/delta?$deltatoken=SECRET-TOKEN failed")
    except ValueError:
        logger.exception("pass failed")
    first, second = json_lines(stream.getvalue())
    assert "hunter2" not in first["message"] and "abc.def.ghi" not in first["message"]
    assert "Bearer ***" in first["message"] and "client_secret=***" in first["message"]
    assert second["message"] == "pass failed" and "ValueError" in second["exception"]
    assert "SECRET-TOKEN" not in second["exception"] and "Traceback" in second["exception"]


def test_flags_come_from_the_environment(env: SyncEnv, restore_logging: None) -> None:
    env.graph.admin("POST", "seed", json={"users": 5})
    runner = CliRunner()
    first = runner.invoke(main, ["sync"], env={"SYNCER_SPEC": str(env.spec.path)})
    assert first.exit_code == 0 and "users: ok full" in first.stdout, first.output  # SYNCER_SPEC keeps its meaning
    delta = runner.invoke(main, ["sync"], env={"SYNCER_SPEC": str(env.spec.path)})
    assert "users: ok, " in delta.stdout, delta.output  # from the deltaLink
    # SYNCER_<COMMAND>_<FLAG>: SYNCER_SYNC_FULL=1 is `syncer sync --full`; SYNCER_LOG_FORMAT too.
    full = runner.invoke(main, ["sync"], env={"SYNCER_SPEC": str(env.spec.path), "SYNCER_SYNC_FULL": "1",
                                              "SYNCER_LOG_FORMAT": "json", "SYNCER_LOG_LEVEL": "DEBUG"})
    assert full.exit_code == 0 and "users: ok full" in full.stdout, full.output
    assert json_lines(full.stderr)  # DEBUG lines, all JSON


def test_shell_completion_is_produced_and_documented() -> None:
    # Issue 18 item 9: click's completion, through the installed entry point as a shell runs it.
    import os
    import subprocess
    import sys

    syncer = Path(sys.executable).parent / "syncer"
    script = subprocess.run([str(syncer)], env={**os.environ, "_SYNCER_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_syncer_completion()" in script.stdout, script.stderr
    assert "complete -o nosort -F _syncer_completion syncer" in script.stdout
    words = subprocess.run([str(syncer)], env={**os.environ, "_SYNCER_COMPLETE": "bash_complete",
                                               "COMP_WORDS": "syncer db up", "COMP_CWORD": "2"},
                           capture_output=True, text=True, timeout=60)
    assert words.stdout.split() == ["plain,upgrade"], words
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "_SYNCER_COMPLETE=bash_source syncer" in readme and "_SYNCER_COMPLETE=zsh_source syncer" in readme
