"""Benchmark: a tenant of M mailboxes behind Graph-like latency, reconciled and mirrored by syncer.

    .venv/bin/python bench/tenant.py [--users 1000] [--large 10000] [--latency-ms 100] [--concurrency 16]
                                     [--rate 2000] [--skip-reconcile] [--skip-mirror] [--postgres URL]
                                     [--steady-scopes 30000 [--steady-rate 200] [--steady-seconds 30]]
                                     [--workers 2]

The emulator runs in its own process (it must not share our GIL), seeded with M mailboxes of ~100
messages, ~50 events and ~20 contacts each, every Graph request delayed by ``--latency-ms`` (a
``latency`` fault rule), Outlook's 4 concurrent requests per app+mailbox on (the emulator's default)
and a per-app+tenant rate limit (``--rate`` requests per second; over it: 429 with Retry-After). The
spec declares mail, events and contacts ``for_each: {users: all}``.

Part 1, reconcile from empty (fresh process per M, so peak RSS is that run's; the mailboxes are seeded
without content, which reconcile never reads): subscriptions created (3·M), ``$batch`` envelopes (from
the emulator's request log), elapsed, the RSS it added; then a second reconcile must be a no-op (list
calls only, 0 writes); then the emulator's clock (and the clock reconcile is given) moves to 30 minutes
before the subscriptions expire, so every one is due, and a third reconcile renews them all: PATCH items,
envelopes, elapsed, and every subscription's new expiry checked. With ``--large`` the same at that M,
and time and RSS per subscription (RSS added by the reconcile over the process's own) compared with M:
their ratio is the target (<= 1.2: cost linear in the tenant). ``--concurrency`` is the spec's
``defaults.concurrency``: reconcile sends a quarter of it as envelopes at once.

Part 2, the initial mirror of M mailboxes (a fresh database per run) by the worker's passes at
``--concurrency`` and 4x it: elapsed against the bound ``requests x latency / concurrency`` (requests
counted from the emulator's log: the least time any schedule holding that many requests in flight
can take), the ratio (target >= 0.75), the CPU share of this process and of the emulator's (2
cores = 200%), syncer's CPU milliseconds and SQL statements per pass (the bookkeeping of thousands of
small passes is what saturates the cores first), the emulator's CPU per request, and the passes recorded
per scope (each scope passed once: ``max_ok_per_scope`` 1). ``of_cpu_or_latency_bound`` sets elapsed against the
larger of that bound and syncer's CPU seconds (its GIL runs them one at a time): where the CPU is the larger, the
cores, not the schedule, are what is missing.

Part 4 (``--workers N``, PostgreSQL): part 2's mirror by 1 and by N worker processes, its speed-up, and no
double work across workers (:mod:`bench.tenant_workers`).

Part 3, steady state at scale (``--steady-scopes N``: at N / 10 and N scopes, each in a fresh process and
database): freshness p50/p99 under ``--steady-rate`` notifications a second spread over every scope, the
safety-net tick, the ``syncer status`` summary and the drain rate, and their ratios. How, and what is seeded
directly rather than through Graph: bench/steady.py.

Progress goes to stderr; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = {"messagesPerUser": 100, "eventsPerUser": 50, "contactsPerUser": 20}
SPEC_TAIL = """
subscriptions:
  - name: mail
    resource: users/{user}/messages
    change_types: [created, updated, deleted]
    for_each: {users: all}
    mirror: {table: messages, columns: [subject, isRead]}
  - name: events
    resource: users/{user}/events
    change_types: [created, updated, deleted]
    for_each: {users: all}
    mirror: {table: events, columns: [subject]}
  - name: contacts
    resource: users/{user}/contacts
    change_types: [created, updated, deleted]
    for_each: {users: all}
    mirror: {table: contacts, columns: [givenName, surname]}
"""


def log(message: str) -> None:
    print(f"[bench/tenant] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the emulator, in a child process ----------------------------------------------------------------


def serve_emulator(info_file: Path, workdir: Path) -> None:
    """The child: an emulator whose request log holds a whole run."""
    from syncer.emulator import EmulatorConfig, EmulatorServer

    server = EmulatorServer(EmulatorConfig(seed=7, request_log_size=3_000_000), workdir=workdir)
    server.start()
    server.write_info(info_file)
    while True:
        time.sleep(3600)


class Emulator:
    def __init__(self, workdir: Path) -> None:
        run = time.monotonic_ns()
        info_file = workdir / f"emulator-{run}.json"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-emulator", str(info_file), "--workdir", str(workdir / f"emu-{run}")],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not info_file.exists() or not info_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.1)
        self.info_file = info_file
        self.info: dict[str, Any] = json.loads(info_file.read_text())
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = self.info["ca_cert"]

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.info['base_url']}/_emulator/{path}", timeout=3600, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def last_seq(self) -> int:
        entries = self.admin("GET", "requests", params={"limit": 1})["requests"]
        return int(entries[-1]["seq"]) if entries else 0

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.admin("GET", "requests", params={"since": seq, "limit": 200_000})["requests"]
            if not page:
                return out
            out.extend(e for e in page if "/v1.0/" in e["path"])
            seq = int(page[-1]["seq"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_tenant(workdir: Path, users: int, latency_ms: float, rate: int,
                 content: dict[str, int] | None = SEED) -> Emulator:
    """Seed *users* mailboxes; with *content* None, users without mail, events or contacts (reconcile only)."""
    emulator = Emulator(workdir)
    started = time.perf_counter()
    seed = {"users": users, "contentUsers": users, **content} if content else {"users": users, "contentUsers": 0}
    emulator.admin("POST", "seed", json=seed)
    log(f"seeded {users} mailboxes in {time.perf_counter() - started:.1f}s")
    if latency_ms:
        emulator.admin("POST", "faults", json={"type": "latency", "ms": latency_ms})
    if rate:
        emulator.admin("POST", "faults", json={"type": "rate", "limit": rate, "perSeconds": 1, "scope": "app+tenant"})
    return emulator


def write_spec(workdir: Path, emulator: Emulator, database_url: str, receiver_port: int,
               concurrency: int = 16) -> Path:
    path = workdir / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {emulator.info_file}}}\n"
        f"database: {{url: '{database_url}'}}\n"
        f"defaults: {{concurrency: {concurrency}}}\n"
        f"receiver:\n  notification_url: 'http://127.0.0.1:{receiver_port}/notifications'\n"
        f"  lifecycle_url: 'http://127.0.0.1:{receiver_port}/lifecycle'\n" + SPEC_TAIL
    )
    return path


def fresh_database(workdir: Path, postgres: str | None) -> str:
    if postgres:
        sys.path.insert(0, str(ROOT / "bench"))
        from sync import fresh_database as fresh_pg  # bench/sync.py

        return str(fresh_pg("postgres", workdir, postgres))
    return f"sqlite:///{workdir / f'mirror-{time.monotonic_ns()}.db'}"


def child(mode: str, args: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh process (its own peak RSS); its last stdout line is JSON."""
    done = subprocess.run([sys.executable, __file__, f"--{mode}", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- part 1: reconcile --------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident set now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_reconcile(spec_path: Path, info_file: Path, emulator_pid: int) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from syncer.database import create_engine
    from syncer.migrate import upgrade_core
    from syncer.reconcile import graphs_for, reconcile
    from syncer.spec import load_spec

    emulator_info = json.loads(info_file.read_text())
    admin = requests.Session()
    admin.trust_env = False
    admin.verify = emulator_info["ca_cert"]
    base = f"{emulator_info['base_url']}/_emulator"

    def log_since(seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = admin.get(f"{base}/requests", params={"since": seq, "limit": 200_000}, timeout=600).json()["requests"]
            if not page:
                return out
            out.extend(e for e in page if "/v1.0/" in e["path"])
            seq = int(page[-1]["seq"])

    def last() -> int:
        entries = admin.get(f"{base}/requests", params={"limit": 1}, timeout=60).json()["requests"]
        return int(entries[-1]["seq"]) if entries else 0

    spec = load_spec(spec_path)
    upgrade_core(spec.database_url)
    engine = create_engine(spec.database_url)
    graphs = graphs_for(spec)
    offset = timedelta(0)  # how far the emulator's clock was moved: reconcile's clock moves with it

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    rss_before = rss_mb()
    runs: dict[str, Any] = {}
    soonest = datetime.now(UTC)
    for label in ("create", "noop", "renew"):
        if label == "renew":
            # Every subscription 30 minutes from its expiry: inside any renew_before (at most 1 h).
            offset = soonest - timedelta(minutes=30) - datetime.now(UTC)
            admin.post(f"{base}/clock", json={"advance": offset.total_seconds()}, timeout=60).raise_for_status()
        seq = last()
        cpu0, emu0, started = cpu_seconds(), process_cpu_seconds(emulator_pid), time.perf_counter()
        outcome = reconcile(spec, graphs=graphs, engine=engine, clock=clock)
        seconds = time.perf_counter() - started
        cpu, emu_cpu = cpu_seconds() - cpu0, process_cpu_seconds(emulator_pid) - emu0
        calls = log_since(seq)
        envelopes = [e for e in calls if not e.get("batch")]
        runs[label] = {
            "seconds": round(seconds, 2),
            # CPU is what a loaded machine does not inflate much: syncer's reconcile, and the emulator serving it.
            "cpu_syncer_s": round(cpu, 2),
            "cpu_emulator_s": round(emu_cpu, 2),
            "load_avg": round(os.getloadavg()[0], 1),
            "http_calls": len(envelopes),
            "batch_calls": sum(1 for e in envelopes if e["path"].split("?")[0].endswith("/$batch")),
            "writes": sum(1 for e in calls if e["method"] != "GET" and not e["path"].split("?")[0].endswith("/$batch")),
            "patch_items": sum(1 for e in calls if e["method"] == "PATCH" and e.get("batch")),
            "throttled": sum(1 for e in calls if e["status"] == 429),
            "counts": {k: v for k, v in outcome.plan.counts().items() if v},
            "failed": len(outcome.failed),
        }
        if label == "create":
            runs[label]["rss_added_mb"] = round(peak_rss_mb() - rss_before, 1)
            soonest = min(r.expires_at for r in outcome.results if r.expires_at is not None)
        if label == "renew":
            wanted = clock() + timedelta(hours=1)
            renewed = [r for r in outcome.results if r.ok and r.expires_at is not None and r.expires_at > wanted]
            runs[label]["renewed"] = len(renewed)
            # What Graph now says, not what reconcile believed: every subscription live past the renewal window.
            after = list(graphs[next(iter(graphs))].subscriptions.iter())
            runs[label]["live_after"] = len(after)
            runs[label]["all_renewed"] = all(sub.expiration > wanted for sub in after) and len(renewed) == len(after)
        log(f"reconcile {label}: {runs[label]}")
    return {**runs, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": round(rss_before, 1)}


def part1(workdir: Path, users: int, args: argparse.Namespace, receiver_port: int) -> dict[str, Any]:
    emulator = start_tenant(workdir, users, args.latency_ms, args.rate, content=None)
    try:
        spec = write_spec(workdir, emulator, fresh_database(workdir, args.postgres), receiver_port, args.concurrency)
        result = child("measure-reconcile", [str(spec), str(emulator.info_file), str(emulator.process.pid)])
    finally:
        emulator.stop()
    created = result["create"]
    subs = created["counts"].get("create", 0)
    renew = result["renew"]
    figures = {
        "users": users,
        "subscriptions_created": subs,
        "expected": 3 * users,
        "batch_calls": created["batch_calls"],
        "batch_bound": -(-3 * users // 20),
        "seconds": created["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_added_mb": created["rss_added_mb"],
        "ms_per_subscription": round(1000 * created["seconds"] / max(subs, 1), 3),
        "cpu_ms_per_subscription_syncer": round(1000 * created["cpu_syncer_s"] / max(subs, 1), 3),
        "cpu_ms_per_subscription_emulator": round(1000 * created["cpu_emulator_s"] / max(subs, 1), 3),
        "load_avg": created["load_avg"],
        "kb_per_subscription": round(1024 * created["rss_added_mb"] / max(subs, 1), 2),
        "failed": created["failed"],
        "throttled": created["throttled"],
        "noop": result["noop"],
        "noop_zero_writes": result["noop"]["writes"] == 0 and result["noop"]["counts"] == {"keep": subs},
        "renew": {k: renew[k] for k in ("seconds", "cpu_syncer_s", "cpu_emulator_s", "batch_calls", "patch_items",
                                        "renewed", "live_after", "all_renewed", "failed", "throttled", "counts")},
    }
    log(f"part 1 at {users} mailboxes: {json.dumps(figures)}")
    return figures


# --- part 2: the initial mirror -----------------------------------------------------------------------


def measure_mirror(spec_path: Path, concurrency: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from syncer import mirror
    from syncer.database import create_engine
    from syncer.migrate import upgrade_core
    from syncer.spec import load_spec
    from syncer.worker.scheduler import build_worker, clients_for, passes_for, tune_process

    tune_process()
    spec = load_spec(spec_path)
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    # As `syncer worker --concurrency N` builds it (syncer.worker.scheduler.run_worker).
    passes = passes_for(concurrency)
    engine = create_engine(spec.database_url, pool_size=min(passes, 20), max_overflow=10)
    clients = clients_for(spec, max_in_flight_per_tenant=concurrency)
    worker = build_worker(spec, engine=engine, clients=clients, max_passes=passes)
    worker.register_scopes()
    # Statements SQLAlchemy sends (PostgreSQL's COPY goes by the driver's cursor and is not counted).
    statements = itertools.count()  # next() is atomic: the pass threads count without a lock
    sa.event.listen(engine, "before_cursor_execute", lambda *_a: next(statements))
    cpu0, started = cpu_seconds(), time.perf_counter()
    while True:
        worker.start_due()
        worker.wait()
        if not worker.due_scopes():
            break
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    outcomes: dict[str, int] = {}
    items = 0
    for result in worker.results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        items += result.items
    count = max(len(worker.results), 1)
    per_pass = {"cpu_ms_per_pass": round(1000 * cpu / count, 2), "statements_per_pass": round(next(statements) / count, 2)}
    worker.close()
    from tenant_workers import pass_counts  # bench/tenant_workers.py

    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "passes": outcomes, "items": items,
            **per_pass, "peak_rss_mb": peak_rss_mb(), "recorded": pass_counts(engine)}


def part2(workdir: Path, emulator: Emulator, concurrency: int, args: argparse.Namespace,
          receiver_port: int) -> dict[str, Any]:
    spec = write_spec(workdir, emulator, fresh_database(workdir, args.postgres), receiver_port)
    seq = emulator.last_seq()
    emu_cpu0 = emulator.cpu_seconds()
    result = child("measure-mirror", [str(spec), str(concurrency)])
    emu_cpu = emulator.cpu_seconds() - emu_cpu0
    calls = emulator.requests_since(seq)
    served = [e for e in calls if e["status"] != 429]
    bound = len(calls) * args.latency_ms / 1000 / concurrency
    figures = {
        "concurrency": concurrency,
        **result,
        "requests": len(calls),
        "throttled": len(calls) - len(served),
        "bound_seconds": round(bound, 2),
        "of_bound": round(bound / result["seconds"], 3) if result["seconds"] else None,
        # Where the process's own CPU, not the requests in flight, sets the pace: its Python runs one thread at a
        # time (the GIL), so its CPU seconds are about the least time it can take. When they exceed the latency
        # bound, the cores are what is missing, not scheduling: of_cpu_or_latency_bound says how close it came.
        "gil_bound_seconds": round(result["cpu_seconds"], 2),
        "of_cpu_or_latency_bound": round(max(bound, result["cpu_seconds"]) / result["seconds"], 3)
        if result["seconds"] else None,
        "cpu_share_syncer": round(result["cpu_seconds"] / result["seconds"], 2),
        "cpu_share_emulator": round(emu_cpu / result["seconds"], 2),
        "emulator_cpu_ms_per_request": round(1000 * emu_cpu / max(len(calls), 1), 2),
    }
    log(f"mirror at concurrency {concurrency}: {figures}")
    return figures


# --- part 3: steady state at scale -------------------------------------------------------------------


def part3(workdir: Path, args: argparse.Namespace, receiver_port: int) -> dict[str, Any]:
    from steady import SCOPES_PER_MAILBOX, STEADY_SEED, ratios  # bench/steady.py

    sizes: dict[str, Any] = {}
    for label, scopes in (("small", args.steady_scopes // 10), ("large", args.steady_scopes)):
        users = -(-scopes // SCOPES_PER_MAILBOX)
        emulator = start_tenant(workdir, users, 0, 0, content=STEADY_SEED)  # latency on after the initial mirror
        try:
            spec = write_spec(workdir, emulator, fresh_database(workdir, args.postgres), receiver_port)
            sizes[label] = child("measure-steady", [str(spec), str(emulator.info_file), str(args.latency_ms),
                                                    str(args.steady_rate), str(args.steady_seconds),
                                                    str(args.concurrency),
                                                    "real" if args.steady_real_mirror else "seed"])
        finally:
            emulator.stop()
        log(f"steady state at {scopes} scopes: {sizes[label]}")
    return {**sizes, "large_over_small": ratios(sizes["small"], sizes["large"])}


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--large", type=int, default=0, help="also reconcile this many mailboxes (e.g. 10000)")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=2000, help="per-app+tenant requests per second (0 = off)")
    parser.add_argument("--postgres", default=None, help="use PostgreSQL (this server URL) instead of SQLite")
    parser.add_argument("--skip-reconcile", action="store_true")
    parser.add_argument("--skip-mirror", action="store_true")
    parser.add_argument("--steady-scopes", type=int, default=0,
                        help="part 3: steady state at this many scopes and a tenth of it (e.g. 30000)")
    parser.add_argument("--steady-rate", type=float, default=200.0, help="part 3: notifications per second")
    parser.add_argument("--steady-seconds", type=float, default=30.0, help="part 3: how long notifications come")
    parser.add_argument("--steady-real-mirror", action="store_true",
                        help="part 3: give every scope its first pass instead of seeding its state row")
    parser.add_argument("--measure-steady", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help="part 4: the mirror by 1 and by N worker processes")
    parser.add_argument("--serve-emulator", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-reconcile", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--measure-mirror", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        return serve_emulator(args.serve_emulator, args.workdir)
    if args.measure_reconcile:
        spec_arg, info_arg, pid_arg = args.measure_reconcile
        print(json.dumps(measure_reconcile(Path(spec_arg), Path(info_arg), int(pid_arg))))
        return
    if args.measure_steady:
        sys.path.insert(0, str(ROOT / "bench"))
        from steady import measure_steady  # bench/steady.py

        spec_file, info, latency, rate, seconds, concurrency, real = args.measure_steady
        print(json.dumps(measure_steady(Path(spec_file), Path(info), float(latency), float(rate), float(seconds),
                                        int(concurrency), real_mirror=real == "real")))
        return
    if args.measure_mirror:
        print(json.dumps(measure_mirror(Path(args.measure_mirror[0]), int(args.measure_mirror[1]))))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from reconcile import QuietHandler, handshake_app  # bench/reconcile.py
    from werkzeug.serving import make_server

    class KeepAlive(QuietHandler):
        protocol_version = "HTTP/1.1"  # the emulator's handshakes reuse their connections, as a real receiver allows

    receiver = make_server("127.0.0.1", 0, handshake_app, threaded=True, request_handler=KeepAlive)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-tenant-"))
    out: dict[str, Any] = {"bench": "tenant", "users": args.users, "latency_ms": args.latency_ms,
                           "rate_per_s": args.rate, "cpus": os.cpu_count()}
    if not args.skip_reconcile:
        small = part1(workdir, args.users, args, receiver.server_port)
        out["reconcile"] = {"small": small}
        if args.large:
            large = part1(workdir, args.large, args, receiver.server_port)
            out["reconcile"]["large"] = large
            out["reconcile"]["time_per_sub_ratio"] = round(large["ms_per_subscription"] / small["ms_per_subscription"], 2)
            out["reconcile"]["rss_per_sub_ratio"] = round(large["kb_per_subscription"] / small["kb_per_subscription"], 2)
            out["reconcile"]["cpu_per_sub_ratio_syncer"] = round(
                large["cpu_ms_per_subscription_syncer"] / small["cpu_ms_per_subscription_syncer"], 2)
            out["reconcile"]["cpu_per_sub_ratio_emulator"] = round(
                large["cpu_ms_per_subscription_emulator"] / small["cpu_ms_per_subscription_emulator"], 2)
            log(f"ratios: { {k: v for k, v in out['reconcile'].items() if k.endswith(('ratio', 'syncer', 'emulator'))} }")
    if not args.skip_mirror or args.workers:
        emulator = start_tenant(workdir, args.users, args.latency_ms, args.rate)
        try:
            if not args.skip_mirror:
                out["mirror"] = [part2(workdir, emulator, c, args, receiver.server_port)
                                 for c in (args.concurrency, 4 * args.concurrency)]
            if args.workers:
                from tenant_workers import part4  # bench/tenant_workers.py

                out["several_workers"] = part4(workdir, emulator, args, receiver.server_port)
        finally:
            emulator.stop()
    if args.steady_scopes:
        out["steady"] = part3(workdir, args, receiver.server_port)
    receiver.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
