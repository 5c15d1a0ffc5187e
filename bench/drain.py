"""How fast the worker empties a backlog of stored notifications (the inbox) into dirty scopes.

    .venv/bin/python bench/drain.py [--notifications 100000] [--scopes 1000] [--postgres URL] [--repeat 3]

A burst (an outage of the worker, a mass change in the tenant) leaves many notifications waiting; the
receiver stores up to ~22k per second on PostgreSQL, so the worker must drain at least as fast as
Graph sends, or the backlog only grows. Each round: a fresh database (SQLite file, PostgreSQL schema)
with --scopes mailbox scopes and their subscriptions, --notifications rows put in the inbox
round-robin over the scopes, then :meth:`syncer.worker.jobs.Worker.drain` (without starting passes)
until the inbox is empty: rows/s. Then the same again on top of the processed rows ("warm"): a
queue table with history, whose statistics say that nothing waits, is where a planner goes wrong.

The last line printed is one JSON object (medians over --repeat rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402
from sync import drop_database, fresh_database  # noqa: E402  (bench/sync.py)

from syncer import database, schema  # noqa: E402
from syncer.inbox import Inbox, NewItem  # noqa: E402
from syncer.migrate import upgrade_core  # noqa: E402
from syncer.worker.jobs import Worker  # noqa: E402
from syncer.worker.scopes import STRATEGIES, Scope, ScopeIndex  # noqa: E402

TENANT = "bench-tenant"


def log(message: str) -> None:
    print(f"[bench/drain] {message}", file=sys.stderr, flush=True)


def mailbox_scopes(count: int) -> list[Scope]:
    strategy = STRATEGIES["message"]
    return [
        Scope(tenant_id=TENANT, key=f"users/u{i}/mailFolders", name="mail", parent_key=f"users/u{i}/messages",
              table="messages", strategy=strategy, initial_url=f"users/u{i}/mailFolders/delta", container=True,
              mailbox=f"u{i}")
        for i in range(count)
    ]


def record_subscriptions(engine: sa.Engine, found: list[Scope]) -> None:
    now = datetime.now(UTC)
    rows = [
        dict(subscription_id=f"sub-{i}", tenant_id=TENANT, name="mail", scope_key=s.parent_key, resource=s.parent_key,
             change_type="created,updated,deleted", notification_url="https://example.test/n", client_state="x",
             include_resource_data=False, expires_at=now + timedelta(days=2), created_at=now, updated_at=now,
             status="active")
        for i, s in enumerate(found)
    ]
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.subscriptions), rows)


def fill(inbox: Inbox, notifications: int, scopes: int) -> None:
    batch: list[NewItem] = []
    for j in range(notifications):
        i = j % scopes
        resource = f"Users/u{i}/Messages/m{j}"
        batch.append(NewItem(tenant_id=TENANT, subscription_id=f"sub-{i}", kind="change", event="created",
                             resource=resource, resource_id=f"m{j}", dedupe_key=uuid.uuid4().hex,
                             payload={"resource": resource, "changeType": "created"}))
        if len(batch) == 1000:
            inbox.put(batch)
            batch = []
    inbox.put(batch)


def drain_all(worker: Worker) -> dict[str, Any]:
    started = time.perf_counter()
    total = 0
    while (claimed := worker.drain(start=False).claimed) > 0:
        total += claimed
    seconds = time.perf_counter() - started
    return {"rows": total, "seconds": round(seconds, 2), "rows_per_s": round(total / seconds)}


def one_round(database_url: str, notifications: int, scopes: int) -> dict[str, Any]:
    upgrade_core(database_url)
    engine = database.create_engine(database_url)
    try:
        found = mailbox_scopes(scopes)
        record_subscriptions(engine, found)
        inbox = Inbox(engine)
        worker = Worker(engine, {}, ScopeIndex.of(found), worker_id="bench-drain")
        try:
            worker.register_scopes()
            out = {}
            for name in ("fresh", "warm"):
                fill(inbox, notifications, scopes)
                out[name] = drain_all(worker)
                assert out[name]["rows"] == notifications and inbox.depth() == 0, out
            return out
        finally:
            worker.close()
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--scopes", type=int, default=1000)
    parser.add_argument("--postgres", default=os.environ.get("SYNCER_TEST_DATABASE_URL"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, Any] = {"notifications": args.notifications, "scopes": args.scopes}
    with tempfile.TemporaryDirectory(prefix="syncer-bench-drain-") as tmp:
        for kind in ("sqlite", "postgres"):
            runs: list[dict[str, Any]] = []
            for n in range(args.repeat):
                url = fresh_database(kind, Path(tmp), args.postgres)
                if url is None:
                    break
                log(f"{kind} round {n + 1}/{args.repeat}")
                try:
                    runs.append(one_round(url, args.notifications, args.scopes))
                finally:
                    drop_database(url)
            if not runs:
                figures[kind] = "skipped: no --postgres / SYNCER_TEST_DATABASE_URL"
                continue
            figures[kind] = {
                name: {
                    "rows_per_s": round(statistics.median(r[name]["rows_per_s"] for r in runs)),
                    "runs_rows_per_s": [r[name]["rows_per_s"] for r in runs],
                }
                for name in ("fresh", "warm")
            }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
