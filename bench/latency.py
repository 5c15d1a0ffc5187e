"""Freshness: time from a change made through Graph's API to the row in the mirror, and where it goes.

    .venv/bin/python bench/latency.py [--changes 3000] [--rate 50] [--database postgresql|sqlite]
                                      [--drain-interval 0.5]

The emulator (in this process, delivering at once) holds a few thousand users and 30 mailboxes and
OneDrives; `syncer serve` (gunicorn) and `syncer worker` run as subprocesses, as in production. The
bench makes --changes changes at --rate per second, each on an item no other change touches (a user's
jobTitle, a new message in one of the mailboxes, a new folder in one of the drives), so that each has
its own visibility time: the end of the sync run that wrote its row (``_sync_run_id`` →
``syncer_sync_runs.finished_at``, when the row is surely committed). Latency = visible - the moment
just before the write request was sent.

Where the time goes (users and messages, whose notifications name the item):
- delivery: the inbox row's ``received_at`` - change time (the emulator's dispatch, the POST and the
  receiver's commit; the emulator's delivery log has whole-second times, too coarse to split it);
- inbox wait: ``processed_at`` (the drain that took the row; it marks the scope dirty and acks at
  once) - ``received_at``: the drain interval shows here;
- sync: visible - ``processed_at``: waiting for the scope's pass (one at a time per scope) and the pass.

Target (issue 8): p50 < 1 s, p99 < 5 s. The last line printed is one JSON object.

``--rich`` (issue 15) compares, in the same run, basic and rich subscriptions (``include_resource_data``) of the
same resources: inbox messages of 2 mailboxes each way, and the channel messages of one team each way. A rich
change is written from its decrypted payload; a basic one marks its scope dirty for a delta pass. Printed: change
-> row visible p50/p99 per path, and the GETs of the changed items in the emulator's request log (0 for rich).
Target: rich p50 at least 2x lower than basic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sqlalchemy as sa  # noqa: E402
from chaos_harness import Harness  # noqa: E402

from syncer import mirror, schema  # noqa: E402
from syncer.database import normalize_url  # noqa: E402

MAILBOXES = 30


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95), "p99": pct(values, 0.99),
            "max": round(max(values), 3) if values else None,
            "mean": round(statistics.fmean(values), 3) if values else None}


def epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def database(kind: str, *, prefix: str = "bench_latency") -> tuple[str, Any]:
    """(url, cleanup) for a fresh database of *kind* (PostgreSQL: a schema of its own)."""
    if kind == "sqlite":
        directory = tempfile.mkdtemp(prefix="syncer-latency-")
        return f"sqlite:///{directory}/syncer.db", lambda: None
    base = os.environ.get("SYNCER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    base = normalize_url(base)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)

    def cleanup() -> None:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()

    return url, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--drain-interval", type=float, default=0.5, help="syncer worker --drain-interval")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last rows")
    parser.add_argument("--rich", action="store_true", help="rich vs basic subscriptions (issue 15)")
    parser.add_argument("--graph-latency-ms", type=float, default=0.0,
                        help="--rich: the time each Graph read takes (the emulator's latency rule)")
    args = parser.parse_args()
    if args.rich:
        from latency_rich import run_rich  # bench/ is on sys.path when run as a script

        run_rich(args, database(args.database))
        return

    url, cleanup = database(args.database)
    workdir = Path(tempfile.mkdtemp(prefix="syncer-latency-work-"))
    users_needed = int(args.changes * 0.4) + MAILBOXES + 10
    org = {"users": users_needed, "groups": 1, "membersPerGroup": 2, "messagesPerUser": 2, "driveItemsPerUser": 1,
           "eventsPerUser": 0, "contactsPerUser": 0, "tasksPerUser": 0, "contentUsers": MAILBOXES}
    harness = Harness(url, workdir, seed=args.seed, org=org, drain_interval=args.drain_interval, proxy=False)
    rng = random.Random(args.seed)
    changes: list[dict[str, Any]] = []
    try:
        harness.start()
        took, differences = harness.converge(timeout=180)
        if differences:
            raise SystemExit(f"initial sync did not converge: {differences[:3]}")
        print(f"initial sync converged in {took:.1f}s", file=sys.stderr)
        assert harness.graph is not None
        g = harness.graph
        spare = [u for u in harness.users if u not in harness.content_users]
        rng.shuffle(spare)
        started = time.monotonic()
        for n in range(args.changes):
            kind = rng.choices(["user", "message", "file"], weights=[40, 45, 15])[0]
            if kind == "user" and not spare:
                kind = "message"
            t0 = time.time()
            if kind == "user":
                item = spare.pop()
                g.request("PATCH", f"users/{item}", json={"jobTitle": f"latency {n}"})
            elif kind == "message":
                user = rng.choice(harness.content_users)
                item = g.request("POST", f"users/{user}/mailFolders/inbox/messages",
                                 json={"subject": f"latency {n}", "body": {"contentType": "text", "content": "x"}}
                                 ).json()["id"]
            else:
                user = rng.choice(harness.content_users)
                item = g.request("POST", f"users/{user}/drive/root/children",
                                 json={"name": f"latency {n}", "folder": {}}).json()["id"]
            changes.append({"kind": kind, "id": item, "t0": t0})
            # Pace: the n-th change at n / rate seconds.
            delay = started + (n + 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        made_in = time.monotonic() - started
        print(f"{len(changes)} changes in {made_in:.1f}s", file=sys.stderr)

        visible = wait_visible(harness, changes, timeout=args.timeout)
        report = harness.delivery()
        result = analyse(harness, changes, visible, report)
        result.update(database=args.database, drain_interval=args.drain_interval, rate=args.rate,
                      changes=len(changes), seconds_making_changes=round(made_in, 1),
                      target_met=bool(result["latency"]["p50"] is not None and result["latency"]["p50"] < 1.0
                                      and result["latency"]["p99"] is not None and result["latency"]["p99"] < 5.0))
        print(json.dumps(result))
    finally:
        harness.stop()
        cleanup()


TABLES = {"user": "users", "message": "inbox_messages", "file": "drive_items"}


def wait_visible(harness: Harness, changes: list[dict[str, Any]], *, timeout: float) -> dict[str, float]:
    """id -> the finish time of the sync run that wrote the changed row (waits until all are there)."""
    assert harness.spec is not None
    tables = {s.mirror.table: mirror.build_table(s.mirror) for s in harness.spec.subscriptions}
    runs = schema.sync_runs
    wanted: dict[str, set[str]] = {}
    for c in changes:
        wanted.setdefault(TABLES[c["kind"]], set()).add(c["id"])
    expected_title = {c["id"]: f"latency {i}" for i, c in enumerate(changes) if c["kind"] == "user"}
    found: dict[str, float] = {}
    engine = harness.engine()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(found) < len(changes):
            with engine.connect() as connection:
                for name, ids in wanted.items():
                    t = tables[name]
                    rows = connection.execute(
                        sa.select(t.c.id, t.c._raw, runs.c.finished_at)
                        .join(runs, runs.c.id == t.c._sync_run_id)
                        .where(t.c.id.in_(sorted(ids - set(found))), runs.c.finished_at.is_not(None))
                    ).all()
                    for item_id, raw, finished in rows:
                        if item_id in expected_title and (raw or {}).get("jobTitle") != expected_title[item_id]:
                            continue  # the row is there, but not yet with this change
                        found[item_id] = epoch(finished)
            time.sleep(0.5)
    finally:
        engine.dispose()
    return found


def analyse(harness: Harness, changes: list[dict[str, Any]], visible: dict[str, float],
            report: dict[str, Any]) -> dict[str, Any]:
    engine = harness.engine()
    inbox: dict[str, tuple[float, float]] = {}
    try:
        with engine.connect() as connection:
            for resource, received, processed in connection.execute(
                sa.select(schema.inbox.c.resource, schema.inbox.c.received_at, schema.inbox.c.processed_at)
                .order_by(schema.inbox.c.id)
            ):
                key = str(resource or "").rstrip("/").rsplit("/", 1)[-1].lower()
                if key and key not in inbox and processed is not None:
                    inbox[key] = (epoch(received), epoch(processed))
        with engine.connect() as connection:
            r = schema.sync_runs
            passes = connection.execute(sa.select(sa.func.count()).select_from(r)).scalar_one()
            durations = [
                epoch(f) - epoch(s)
                for s, f in connection.execute(sa.select(r.c.started_at, r.c.finished_at).where(r.c.finished_at.is_not(None)))
            ]
    finally:
        engine.dispose()
    latency, delivery, wait, sync_part = [], [], [], []
    by_kind: dict[str, list[float]] = {}
    for c in changes:
        if c["id"] not in visible:
            continue
        total = visible[c["id"]] - c["t0"]
        latency.append(total)
        by_kind.setdefault(c["kind"], []).append(total)
        key = c["id"].lower()
        if key in inbox:
            received, processed = inbox[key]
            delivery.append(received - c["t0"])
            wait.append(processed - received)
            sync_part.append(visible[c["id"]] - processed)
    return {
        "latency": summary(latency),
        "by_kind": {k: summary(v) for k, v in by_kind.items()},
        "breakdown": {"delivery": summary(delivery), "inbox_wait": summary(wait),
                      "sync": summary(sync_part)},
        "not_visible": len(changes) - len(visible),
        "passes": passes,
        "pass_seconds": summary(durations),
        "notifications": {k: report.get(k) for k in ("delivered", "deliveredPosts", "retried", "dropped")},
    }


if __name__ == "__main__":
    main()
