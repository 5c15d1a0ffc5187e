"""`syncer run` and `syncer demo`: the whole loop, in one process and as a subprocess."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa

from syncer import database, schema
from syncer.demo import free_port, run_demo
from syncer.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SPEC = ROOT / "subscriptions.yaml"


def test_demo_converges_on_the_bundled_spec(tmp_path: Path) -> None:
    lines: list[str] = []
    workdir = tmp_path / "dot-syncer" / "demo"  # like .syncer/demo: both folders created by the demo
    assert run_demo(BUNDLED_SPEC, workdir=workdir, echo=lines.append, timeout=50), "\n".join(lines)
    text = "\n".join(lines)
    assert "converged" in text and "the mirror matches Graph" in text
    # The database and the emulator's credentials are the owner's only.
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (workdir.parent, workdir, workdir / "syncer.db", workdir / "emulator.json")}
    assert list(modes.values()) == [0o700, 0o700, 0o600, 0o600], modes
    # Every kind of live change reached the mirror through notifications, not only the safety net.
    engine = database.create_engine(f"sqlite:///{workdir / 'syncer.db'}")
    try:
        with engine.connect() as connection:
            stored = connection.execute(sa.select(sa.func.count()).select_from(schema.inbox)).scalar_one()
            deleted_users = connection.execute(
                sa.text("SELECT count(*) FROM users WHERE _deleted_at IS NOT NULL")
            ).scalar_one()
            launch = connection.execute(
                sa.text(
                    "SELECT m.body, m.reply_to_id, m._removed_reason FROM channel_messages m"
                    " JOIN channels c ON c.id = m.channel_id WHERE c.display_name = 'Launch' ORDER BY m.id"
                )
            ).all()
            resyncs = connection.execute(
                sa.select(sa.func.count())
                .select_from(schema.sync_runs)
                .where(schema.sync_runs.c.full_round.is_(True), schema.sync_runs.c.scope_key == "users")
            ).scalar_one()
    finally:
        engine.dispose()
    assert stored > 0
    assert deleted_users == 1
    # The Teams conversation of the live phase: a root (edited), a reply, and a soft-deleted reply.
    root, kept, deleted = launch
    assert root.body == "Launch on Thursday?" and root.reply_to_id is None and root._removed_reason is None
    assert kept.body == "Friday works" and kept.reply_to_id is not None and kept._removed_reason is None
    assert deleted.reply_to_id is not None and deleted._removed_reason == "deleted"
    assert "Launch on Thursday?" in text  # the example query over the channel
    assert resyncs >= 2, "the injected 410 must have caused a second full enumeration of users"


def test_syncer_run_stops_cleanly_on_sigterm(tmp_path: Path, emulator: EmulatorServer) -> None:
    info_file = tmp_path / "emulator.json"
    emulator.write_info(info_file)
    port = free_port()
    env = dict(os.environ)
    env.update(
        SYNCER_EMULATOR_INFO=str(info_file),
        SYNCER_RECEIVER_PORT=str(port),
        SYNCER_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}",
        SYNCER_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "syncer", "run", "--spec", str(BUNDLED_SPEC)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError("the receiver never came up")
        time.sleep(1.0)  # reconcile and the first passes are under way
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM received" in output and output.rstrip().endswith("stopped")
    assert "Traceback" not in output
