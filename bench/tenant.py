"""Benchmark: a tenant of M mailboxes behind Graph-like latency, reconciled and mirrored by syncer.

    .venv/bin/python bench/tenant.py [--users 1000] [--large 10000] [--latency-ms 100] [--concurrency 16]
                                     [--rate 2000] [--skip-reconcile] [--skip-mirror] [--postgres URL]

The emulator runs in its own process (it must not share our GIL), seeded with M mailboxes of ~100
messages, ~50 events and ~20 contacts each, every Graph request delayed by ``--latency-ms`` (a
``latency`` fault rule), Outlook's 4 concurrent requests per app+mailbox on (the emulator's default)
and a per-app+tenant rate limit (``--rate`` requests per second; over it: 429 with Retry-After). The
spec declares mail, events and contacts ``for_each: {users: all}``.

Part 1, reconcile from empty (fresh process per M, so peak RSS is that run's): subscriptions created
(3·M), ``$batch`` envelopes (from the emulator's request log), elapsed, peak RSS; then a second
reconcile must be a no-op (list calls only, 0 writes). With ``--large`` the same at that M, and
time and RSS per subscription compared with M.

Part 2, the initial mirror of M mailboxes (a fresh database per run) by the worker's passes at
``--concurrency`` and 4x it: elapsed against the bound ``requests x latency / concurrency`` (requests
counted from the emulator's log: the least time any schedule holding that many requests in flight
can take), the ratio (target >= 0.75), the CPU share of this process and of the emulator's (2
cores = 200%), syncer's CPU milliseconds and SQL statements per pass (the bookkeeping of thousands of
small passes is what saturates the cores first), and the emulator's CPU per request.

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


def start_tenant(workdir: Path, users: int, latency_ms: float, rate: int) -> Emulator:
    emulator = Emulator(workdir)
    started = time.perf_counter()
    emulator.admin("POST", "seed", json={"users": users, "contentUsers": users, **SEED})
    log(f"seeded {users} mailboxes in {time.perf_counter() - started:.1f}s")
    if latency_ms:
        emulator.admin("POST", "faults", json={"type": "latency", "ms": latency_ms})
    if rate:
        emulator.admin("POST", "faults", json={"type": "rate", "limit": rate, "perSeconds": 1, "scope": "app+tenant"})
    return emulator


def write_spec(workdir: Path, emulator: Emulator, database_url: str, receiver_port: int) -> Path:
    path = workdir / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {emulator.info_file}}}\n"
        f"database: {{url: '{database_url}'}}\n"
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


def measure_reconcile(spec_path: Path, info_file: Path) -> dict[str, Any]:
    from syncer.database import create_engine
    from syncer.migrate import upgrade_core
    from syncer.reconcile import graphs_for, reconcile
    from syncer.spec import load_spec

    emulator_info = json.loads(info_file.read_text())
    admin = requests.Session()
    admin.trust_env = False
    admin.verify = emulator_info["ca_cert"]

    def log_since(seq: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = admin.get(f"{emulator_info['base_url']}/_emulator/requests",
                             params={"since": seq, "limit": 200_000}, timeout=600).json()["requests"]
            if not page:
                return out
            out.extend(e for e in page if "/v1.0/" in e["path"])
            seq = int(page[-1]["seq"])

    def last() -> int:
        entries = admin.get(f"{emulator_info['base_url']}/_emulator/requests", params={"limit": 1},
                            timeout=60).json()["requests"]
        return int(entries[-1]["seq"]) if entries else 0

    spec = load_spec(spec_path)
    upgrade_core(spec.database_url)
    engine = create_engine(spec.database_url)
    graphs = graphs_for(spec)
    runs: dict[str, Any] = {}
    for label in ("create", "noop"):
        seq = last()
        started = time.perf_counter()
        outcome = reconcile(spec, graphs=graphs, engine=engine)
        seconds = time.perf_counter() - started
        calls = log_since(seq)
        envelopes = [e for e in calls if not e.get("batch")]
        runs[label] = {
            "seconds": round(seconds, 2),
            "http_calls": len(envelopes),
            "batch_calls": sum(1 for e in envelopes if e["path"].split("?")[0].endswith("/$batch")),
            "writes": sum(1 for e in calls if e["method"] != "GET" and not e["path"].split("?")[0].endswith("/$batch")),
            "throttled": sum(1 for e in calls if e["status"] == 429),
            "counts": {k: v for k, v in outcome.plan.counts().items() if v},
            "failed": len(outcome.failed),
        }
        log(f"reconcile {label}: {runs[label]}")
    return {**runs, "peak_rss_mb": peak_rss_mb()}


def part1(workdir: Path, users: int, args: argparse.Namespace, receiver_port: int) -> dict[str, Any]:
    emulator = start_tenant(workdir, users, args.latency_ms, args.rate)
    try:
        spec = write_spec(workdir, emulator, fresh_database(workdir, None), receiver_port)
        result = child("measure-reconcile", [str(spec), str(emulator.info_file)])
    finally:
        emulator.stop()
    created = result["create"]
    subs = created["counts"].get("create", 0)
    return {
        "users": users,
        "subscriptions_created": subs,
        "expected": 3 * users,
        "batch_calls": created["batch_calls"],
        "batch_bound": -(-3 * users // 20),
        "seconds": created["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "ms_per_subscription": round(1000 * created["seconds"] / max(subs, 1), 3),
        "kb_per_subscription": round(1024 * result["peak_rss_mb"] / max(subs, 1), 2),
        "failed": created["failed"],
        "throttled": created["throttled"],
        "noop": result["noop"],
        "noop_zero_writes": result["noop"]["writes"] == 0 and result["noop"]["counts"] == {"keep": subs},
    }


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
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "passes": outcomes, "items": items,
            **per_pass, "peak_rss_mb": peak_rss_mb()}


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
        "cpu_share_syncer": round(result["cpu_seconds"] / result["seconds"], 2),
        "cpu_share_emulator": round(emu_cpu / result["seconds"], 2),
        "emulator_cpu_ms_per_request": round(1000 * emu_cpu / max(len(calls), 1), 2),
    }
    log(f"mirror at concurrency {concurrency}: {figures}")
    return figures


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--large", type=int, default=0, help="also reconcile this many mailboxes (e.g. 10000)")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=2000, help="per-app+tenant requests per second (0 = off)")
    parser.add_argument("--postgres", default=None, help="mirror into PostgreSQL (part 2) instead of SQLite")
    parser.add_argument("--skip-reconcile", action="store_true")
    parser.add_argument("--skip-mirror", action="store_true")
    parser.add_argument("--serve-emulator", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-reconcile", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--measure-mirror", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        return serve_emulator(args.serve_emulator, args.workdir)
    if args.measure_reconcile:
        print(json.dumps(measure_reconcile(Path(args.measure_reconcile[0]), Path(args.measure_reconcile[1]))))
        return
    if args.measure_mirror:
        print(json.dumps(measure_mirror(Path(args.measure_mirror[0]), int(args.measure_mirror[1]))))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from reconcile import QuietHandler, handshake_app  # bench/reconcile.py
    from werkzeug.serving import make_server

    receiver = make_server("127.0.0.1", 0, handshake_app, threaded=True, request_handler=QuietHandler)
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
    if not args.skip_mirror:
        emulator = start_tenant(workdir, args.users, args.latency_ms, args.rate)
        try:
            out["mirror"] = [part2(workdir, emulator, c, args, receiver.server_port)
                             for c in (args.concurrency, 4 * args.concurrency)]
        finally:
            emulator.stop()
    receiver.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
