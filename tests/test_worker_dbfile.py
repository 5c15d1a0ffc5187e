"""Issue 18 item 7: the SQLite file deleted under a running worker is said once, and the worker stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from syncer import database, schema
from syncer.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parent.parent


def test_a_deleted_sqlite_file_stops_the_worker_with_one_message(tmp_path: Path, emulator: EmulatorServer) -> None:
    info = tmp_path / "emulator.json"
    emulator.write_info(info)
    db = tmp_path / "worker.db"
    env = {**os.environ, "SYNCER_EMULATOR_INFO": str(info), "SYNCER_DATABASE_URL": f"sqlite:///{db}"}
    spec = str(ROOT / "subscriptions.yaml")
    subprocess.run([sys.executable, "-m", "syncer", "db", "upgrade", "--spec", spec], env=env, check=True,
                   capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "syncer", "worker", "--spec", spec, "--worker-id", "w1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        engine = database.create_engine(f"sqlite:///{db}")
        try:
            deadline = time.monotonic() + 30
            passes = 0
            while time.monotonic() < deadline and not passes and process.poll() is None:
                with engine.connect() as connection:
                    passes = connection.execute(sa.select(sa.func.count()).select_from(schema.sync_runs)).scalar_one()
                time.sleep(0.2)
            assert passes, "the worker never ran a pass"
        finally:
            engine.dispose()
        for path in tmp_path.glob("worker.db*"):
            path.unlink()
        output, _ = process.communicate(timeout=30)  # it stops by itself
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, output
    assert output.count(f"the SQLite database {db} was deleted while the worker ran: stopping") == 1, output
    assert "Traceback" not in output and len(output.splitlines()) < 40, output
    assert not db.exists(), "the worker must not create an empty database in its place"
