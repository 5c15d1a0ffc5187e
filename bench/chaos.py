"""Chaos scenarios, one fault at a time, then the long run: what each cost in notifications and time.

    .venv/bin/python bench/chaos.py [--scenarios all|partition,readonly,...] [--seconds 15] [--rate 4]
                                    [--timeout 150] [--nudge] [--database postgresql|sqlite] [--seed 11]
                                    [--long-seconds 120] [--outage 30] [--kills 12]

Every scenario runs on one harness (tests/chaos_harness.py: `syncer serve` and `syncer worker` as
subprocesses, the emulator delivering real notifications for the harness's change stream), in the
order given; tests/chaos_scenarios.py describes each: partition, readonly, slowdb, clock, poison,
deltalink, hostile, two; and ``long``, the original long run: --long-seconds of SIGKILLs (--kills),
30% 429 / 10% 5xx on Graph reads, 410s on delta calls, 15% of notifications dropped and 15%
duplicated, and in the middle a --outage seconds database outage. ``all`` is every scenario, long last.

For each scenario: the fault starts, changes flow at --rate per second for --seconds, the fault ends,
and the bench measures 2xx answered (change items the receiver answered 2xx, from the emulator's
delivery log), rows stored (inbox rows added; a duplicate is stored once), lost (answered 2xx but not
in the inbox: must be 0) and recovery seconds (from the fault's end until the mirror equals the
emulator, syncer.verify; "never" if not within --timeout). Without --nudge a notification that Graph
gave up on is made good by the spec's safety net (sync_interval 1m), so recovery can take a minute.

PostgreSQL (the default) runs in a database of its own on $SYNCER_TEST_DATABASE_URL's server
(``readonly`` alters the whole database), dropped at the end. Its URL carries --io-timeout as
``syncer_io_timeout`` (default 20 s): the harness's proxy runs in user space, so the local kernel
acknowledges every byte and the 20 s ``tcp_user_timeout`` that notices a real partition never fires;
syncer's own I/O bound (75 s by default) stands in for it. On SQLite the scenarios that need the
PostgreSQL proxy or server (partition, readonly, slowdb) report an error instead of figures.

A table row is printed as each scenario ends; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chaos_database import dedicated_database  # noqa: E402
from chaos_scenario_harness import ScenarioHarness  # noqa: E402
from chaos_scenarios import HEADER, SCENARIOS, Outcome, run  # noqa: E402

from syncer.database import normalize_url  # noqa: E402

ALL = [*SCENARIOS, "long"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="all", help=f"all, or a comma list of: {', '.join(ALL)}")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of changes while each fault lasts")
    parser.add_argument("--rate", type=float, default=4.0, help="changes per second")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds allowed to recover, per scenario")
    parser.add_argument("--nudge", action="store_true", help="one change per scope after each fault")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--io-timeout", type=float, default=20.0,
                        help="syncer_io_timeout for syncer's processes (PostgreSQL; 0: syncer's default)")
    parser.add_argument("--long-seconds", type=float, default=120.0, help="long: seconds of chaos (outage excluded)")
    parser.add_argument("--outage", type=float, default=30.0, help="long: seconds without a database")
    parser.add_argument("--kills", type=int, default=12, help="long: SIGKILLs")
    args = parser.parse_args()
    names = ALL if args.scenarios == "all" else [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(ALL)}")

    workdir = Path(tempfile.mkdtemp(prefix="syncer-chaos-"))
    outcomes: list[Outcome] = []
    with _database(args.database, io_timeout=args.io_timeout or None) as (url, admin_url):
        harness = ScenarioHarness(url, workdir, seed=args.seed, admin_url=admin_url,
                                  echo=lambda line: print(line, file=sys.stderr))
        try:
            harness.start()
            took, differences = harness.converge(timeout=120)
            if differences:
                raise SystemExit(f"initial sync did not converge: {differences[:3]}")
            print(f"initial sync in {took:.1f}s; scenarios: {', '.join(names)}", file=sys.stderr)
            print(HEADER, flush=True)
            for name in names:
                print(f"--- {name}", file=sys.stderr, flush=True)
                if name == "long":
                    outcome = long_run(harness, args)
                else:
                    outcome = run(harness, SCENARIOS[name](), seconds=args.seconds, rate=args.rate,
                                  timeout=args.timeout, nudge=args.nudge)
                outcomes.append(outcome)
                print(outcome.row() + (f"   ({outcome.error})" if outcome.error else ""), flush=True)
        finally:
            harness.stop()
    print(json.dumps({
        "database": args.database,
        "seconds_per_scenario": args.seconds,
        "rate": args.rate,
        "nudge": args.nudge,
        "io_timeout": args.io_timeout,
        "lost_total": sum(o.lost for o in outcomes),
        "all_converged": all(o.recovery is not None for o in outcomes),
        "scenarios": {o.name: o.as_json() for o in outcomes},
    }))


@contextlib.contextmanager
def _database(kind: str, *, io_timeout: float | None) -> Iterator[tuple[str, str]]:
    """(url, admin url): a PostgreSQL database of its own, or a fresh SQLite file."""
    if kind == "sqlite":
        yield f"sqlite:///{tempfile.mkdtemp(prefix='syncer-chaos-db-')}/syncer.db", ""
        return
    base = normalize_url(
        os.environ.get("SYNCER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    with dedicated_database(base, prefix="bench_chaos", io_timeout=io_timeout) as url:
        yield url, base


def long_run(harness: ScenarioHarness, args: argparse.Namespace) -> Outcome:
    """The original long run: faults, SIGKILLs and an outage in the middle, then the time to converge.

    Unlike the test, nothing nudges the dropped notifications' scopes: the spec's safety net
    (sync_interval 1m) must find them. Nothing is restarted by hand after the outage: processes that
    died on their own are counted as crashes."""
    assert harness.db is not None and harness.receiver is not None and harness.worker is not None
    seq, inbox_id = harness.last_seq(), harness.last_inbox_id()
    changes, full_before = sum(harness.changes.values()), harness.counts()["full_passes"]
    crashes = {p.name: len(p.crashes) for p in harness.processes()}
    harness.faults_on(delta_resets=max(2, int(args.long_seconds // 10)))
    half = args.long_seconds / 2
    harness.changes_for(half, rate=args.rate, during=harness.killer(seconds=half, kills=args.kills // 2))
    harness.settle()
    outage_seq = harness.last_seq()
    print(f"database outage ({args.outage:.0f}s) begins", file=sys.stderr)
    with harness.db.outage():
        harness.changes_for(args.outage, rate=args.rate)
    print("database back", file=sys.stderr)
    outage_log = [e for e in harness.delivery()["log"] if e["seq"] > outage_seq]
    harness.changes_for(half, rate=args.rate, during=harness.killer(seconds=half, kills=args.kills - args.kills // 2))
    harness.faults_off()
    ended = time.monotonic()
    _, differences = harness.converge(timeout=max(args.timeout, 300.0))
    recovery = None if differences else time.monotonic() - ended
    report = harness.delivery()
    log = [e for e in report["log"] if e["seq"] > seq]
    answered = sum(1 for e in log if isinstance(e.get("status"), int) and 200 <= e["status"] < 300
                   for i in (e.get("body") or {}).get("value", []) if "changeType" in i)
    counts = harness.counts()
    notes: dict[str, Any] = {
        "notifications": {k: report.get(k) for k in ("delivered", "deliveredPosts", "attempts", "failedAttempts",
                                                     "retried", "dropped", "droppedBy", "duplicated")},
        "outage_responses": dict(Counter(str(e.get("status")) for e in outage_log)),
        "passes": counts["passes"], "passes_ok": counts["passes_ok"],
        "resyncs": counts["full_passes"] - full_before,
        "kills": {"receiver": harness.receiver.kills, "worker": harness.worker.kills},
    }
    return Outcome(
        "long", answered, harness.inbox_rows_after(inbox_id), len(harness.unstored_acks({"log": log})), recovery,
        sum(harness.changes.values()) - changes, dict(Counter(str(e.get("status", e.get("outcome"))) for e in log)),
        [str(d) for d in differences], {p.name: p.crashes[crashes.get(p.name, 0):] for p in harness.processes()
                                        if p.crashes[crashes.get(p.name, 0):]}, notes,
    )


if __name__ == "__main__":
    main()
