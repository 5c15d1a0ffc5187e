"""What history costs SQLite's writer per changed row, apart from Graph and the pass around it (issue 20).

A pass of 1,000 changes lasts 50-100 ms, most of it paging Graph and converting its items, and the load of a shared
machine moves that by more than history costs. This bench times the writer's statements alone:

- ``--users`` users are mirrored once with ``history: true`` (a real pass against the emulator, into SQLite);
- ``--changes`` of their rows get a new job title (as a delta page would bring them, ``_raw`` included);
- on a fresh copy of that database file each time, the writer's upsert of those rows runs as
  :meth:`syncer.worker.tablesql.TableSql.sqlite_upsert` runs it for the writer, with history (its triggers, and the statements after the
  upsert that version the rows it adds) and without (the triggers dropped, the plain upsert), alternating,
  ``--repeat`` times each, in one transaction as a pass commits its page.

Prints the medians (process CPU: SQLite's work runs in this process), history's cost per changed row in µs and
the ratio of the two. Usage: ``python bench/history_writes.py [--users 20000] [--changes 1000] [--repeat 15]``;
progress on stderr, one JSON line at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import sqlalchemy as sa
from sync import Emulator, prepare, syncer_pass, write_spec  # bench/sync.py (puts syncer on sys.path)

from syncer import database
from syncer.spec import load_spec
from syncer.worker.tablesql import table_sql


def log(message: str) -> None:
    print(f"[bench/history_writes] {message}", file=sys.stderr, flush=True)


def changed_rows(engine: sa.Engine, count: int) -> list[tuple[Any, ...]]:
    """*count* mirror rows from the middle of the table, each with a new jobTitle in its column and its _raw."""
    with engine.connect() as connection:
        names = [r[1] for r in connection.exec_driver_sql("PRAGMA table_info(bench_users)")]
        total = connection.exec_driver_sql("SELECT count(*) FROM bench_users").scalar_one()
        rows = connection.exec_driver_sql(
            f"SELECT * FROM bench_users ORDER BY rowid LIMIT {count} OFFSET {max(0, (total - count) // 2)}"
        ).all()
    title, raw, synced = names.index("job_title"), names.index("_raw"), names.index("_synced_at")
    out = []
    for i, row in enumerate(rows):
        values = list(row)
        values[title] = f"Changed {i}"
        item = orjson.loads(values[raw])
        item["jobTitle"] = values[title]
        values[raw] = orjson.dumps(item).decode()
        values[synced] = "2030-01-01 00:00:00.000000"
        out.append(tuple(values))
    return out


def write(path: Path, spec_path: Path, rows: list[tuple[Any, ...]], *, history: bool) -> tuple[float, int]:
    """The writer's statements for *rows* on *path*, history's triggers kept or dropped: CPU ms, versions added."""
    engine = database.create_engine(f"sqlite:///{path}")
    declared = load_spec(spec_path).subscriptions[0].mirror
    # Without history the writer runs the plain upsert: the statements of the same table declared without it.
    sql = table_sql(declared if history else dataclasses.replace(declared, history=None), engine.dialect)
    with engine.begin() as connection:
        if not history:
            for (name,) in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'bench_users'"
            ).all():
                connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
        versions = connection.exec_driver_sql("SELECT count(*) FROM bench_users_versions").scalar_one()
        connection.exec_driver_sql("SELECT count(*) FROM bench_users").scalar_one()  # both tables' pages read in
    started = time.process_time()
    with engine.begin() as connection:  # as a pass writes a page
        sql.sqlite_upsert(connection, rows)
    elapsed = (time.process_time() - started) * 1000
    with engine.connect() as connection:
        added = connection.exec_driver_sql("SELECT count(*) FROM bench_users_versions").scalar_one() - versions
    engine.dispose()
    return elapsed, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-writes-"))
    emu = Emulator(workdir)
    try:
        emu.reset_and_seed(args.users)
        base = workdir / "base.db"
        spec_path = write_spec(workdir, emu.info_file, f"sqlite:///{base}", history=True)
        prepare(spec_path)
        log(f"mirroring {args.users} users with history")
        syncer_pass(spec_path)
    finally:
        emu.stop()
    engine = database.create_engine(f"sqlite:///{base}")
    with engine.connect() as connection:  # everything into the file itself: the copies take the file alone
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = changed_rows(engine, args.changes)
    engine.dispose()
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.repeat):
        for history in (True, False) if i % 2 == 0 else (False, True):
            copy = workdir / "copy.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{copy}{suffix}").unlink(missing_ok=True)
            shutil.copy(base, copy)
            ms, added = write(copy, spec_path, rows, history=history)
            if added != (len(rows) if history else 0):
                raise RuntimeError(f"history={history}: {added} versions written for {len(rows)} changed rows")
            times[history].append(ms)
        log(f"round {i + 1}/{args.repeat}: with {times[True][-1]:.1f} ms, without {times[False][-1]:.1f} ms")
    shutil.rmtree(workdir, ignore_errors=True)
    with_ms, without_ms = median(times[True]), median(times[False])
    print(json.dumps({
        "users": args.users, "changes": len(rows), "repeat": args.repeat,
        "with_history_ms": round(with_ms, 2), "without_history_ms": round(without_ms, 2),
        "history_us_per_changed_row": round((with_ms - without_ms) * 1000 / len(rows), 1),
        "ratio": round(without_ms / with_ms, 2),
    }))


if __name__ == "__main__":
    main()
