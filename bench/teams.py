"""Benchmark of Teams channel messages: the initial mirror of one busy channel, then the changes a day brings.

Against one emulator in its own process (bench/sync.py's), for SQLite and PostgreSQL, ``--repeat`` times each:

- the emulator is reset and seeded with one team whose General channel holds ``--roots`` root messages with
  ``--replies`` replies each (10,000 messages by default: 2,500 x (1 + 3));
- ``initial``: :func:`syncer.worker.scheduler.sync_once` (what ``syncer sync`` runs) over the channel-message
  declaration: the channel's delta (roots, ``$expand=replies``), every message a row;
- ``incremental``: syncer runs as ``syncer run`` does (receiver, reconcile, worker; :class:`syncer.run.Runner`),
  then ``--changes`` changes are made as users through the emulator's admin API (new roots, new replies, edits of
  roots and replies, soft deletes of both) and the time is taken until the worker is idle and the mirror equals a
  fresh enumeration from Graph (:mod:`syncer.verify`): notification delivery, the delta pass of the channel and
  the replies fetched by id. ``seconds_to_converge`` runs from the first change to the end of the last pass or fetch
  it caused (the mirror then found equal to Graph); ``seconds_to_verified`` also holds the comparisons' own time.

Graph requests are counted from the emulator's request log (``GET /_emulator/requests``), identity calls excluded.
Usage: ``python bench/teams.py [--roots 2500] [--replies 3] [--changes 100] [--repeat 3] [--postgres URL]``.
Progress on stderr, one JSON line of figures (medians over the repeats) at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sync import Emulator, drop_database, fresh_database  # noqa: E402  (bench/sync.py)

from syncer import database, schema  # noqa: E402
from syncer.demo import free_port  # noqa: E402
from syncer.graph.client import GraphClient  # noqa: E402
from syncer.migrate import upgrade_core  # noqa: E402
from syncer.mirror import upgrade as upgrade_mirror  # noqa: E402
from syncer.run import Runner  # noqa: E402
from syncer.spec import Spec, load_spec  # noqa: E402
from syncer.verify import compare, declared  # noqa: E402
from syncer.worker.scheduler import Schedule, sync_once  # noqa: E402

SPEC = """version: 1
graph: {{cloud: emulator, emulator_info: {info}}}
receiver:
  notification_url: http://127.0.0.1:{port}/notifications
  lifecycle_url: http://127.0.0.1:{port}/lifecycle
  host: 127.0.0.1
  port: {port}
database: {{url: '{url}'}}
subscriptions:
  - name: channel-messages
    resource: teams/{{team}}/channels/{{channel}}/messages
    for_each: {{teams: all}}
    lifetime: 1d
    mirror:
      table: bench_channel_messages
      columns: [{{field: body.content, column: body, type: text}}, lastModifiedDateTime, messageType]
"""


def log(message: str) -> None:
    print(f"[bench/teams] {message}", file=sys.stderr, flush=True)


def graph_requests(emu: Emulator, since: int) -> tuple[int, int]:
    """(Graph requests logged after *since*, the last sequence number); token requests are not Graph's."""
    count, last = 0, since
    while True:
        entries = emu.admin("GET", f"requests?since={last}&limit=100000")["requests"]
        if not entries:
            return count, last
        count += sum(1 for e in entries if "/v1.0/" in e["path"] or "/beta/" in e["path"])
        last = max(e["seq"] for e in entries)


def seed(emu: Emulator, roots: int, replies: int) -> tuple[str, str, str]:
    """A fresh tenant with one busy channel: (team id, channel id, owner id)."""
    emu.admin("POST", "reset", json={})
    emu.admin("POST", "seed", json={"users": 5, "contentUsers": 1, "channelMessagesPerUser": roots,
                                    "channelRepliesPerMessage": replies})
    headers = {"Authorization": f"Bearer {emu.token()}"}
    teams = emu.session.get(f"{emu.info['graph_url']}/teams", headers=headers, timeout=60).json()["value"]
    (team,) = teams
    members = emu.session.get(f"{emu.info['graph_url']}/teams/{team['id']}/members", headers=headers, timeout=60)
    channels = emu.session.get(f"{emu.info['graph_url']}/teams/{team['id']}/channels", headers=headers, timeout=60)
    return str(team["id"]), str(channels.json()["value"][0]["id"]), str(members.json()["value"][0]["userId"])


def load(workdir: Path, emu: Emulator, database_url: str, port: int) -> Spec:
    path = workdir / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(SPEC.format(info=emu.info_file, port=port, url=database_url))
    return load_spec(path).resolve_emulator()


def initial(emu: Emulator, spec: Spec) -> dict[str, Any]:
    upgrade_core(spec.database_url)
    upgrade_mirror(spec)
    _, mark = graph_requests(emu, 0)
    started = time.perf_counter()
    (result,) = sync_once(spec)
    elapsed = time.perf_counter() - started
    if result.outcome != "ok":
        raise RuntimeError(f"pass failed: {result}")
    requests, _ = graph_requests(emu, mark)
    engine = database.create_engine(spec.database_url)
    try:
        with engine.connect() as connection:  # roots and their replies: each a row
            rows = connection.execute(sa.text("SELECT count(*) FROM bench_channel_messages")).scalar_one()
    finally:
        engine.dispose()
    return {"rows": rows, "delta_items": result.items, "pages": result.pages, "seconds": round(elapsed, 2),
            "rows_per_s": round(rows / elapsed), "graph_requests": requests}


def idle(engine: sa.Engine) -> bool:
    """No notification waiting, no scope dirty (as the demo judges it)."""
    s, i = schema.sync_state, schema.inbox
    with engine.connect() as connection:
        pending = connection.execute(
            sa.select(sa.func.count()).select_from(i).where(i.c.processed_at.is_(None))).scalar_one()
        dirty = connection.execute(sa.select(sa.func.count()).select_from(s).where(
            sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True)))).scalar_one()
    return pending == 0 and dirty == 0


def change(emu: Emulator, team: str, channel: str, owner: str, changes: int) -> None:
    """*changes* changes as users post: 40% new roots, 30% new replies, 20% edits, 10% soft deletes."""
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    headers = {"Authorization": f"Bearer {emu.token()}"}
    listed = emu.session.get(f"{emu.info['graph_url']}/{base}?$top=50&$expand=replies", headers=headers,
                             timeout=60).json()["value"]
    roots = [m for m in listed if m["messageType"] == "message" and m["replies"]]
    plan = ["root"] * (changes * 4 // 10) + ["reply"] * (changes * 3 // 10) + ["edit"] * (changes * 2 // 10)
    plan += ["delete"] * (changes - len(plan))
    for n, kind in enumerate(plan):
        root = roots[n % len(roots)]
        reply = root["replies"][n % len(root["replies"])]
        if kind == "root":
            emu.admin("POST", base, json={"from": owner, "body": {"content": f"new {n}"}})
        elif kind == "reply":
            emu.admin("POST", f"{base}/{root['id']}/replies", json={"from": owner, "body": {"content": f"re {n}"}})
        elif kind == "edit":
            target = f"{base}/{root['id']}" if n % 2 else f"{base}/{root['id']}/replies/{reply['id']}"
            emu.admin("PATCH", target, json={"body": {"contentType": "text", "content": f"edited {n}"}})
        else:
            target = f"{base}/{roots[-1 - n % len(roots)]['id']}" if n % 2 else f"{base}/{root['id']}/replies/{reply['id']}"
            emu.admin("DELETE", target)


def incremental(emu: Emulator, spec: Spec, where: tuple[str, str, str], changes: int, port: int) -> dict[str, Any]:
    runner = Runner(spec, port=port, schedule=Schedule(drain=0.3, safety_net=3600.0, reconcile=3600.0),
                    echo=lambda line: None)
    runner.start()
    graph = GraphClient.from_spec(spec, spec.tenants[0].name)
    clients = {spec.tenants[0].tenant_id: graph}
    try:
        assert runner.engine is not None
        deadline = time.monotonic() + 300
        while not idle(runner.engine):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker never became idle after start")
            time.sleep(0.2)
        time.sleep(1.0)  # the first passes of the started worker are done
        _, mark = graph_requests(emu, 0)
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        change(emu, *where, changes)
        changed = time.perf_counter() - started
        scopes = declared(spec, clients)
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mirror did not converge: {compare(runner.engine, clients, scopes)[:3]}")
            if idle(runner.engine):
                verified = time.perf_counter() - started
                _, before_verify = graph_requests(emu, mark)
                if not compare(runner.engine, clients, scopes):
                    break
            time.sleep(0.2)
        requests, _ = graph_requests(emu, mark)
        verify_requests, _ = graph_requests(emu, before_verify)
        # Converged when the last pass or fetch that the changes caused ended (the comparison's own time aside).
        runs = schema.sync_runs
        with runner.engine.connect() as connection:
            count, last = connection.execute(sa.select(sa.func.count(), sa.func.max(runs.c.finished_at))
                                             .where(runs.c.started_at >= started_at)).one()
            if os.environ.get("BENCH_TEAMS_RUNS"):  # each pass and fetch, to see where the time went
                for row in connection.execute(sa.select(runs).where(runs.c.started_at >= started_at)).mappings():
                    log(str({k: row[k] for k in ("started_at", "finished_at", "full_round", "pages", "upserted", "deleted")}))
        last = last if last.tzinfo else last.replace(tzinfo=UTC)  # SQLite gives naive UTC
        return {"changes": changes, "seconds_to_make": round(changed, 2),
                "seconds_to_converge": round((last - started_at).total_seconds(), 2),
                "seconds_to_verified": round(verified, 2), "passes_and_fetches": count,
                "graph_requests": requests - verify_requests}
    finally:
        graph.close()
        runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=2_500)
    parser.add_argument("--replies", type=int, default=3, help="replies per root")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("SYNCER_TEST_DATABASE_URL"))
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-teams-"))
    emu = Emulator(workdir)
    figures: dict[str, Any] = {"messages": args.roots * (1 + args.replies), "roots": args.roots,
                               "replies_per_root": args.replies}
    try:
        for kind in ("sqlite", "postgres"):
            if args.only and kind != args.only:
                continue
            if args.postgres is None and kind == "postgres":
                figures[kind] = "skipped: no --postgres / SYNCER_TEST_DATABASE_URL"
                continue
            runs: list[dict[str, Any]] = []
            for rep in range(args.repeat):
                log(f"{kind} {rep + 1}/{args.repeat}: seeding {figures['messages']} messages")
                where = seed(emu, args.roots, args.replies)
                database_url = fresh_database(kind, workdir, args.postgres)
                assert database_url is not None
                try:
                    port = free_port()
                    spec = load(workdir, emu, database_url, port)
                    log(f"{kind} {rep + 1}/{args.repeat}: initial pass")
                    first = initial(emu, spec)
                    log(f"{kind} {rep + 1}/{args.repeat}: {first}; {args.changes} changes")
                    later = incremental(emu, spec, where, args.changes, port)
                    log(f"{kind} {rep + 1}/{args.repeat}: {later}")
                    runs.append({"initial": first, "incremental": later})
                finally:
                    drop_database(database_url)
            figures[kind] = {
                "initial_rows": runs[0]["initial"]["rows"],
                "initial_seconds": median(r["initial"]["seconds"] for r in runs),
                "initial_rows_per_s": median(r["initial"]["rows_per_s"] for r in runs),
                "initial_graph_requests": median(r["initial"]["graph_requests"] for r in runs),
                "incremental_seconds_to_converge": median(r["incremental"]["seconds_to_converge"] for r in runs),
                "incremental_graph_requests": median(r["incremental"]["graph_requests"] for r in runs),
                "runs": runs,
            }
    finally:
        emu.stop()
    print(__import__("json").dumps(figures))


if __name__ == "__main__":
    main()
