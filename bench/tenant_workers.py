"""bench/tenant.py part 4: the initial mirror of part 2 by 1 and by N worker processes sharing one PostgreSQL database.

    .venv/bin/python bench/tenant.py --users 200 --skip-reconcile --skip-mirror --workers 2 --postgres URL

Each worker is its own process (its own GIL, its own request budget of ``--concurrency``, as ``syncer worker``
runs), built by :func:`syncer.worker.scheduler.build_worker` and driven by its drain job every half second (the
default ``--drain-interval``), which starts the due scopes; container passes start the folders they find. The
scopes are registered first; every worker is started, then all are told to go at once, and each stops when no
scope is due anywhere (dirty, resync-requested or mid-round, whoever holds it). Reported per run:

- elapsed from the go to the last worker's end, and the speed-up of N workers over 1 (same tenant, same latency);
- the bound ``requests x latency / in-flight limit`` with the limit N x ``--concurrency``;
- **no double work**: passes recorded in ``syncer_sync_runs`` per scope (``max_ok_per_scope`` must be 1; total
  ``ok`` = scopes), by outcome; and apart, the attempts that cost one lease transaction and no Graph request,
  recorded nowhere (``busy``: another worker holds the scope; ``clean``: another pass cleaned it since this
  one was queued; ``postponed``: its back-off lies ahead), and the queued passes a later reading of the due
  scopes withdrew before they started (``withdrawn_before_start``: no cost but that reading);
- how the passes split between the workers, and the CPU share of the workers together and of the emulator (2
  cores = 200%).

Progress goes to stderr; tenant.py prints the figures in its JSON line (``several_workers``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
DRAIN_INTERVAL = 0.5
"""``syncer worker --drain-interval``'s default: how often the drain job starts due scopes when not woken."""


def anything_due(engine: Engine) -> bool:
    """Whether a scope still asks for a pass, whoever holds it (a worker's own reading skips scopes leased elsewhere)."""
    import sqlalchemy as sa

    from syncer import schema

    s = schema.sync_state
    with engine.connect() as connection:
        return bool(connection.execute(
            sa.select(sa.literal(1)).select_from(s)
            .where(sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True), s.c.page_link.is_not(None)))
            .limit(1)
        ).first())


def pass_counts(engine: Engine) -> dict[str, Any]:
    """Passes recorded per scope: each scope's ``ok`` runs (1 each in an initial mirror) and all runs by outcome."""
    import sqlalchemy as sa

    from syncer import schema

    r, s = schema.sync_runs, schema.sync_state
    with engine.connect() as connection:
        scopes = int(connection.execute(sa.select(sa.func.count()).select_from(s)).scalar_one())
        rows = connection.execute(
            sa.select(r.c.scope_key, r.c.outcome, sa.func.count()).group_by(r.c.scope_key, r.c.outcome)
        ).all()
    ok = Counter({key: n for key, outcome, n in rows if outcome == "ok"})
    outcomes: Counter[str] = Counter()
    for _key, outcome, n in rows:
        outcomes[outcome] += n
    return {
        "scopes": scopes,
        "runs": dict(outcomes),
        "ok_runs": sum(ok.values()),
        "max_ok_per_scope": max(ok.values(), default=0),
        "scopes_passed_twice": sum(1 for n in ok.values() if n > 1),
        "scopes_not_passed": scopes - len(ok),
    }


# --- one worker process -------------------------------------------------------------------------------


def run_worker(spec_path: Path, concurrency: int, worker_id: str) -> dict[str, Any]:
    """The child: build a worker as ``syncer worker`` does, say ready, wait for the go, drain until nothing is due."""
    import resource

    from syncer.database import create_engine
    from syncer.spec import load_spec
    from syncer.worker.scheduler import build_worker, clients_for, passes_for, tune_process

    tune_process()
    spec = load_spec(spec_path)
    passes = passes_for(concurrency)
    engine = create_engine(spec.database_url, pool_size=min(passes, 20), max_overflow=10)
    clients = clients_for(spec, max_in_flight_per_tenant=concurrency)
    worker = build_worker(spec, engine=engine, clients=clients, worker_id=worker_id, max_passes=passes)
    print("ready", flush=True)
    sys.stdin.readline()

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu0, started = cpu(), time.time()
    drains = 0
    while anything_due(engine):
        worker.drain()
        drains += 1
        time.sleep(DRAIN_INTERVAL)
    worker.wait()
    ended, used = time.time(), cpu() - cpu0
    outcomes = Counter(r.outcome for r in worker.results)
    worker.close()
    return {"worker": worker_id, "started": started, "ended": ended, "cpu_seconds": round(used, 2),
            "passes": dict(outcomes), "items": sum(r.items for r in worker.results), "drains": drains,
            "withdrawn": worker.withdrawn}


# --- the parent ----------------------------------------------------------------------------------------


def prepare(spec_path: Path) -> None:
    """Tables and scope rows (every declared scope dirty), before any worker starts."""
    from syncer import mirror
    from syncer.database import create_engine
    from syncer.migrate import upgrade_core
    from syncer.spec import load_spec
    from syncer.worker.scheduler import build_worker

    spec = load_spec(spec_path)
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    engine = create_engine(spec.database_url)
    build_worker(spec, engine=engine).register_scopes()
    engine.dispose()


def mirror_with(workers: int, spec_path: Path, concurrency: int) -> dict[str, Any]:
    """Run *workers* worker processes on *spec_path*'s database until the mirror is complete; their figures."""
    subprocess.run([sys.executable, __file__, "--prepare", str(spec_path)], cwd=ROOT, check=True)
    children = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path), str(concurrency), f"w{n + 1}"],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in range(workers)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker process did not start")
    go = time.time()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"a worker process failed ({child.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return {"go": go, "workers": reports}


def part4(workdir: Path, emulator: Any, args: Any, receiver_port: int) -> dict[str, Any]:
    """1 worker, then ``args.workers``, each on a fresh PostgreSQL database over the same seeded tenant."""
    from tenant import fresh_database, log, write_spec  # bench/tenant.py

    from syncer.database import create_engine

    if not args.postgres:
        raise SystemExit("--workers needs --postgres URL: several workers share a PostgreSQL database (SQLite runs one)")
    runs = []
    for workers in (1, args.workers):
        url = fresh_database(workdir, args.postgres)
        spec = write_spec(workdir, emulator, url, receiver_port)
        seq, emu_cpu0 = emulator.last_seq(), emulator.cpu_seconds()
        done = mirror_with(workers, spec, args.concurrency)
        elapsed = max(w["ended"] for w in done["workers"]) - done["go"]
        emu_cpu = emulator.cpu_seconds() - emu_cpu0
        calls = emulator.requests_since(seq)
        engine = create_engine(url)
        counts = pass_counts(engine)
        engine.dispose()
        attempts: Counter[str] = Counter()
        for w in done["workers"]:
            attempts.update(w["passes"])
        in_flight = workers * args.concurrency
        bound = len(calls) * args.latency_ms / 1000 / in_flight
        figures = {
            "workers": workers,
            "seconds": round(elapsed, 2),
            **counts,
            "no_double_work": counts["max_ok_per_scope"] == 1 and counts["scopes_not_passed"] == 0,
            "attempts_without_a_run": {k: v for k, v in attempts.items() if k in ("busy", "clean", "postponed")},
            "withdrawn_before_start": sum(w["withdrawn"] for w in done["workers"]),
            "ok_passes_per_worker": [w["passes"].get("ok", 0) for w in done["workers"]],
            "items": sum(w["items"] for w in done["workers"]),
            "requests": len(calls),
            "throttled": sum(1 for e in calls if e["status"] == 429),
            "in_flight_limit": in_flight,
            "bound_seconds": round(bound, 2),
            "of_bound": round(bound / elapsed, 3) if elapsed else None,
            "cpu_share_workers": round(sum(w["cpu_seconds"] for w in done["workers"]) / elapsed, 2),
            "cpu_share_emulator": round(emu_cpu / elapsed, 2),
        }
        log(f"mirror by {workers} worker(s): {figures}")
        runs.append(figures)
    return {"runs": runs, "speed_up": round(runs[0]["seconds"] / runs[1]["seconds"], 2) if runs[1]["seconds"] else None}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1] == "--prepare":
        prepare(Path(sys.argv[2]))
    elif sys.argv[1] == "--worker":
        print(json.dumps(run_worker(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
    else:
        raise SystemExit(__doc__)
