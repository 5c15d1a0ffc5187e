"""Part 3 of bench/tenant.py: steady state at scale (issue 19), at --steady-scopes / 10 and --steady-scopes.

    .venv/bin/python bench/tenant.py --skip-reconcile --skip-mirror --steady-scopes 30000 [--steady-rate 200]
                                     [--steady-seconds 30] [--latency-ms 100] [--concurrency 16] [--postgres URL]

For each size, in a fresh process and a fresh database:

1. The emulator (its own process) is seeded with the users that make that many scopes (11 per mailbox with the
   spec of mail, events and contacts: a mailFolders container and its 7 folders, a calendarView, a contactFolders
   container and its folder), with one message, event and contact each. **The scopes' state rows are seeded
   directly** (:func:`seed_scopes`: the folders as each container's delta lists them over HTTP, every row clean and
   synced now, no deltaLink), so that a notified scope's first pass is a full round over HTTP against the emulator;
   with ``--steady-real-mirror`` every scope gets its first pass instead (`Worker.start_due`, latency off), which
   takes minutes per 1,000 scopes on a loaded machine.
2. **Subscriptions are recorded directly** (one row per mailbox and declaration, as reconcile would have stored
   them; Graph's side of them is not created: the bench makes the notifications).
3. Latency on (``--latency-ms``), then `syncer worker` runs as a subprocess, as in production. For
   ``--steady-seconds``, ``--steady-rate`` times a second the bench picks a scope at random among all of them,
   makes a change in its collection through Graph (a new message in that folder, a new event, a new contact: over
   HTTP, with latency) and **puts its notification in the inbox as the receiver does** (:meth:`syncer.inbox.Inbox.put`
   with the receiver's row shape; the receiver's own throughput is bench/receiver.py's). The worker is woken by the
   inbox (PostgreSQL NOTIFY, SQLite's data_version).
4. Freshness = the end of the pass (or read-by-id write) that wrote the new item's row - the notification's
   ``received_at``; p50/p99, and p50 per table. The worker's CPU per notification and per pass (``passes`` counts
   ``syncer_sync_runs`` rows: delta passes and the writes of items read by id), the worker's Graph reads per
   notification from the emulator's request log (delta pages vs reads by id: a message or contact of a whole mailbox
   is read by id into its folder, :mod:`syncer.worker.notified`; a new event marks calendarView dirty), the rate the
   worker drained them at (notifications / (generation + catch-up)), and its peak RSS per scope.
5. With the worker stopped, in this process: the safety-net tick (``Worker.safety_net``: seconds and SQL statements,
   median of 5; once more with every scope past its interval), ``syncer status`` (:func:`collect`, median of 3: the
   summary alone, and with every scope's detail), and the drain rate (20,000 notifications over every mailbox, ``Worker.drain(start=False)`` until
   the inbox is empty; each names its collection, so it marks scopes dirty: the rate of the marking path).

The ratios compare the large size with the small one (target: cost per scope within 1.2x).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from latency import epoch, pct  # bench/latency.py

ROOT = Path(__file__).resolve().parent.parent
SCOPES_PER_MAILBOX = 11
STEADY_SEED = {"messagesPerUser": 1, "eventsPerUser": 1, "contactsPerUser": 1}
DRAIN_ROWS = 20_000


def log(message: str) -> None:
    print(f"[bench/tenant steady] {message}", file=sys.stderr, flush=True)


class Admin:
    """The emulator's admin API, from its info file."""

    def __init__(self, info_file: Path) -> None:
        self.info = json.loads(info_file.read_text())
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = self.info["ca_cert"]

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.info['base_url']}/_emulator/{path}", timeout=600, **kw)
        r.raise_for_status()
        return r.json() if r.content else None


class StatementCounter:
    """SQL statements sent on *engine* while counting."""

    def __init__(self, engine: Any) -> None:
        import sqlalchemy as sa

        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def initial_mirror(spec: Any, engine: Any) -> dict[str, Any]:
    """Every scope's first round by the worker's own passes (latency off), until none is due."""
    from syncer.worker.scheduler import build_worker, clients_for

    clients = clients_for(spec, max_in_flight_per_tenant=32)
    worker = build_worker(spec, engine=engine, clients=clients, max_passes=32)
    worker.register_scopes()
    started = time.perf_counter()
    while True:
        worker.start_due()
        worker.wait()
        if not worker.due_scopes():
            break
    outcomes: dict[str, int] = {}
    for result in worker.results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    worker.close()
    return {"seconds": round(time.perf_counter() - started, 1), "passes": outcomes}


def seed_scopes(spec: Any, engine: Any) -> dict[str, Any]:
    """Every scope's state row written directly: the worker's static scopes, and the folders each container's delta
    lists in the emulator (read over HTTP, as the container's pass reads them), clean and synced now, with no
    deltaLink: the first pass of a notified scope is a full round over HTTP (its one or two items) instead of an
    incremental one. What reaching 30,000 scopes by 30,000 first passes would take is bench/tenant.py part 2's."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from syncer import schema
    from syncer.worker import scopestate
    from syncer.worker.scheduler import build_worker, clients_for
    from syncer.worker.scopes import child_scope

    clients = clients_for(spec, max_in_flight_per_tenant=32)
    started = time.perf_counter()
    worker = build_worker(spec, engine=engine, clients=clients, max_passes=1)

    def folders(container: Any) -> list[Any]:
        pages = clients[container.tenant_id].iter_pages(container.initial_url)
        return [child_scope(container, str(item["id"])) for page in pages for item in page.items
                if "@removed" not in item and "id" in item]

    found = list(worker.index.static.values())
    with ThreadPoolExecutor(max_workers=32) as pool:
        for children in pool.map(folders, worker.index.containers()):
            found += children
    worker.close()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for i in range(0, len(found), 5000):
            scopestate.ensure_scope_rows(connection, found[i:i + 5000], now=now)
        connection.execute(sa.update(schema.sync_state).values(last_success_at=now, listed_at=now))
    return {"seconds": round(time.perf_counter() - started, 1), "seeded": len(found)}


def scope_rows(engine: Any) -> list[tuple[str, str, str, str]]:
    """``(tenant_id, scope_key, parent_key, name)`` of every scope but the containers (they hold no items)."""
    import sqlalchemy as sa

    from syncer import schema

    s = schema.sync_state
    with engine.connect() as connection:
        rows = connection.execute(sa.select(s.c.tenant_id, s.c.scope_key, s.c.parent_key, s.c.name)).all()
    return [tuple(r) for r in rows if not r[1].endswith(("/mailFolders", "/contactFolders"))]  # type: ignore[misc]


def record_subscriptions(engine: Any, parents: list[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """One subscription row per (tenant, parent, name), as reconcile stores it; parent -> subscription id."""
    import sqlalchemy as sa

    from syncer import schema

    now = datetime.now(UTC)
    ids = {(t, p): f"bench-{uuid.uuid4().hex}" for t, p, _ in parents}
    rows = [
        dict(subscription_id=ids[(t, p)], tenant_id=t, name=n, scope_key=p, resource=p,
             change_type="created,updated,deleted", notification_url="https://example.test/n", client_state="x",
             include_resource_data=False, expires_at=now + timedelta(days=2), created_at=now, updated_at=now,
             status="active")
        for t, p, n in parents
    ]
    with engine.begin() as connection:
        for i in range(0, len(rows), 5000):
            connection.execute(sa.insert(schema.subscriptions), rows[i:i + 5000])
    return ids


def change_and_notify(graph: Any, inbox: Any, sub_ids: dict[tuple[str, str], str], scope: tuple[str, str, str, str],
                      n: int) -> tuple[str, str]:
    """A new item in *scope*'s collection through Graph, and its notification in the inbox; (table, item id)."""
    from syncer.inbox import NewItem

    tenant_id, key, parent, name = scope
    user = parent.split("/")[1]
    if name == "mail":  # users/{u}/mailFolders/{folder}/messages
        folder = key.split("/")[3]
        body = {"subject": f"steady {n}", "body": {"contentType": "text", "content": "x"}}
        item = graph.request("POST", f"users/{user}/mailFolders/{folder}/messages", json=body).json()["id"]
        resource, table = f"Users/{user}/Messages/{item}", "messages"
    elif name == "events":
        start = datetime.now(UTC) + timedelta(days=1)
        body = {"subject": f"steady {n}",
                "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}
        item = graph.request("POST", f"users/{user}/events", json=body).json()["id"]
        resource, table = f"Users/{user}/Events/{item}", "events"
    else:
        body = {"givenName": f"steady {n}", "surname": "x"}
        item = graph.request("POST", f"users/{user}/contacts", json=body).json()["id"]
        resource, table = f"Users/{user}/Contacts/{item}", "contacts"
    # The basic notification Graph sends (https://learn.microsoft.com/en-us/graph/outlook-change-notifications-overview):
    # the item's path and resourceData with its type and id, no content.
    odata_type = {"messages": "#Microsoft.Graph.Message", "events": "#Microsoft.Graph.Event",
                  "contacts": "#Microsoft.Graph.Contact"}[table]
    inbox.put([NewItem(tenant_id=tenant_id, subscription_id=sub_ids[(tenant_id, parent)], kind="change",
                       event="created", resource=resource, resource_id=item, dedupe_key=uuid.uuid4().hex,
                       payload={"subscriptionId": sub_ids[(tenant_id, parent)], "changeType": "created",
                                "resource": resource,
                                "resourceData": {"@odata.type": odata_type, "@odata.id": resource, "id": item}})])
    return table, item


def generate(graph: Any, inbox: Any, sub_ids: dict[tuple[str, str], str], scopes: list[tuple[str, str, str, str]],
             *, rate: float, seconds: float) -> tuple[list[tuple[str, str]], float]:
    """``rate`` changes a second for ``seconds``, each in a scope picked at random; what was made, and how long."""
    rng = random.Random(7)
    made: list[tuple[str, str]] = []
    lock = threading.Lock()
    failures = [0]

    def one(n: int, scope: tuple[str, str, str, str]) -> None:
        try:
            found = change_and_notify(graph, inbox, sub_ids, scope, n)
        except Exception as error:  # counted and reported: a change that failed has no freshness
            with lock:
                failures[0] += 1
                if failures[0] <= 3:
                    log(f"change {n} failed: {error}")
            return
        with lock:
            made.append(found)

    total = int(rate * seconds)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="change") as pool:
        for n in range(total):
            pool.submit(one, n, rng.choice(scopes))
            delay = started + (n + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    if failures[0]:
        log(f"{failures[0]} changes failed")
    return made, time.monotonic() - started


def wait_quiet(engine: Any, timeout: float) -> float:
    """Until the inbox is empty and no scope is due (the worker caught up); seconds waited."""
    import sqlalchemy as sa

    from syncer import schema
    from syncer.inbox import Inbox

    s = schema.sync_state
    inbox = Inbox(engine)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as connection:
            dirty = connection.execute(
                sa.select(sa.func.count()).select_from(s).where(
                    sa.or_(s.c.dirty_since.is_not(None), s.c.page_link.is_not(None), s.c.resync_requested.is_(True)))
            ).scalar_one()
        if dirty == 0 and inbox.depth() == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def freshness(engine: Any, spec: Any, made: list[tuple[str, str]]) -> dict[str, Any]:
    """received_at of each notification -> the end of the pass that wrote its item's row."""
    import sqlalchemy as sa

    from syncer import mirror, schema

    tables = {sub.mirror.table: mirror.build_table(sub.mirror) for sub in spec.subscriptions}
    received: dict[str, float] = {}
    with engine.connect() as connection:
        for rid, at in connection.execute(sa.select(schema.inbox.c.resource_id, schema.inbox.c.received_at)):
            received[str(rid)] = epoch(at)
        visible: dict[str, float] = {}
        by_table: dict[str, list[str]] = {}
        for table, item in made:
            by_table.setdefault(table, []).append(item)
        runs = schema.sync_runs
        for table, items in by_table.items():
            t = tables[table]
            for i in range(0, len(items), 500):
                for item, finished in connection.execute(
                    sa.select(t.c.id, runs.c.finished_at).join(runs, runs.c.id == t.c._sync_run_id)
                    .where(t.c.id.in_(items[i:i + 500]), runs.c.finished_at.is_not(None))
                ):
                    visible[item] = epoch(finished)
    lags = [visible[i] - received[i] for _, i in made if i in visible and i in received]
    by_table = {table: pct([visible[i] - received[i] for t, i in made if t == table and i in visible and i in received],
                           0.5) for table in sorted({t for t, _ in made})}
    return {"n": len(lags), "not_visible": len(made) - len(lags), "p50_s": pct(lags, 0.5), "p99_s": pct(lags, 0.99),
            "max_s": round(max(lags), 3) if lags else None, "p50_s_by_table": by_table}


def graph_requests(admin: Admin, since: int) -> dict[str, int]:
    """The worker's Graph reads since request log entry *since*, by kind (the bench's own changes are POSTs), and
    the HTTP requests that carried them: a ``$batch`` envelope is one request of up to 20 reads."""
    log = admin("GET", "requests", params={"since": since, "limit": 10_000_000})["requests"]
    reads = [e for e in log if e["method"] == "GET" and "/v1.0/" in e["path"]]
    delta = sum("/delta" in e["path"] for e in reads)
    enveloped = sum(bool(e.get("batch")) for e in reads)
    envelopes = sum(e["method"] == "POST" and e["path"].endswith("/$batch") for e in log)
    return {"total": len(reads), "delta": delta, "by_id": len(reads) - delta, "in_envelopes": enveloped,
            "envelopes": envelopes, "requests": len(reads) - enveloped + envelopes}


def log_seq(admin: Admin) -> int:
    log = admin("GET", "requests", params={"limit": 1})["requests"]
    return int(log[-1]["seq"]) if log else 0


def pass_count(engine: Any) -> int:
    import sqlalchemy as sa

    from syncer import schema

    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(schema.sync_runs)).scalar_one())


def run_worker_process(spec_path: Path, concurrency: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logfile = (workdir / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "syncer", "worker", "--spec", str(spec_path), "--concurrency", str(concurrency),
         "--startup-wait", "0"],
        cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT, env=env,
    )


def tick_cost(engine: Any, spec: Any) -> dict[str, Any]:
    """The safety net's tick as the scheduler runs it: seconds and statements, quiet and with every scope stale."""
    import sqlalchemy as sa

    from syncer import schema
    from syncer.worker.scheduler import build_worker

    worker = build_worker(spec, engine=engine, max_passes=1)
    counter = StatementCounter(engine)
    worker.safety_net()  # the first run re-expands the declarations (hourly afterwards): not a tick's cost
    times, statements = [], []
    for _ in range(5):
        counter.count = 0
        started = time.perf_counter()
        worker.safety_net()
        times.append(time.perf_counter() - started)
        statements.append(counter.count)
    s = schema.sync_state
    with engine.begin() as connection:  # every scope past its interval (an hour): what a long outage leaves
        connection.execute(sa.update(s).values(last_success_at=datetime.now(UTC) - timedelta(hours=2)))
    counter.count = 0
    started = time.perf_counter()
    marked = worker.safety_net()
    stale_seconds = time.perf_counter() - started
    worker.close()
    return {"quiet_ms": round(1000 * statistics.median(times), 2), "quiet_statements": statistics.median(statements),
            "all_stale_ms": round(1000 * stale_seconds, 1), "all_stale_statements": counter.count,
            "all_stale_marked": marked}


def status_cost(engine: Any, spec: Any) -> dict[str, Any]:
    """``syncer status`` without arguments (the summary, grouped queries) and with details (every scope)."""
    from syncer.status import collect

    intervals = {sub.name: sub.sync_interval for sub in spec.subscriptions}
    out: dict[str, Any] = {}
    for label, detail in (("summary_ms", False), ("detail_ms", True)):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            found = collect(engine, count_rows=False, intervals=intervals, detail=detail)
            times.append(time.perf_counter() - started)
        out[label] = round(1000 * statistics.median(times), 1)
    out["scopes"] = sum(d.scopes for d in found.declarations or [])
    return out


def drain_rate(engine: Any, spec: Any, sub_ids: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Notifications over every mailbox put in the inbox, drained into dirty scopes without passes: rows/s."""
    from syncer.inbox import Inbox, NewItem
    from syncer.worker.scheduler import build_worker

    worker = build_worker(spec, engine=engine, max_passes=1)
    inbox = Inbox(engine)
    parents = sorted(sub_ids)
    rates = []
    for round_ in range(3):
        rows = []
        for j in range(DRAIN_ROWS):
            tenant_id, parent = parents[(j * 7919) % len(parents)]
            # The collection, not an item: each row marks its scopes dirty (an item of a whole mailbox would be read
            # by id, which the passes' rate measured above already counts).
            rows.append(NewItem(tenant_id=tenant_id, subscription_id=sub_ids[(tenant_id, parent)], kind="change",
                                event="updated", resource=parent, resource_id=None,
                                dedupe_key=uuid.uuid4().hex, payload={"resource": parent, "n": f"d{round_}-{j}"}))
        for i in range(0, len(rows), 1000):
            inbox.put(rows[i:i + 1000])
        started = time.perf_counter()
        drained = 0
        while True:
            result = worker.drain(start=False)
            drained += result.claimed
            if result.claimed == 0:
                break
        rates.append(drained / (time.perf_counter() - started))
    worker.close()
    return {"rows_per_s": round(statistics.median(rates)), "rounds": [round(r) for r in rates]}


def measure_steady(spec_path: Path, info_file: Path, latency_ms: float, rate: float, seconds: float,
                   concurrency: int, real_mirror: bool = False) -> dict[str, Any]:
    """One size, in this fresh process (see the module docstring)."""
    from syncer import mirror
    from syncer.database import create_engine
    from syncer.inbox import Inbox
    from syncer.migrate import upgrade_core
    from syncer.spec import load_spec
    from syncer.worker.scheduler import clients_for, tune_process

    tune_process()
    admin = Admin(info_file)
    spec = load_spec(spec_path).resolve_emulator()
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    engine = create_engine(spec.database_url, pool_size=20, max_overflow=20)
    first = initial_mirror(spec, engine) if real_mirror else seed_scopes(spec, engine)
    scopes = scope_rows(engine)
    parents = sorted({(t, p, n) for t, _, p, n in scopes})
    sub_ids = record_subscriptions(engine, parents)
    with engine.connect() as connection:
        import sqlalchemy as sa

        from syncer import schema

        total_scopes = connection.execute(sa.select(sa.func.count()).select_from(schema.sync_state)).scalar_one()
    log(f"{total_scopes} scopes {'mirrored' if real_mirror else 'seeded'}: {first}")
    if latency_ms:
        admin("POST", "faults", json={"type": "latency", "ms": latency_ms})
    worker = run_worker_process(spec_path, concurrency, spec_path.parent)
    try:
        time.sleep(3)
        waited = wait_quiet(engine, 300)  # the worker's start: expanding the declarations, its first safety net
        log(f"worker quiet after {waited:.1f}s")
        graph = clients_for(spec, max_in_flight_per_tenant=64)[spec.tenants[0].tenant_id]
        inbox = Inbox(engine)
        cpu0, runs0, seq0 = proc_cpu(worker.pid), pass_count(engine), log_seq(admin)
        rejected0 = admin("GET", "faults")["mailboxRejections"]
        made, took = generate(graph, inbox, sub_ids, scopes, rate=rate, seconds=seconds)
        caught_up = wait_quiet(engine, 900)
        cpu, passes = proc_cpu(worker.pid) - cpu0, pass_count(engine) - runs0
        requests = graph_requests(admin, seq0)
        # Requests (batch items included) the emulator answered 429 for a fifth in flight to one mailbox. The bench's
        # own changes count too: this process writes them to the same mailboxes as the same app, beside the worker.
        rejected = admin("GET", "faults")["mailboxRejections"] - rejected0
        rss = proc_peak_rss_mb(worker.pid)
        log(f"{len(made)} changes in {took:.1f}s; worker caught up {caught_up:.1f}s later")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
    admin("DELETE", "faults")
    fresh = freshness(engine, spec, made)
    log(f"freshness {fresh}")
    result = {
        "scopes": total_scopes,
        "mailboxes": len({p for _, p, n in parents if n == "mail"}),
        "initial_mirror": first,
        "notifications": len(made),
        "rate_achieved": round(len(made) / took, 1),
        "caught_up_after_s": round(caught_up, 1),
        "freshness": fresh,
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_ms_per_notification": round(1000 * cpu / max(len(made), 1), 2),
        "passes": passes,
        "passes_per_notification": round(passes / max(len(made), 1), 2),
        "graph_reads": requests,
        "mailbox_rejections": rejected,
        "graph_reads_per_notification": round(requests["total"] / max(len(made), 1), 2),
        "graph_requests_per_notification": round(requests["requests"] / max(len(made), 1), 2),
        "drain_rate_during_s": round(len(made) / max(took + caught_up, 1e-9), 1),
        "worker_cpu_ms_per_pass": round(1000 * cpu / max(passes, 1), 2),
        "worker_peak_rss_mb": rss,
        "worker_rss_kb_per_scope": round(1024 * rss / total_scopes, 2),
    }
    result["safety_net_tick"] = tick_cost(engine, spec)
    log(f"tick {result['safety_net_tick']}")
    result["status"] = status_cost(engine, spec)
    log(f"status {result['status']}")
    result["drain"] = drain_rate(engine, spec, sub_ids)
    log(f"drain {result['drain']}")
    engine.dispose()
    return result


def ratios(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """large / small of each cost per scope (or per notification): the target is <= 1.2."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    per_scope = lambda r, v: v / r["scopes"]  # noqa: E731
    return {
        "worker_cpu_per_pass": ratio(large["worker_cpu_ms_per_pass"], small["worker_cpu_ms_per_pass"]),
        "worker_rss_per_scope": ratio(large["worker_rss_kb_per_scope"], small["worker_rss_kb_per_scope"]),
        "status_summary_per_scope": ratio(per_scope(large, large["status"]["summary_ms"]),
                                          per_scope(small, small["status"]["summary_ms"])),
        "status_detail_per_scope": ratio(per_scope(large, large["status"]["detail_ms"]),
                                         per_scope(small, small["status"]["detail_ms"])),
        "tick_quiet": ratio(large["safety_net_tick"]["quiet_ms"], small["safety_net_tick"]["quiet_ms"]),
        "drain_time_per_row": ratio(small["drain"]["rows_per_s"], large["drain"]["rows_per_s"]),
        "freshness_p50": ratio(large["freshness"]["p50_s"], small["freshness"]["p50_s"]),
        "freshness_p99": ratio(large["freshness"]["p99_s"], small["freshness"]["p99_s"]),
    }
