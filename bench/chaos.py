"""The long chaos run: minutes of faults, SIGKILLs and a 30 s database outage, then time to converge.

    .venv/bin/python bench/chaos.py [--database postgresql|sqlite] [--seconds 120] [--outage 30]
                                    [--rate 5] [--kills 12] [--seed 11]

The machinery is tests/chaos_harness.py (the test suite runs a short version in tests/test_chaos.py):
`syncer serve` and `syncer worker` as subprocesses, SIGKILLed at --kills seeded moments and restarted;
30% of Graph reads answered 429 (Retry-After 1 s), 10% 5xx, 410s on delta calls; 15% of notifications
dropped and 15% duplicated; in the middle, the database disappears for --outage seconds (PostgreSQL:
the TCP proxy every syncer process goes through is cut; SQLite: an exclusive write lock), while the
changes keep coming. Then the faults stop. Unlike the test, nothing nudges the dropped notifications'
scopes: the spec's safety net (sync_interval 1m) must find them, so convergence takes up to a minute
after the faults stop. Nothing is restarted by hand after the outage: processes that died on their own
are counted as crashes.

The last line printed is one JSON object: changes made, notifications delivered / retried / dropped /
duplicated (the emulator's /_emulator/delivery counters), 503s answered during the outage, passes,
resyncs (full rounds after the initial ones), kills, crashes, time to converge, and whether every 2xx
was stored.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chaos_harness import Harness  # noqa: E402
from latency import database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of chaos (outage excluded)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds without a database")
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed to converge")
    args = parser.parse_args()

    url, cleanup = database(args.database, prefix="bench_chaos")
    workdir = Path(tempfile.mkdtemp(prefix="syncer-chaos-"))
    harness = Harness(url, workdir, seed=args.seed, echo=lambda line: print(line, file=sys.stderr))
    try:
        harness.start()
        took, differences = harness.converge(timeout=120)
        if differences:
            raise SystemExit(f"initial sync did not converge: {differences[:3]}")
        initial_full = harness.counts()["full_passes"]
        print(f"initial sync in {took:.1f}s; chaos for {args.seconds:.0f}s + a {args.outage:.0f}s outage",
              file=sys.stderr)
        started = time.monotonic()
        harness.faults_on(delta_resets=max(2, int(args.seconds // 10)))
        half = args.seconds / 2
        harness.changes_for(half, rate=args.rate, during=harness.killer(seconds=half, kills=args.kills // 2))
        harness.settle()
        seq = max([e["seq"] for e in harness.delivery()["log"]] or [0])
        assert harness.db is not None
        print(f"{time.monotonic() - started:5.1f}s database outage begins", file=sys.stderr)
        with harness.db.outage():
            harness.changes_for(args.outage, rate=args.rate)
        print(f"{time.monotonic() - started:5.1f}s database back", file=sys.stderr)
        outage_log = [e for e in harness.delivery()["log"] if e["seq"] > seq]
        harness.changes_for(half, rate=args.rate,
                            during=harness.killer(seconds=half, kills=args.kills - args.kills // 2))
        harness.faults_off()
        chaos_seconds = time.monotonic() - started
        # Only the processes the killer left down are restarted (as systemd would); converge() keeps
        # them running, and counts any that died on their own.
        took, differences = harness.converge(timeout=args.timeout)
        report = harness.delivery()
        counts = harness.counts()
        assert harness.receiver is not None and harness.worker is not None
        result = {
            "database": args.database,
            "converged": not differences,
            "differences": [str(d) for d in differences[:5]],
            "seconds_to_converge": round(took, 1),
            "chaos_seconds": round(chaos_seconds, 1),
            "outage_seconds": args.outage,
            "changes": sum(harness.changes.values()),
            "changes_by_kind": dict(harness.changes),
            "notifications": {k: report.get(k) for k in
                              ("delivered", "deliveredPosts", "attempts", "failedAttempts", "retried", "dropped",
                               "droppedBy", "duplicated")},
            "outage_responses": _statuses(outage_log),
            "unstored_2xx": len(harness.unstored_acks(report)),
            "inbox_rows": counts["inbox_rows"],
            "passes": counts["passes"],
            "passes_ok": counts["passes_ok"],
            "resyncs": counts["full_passes"] - initial_full,
            "kills": {"receiver": harness.receiver.kills, "worker": harness.worker.kills},
            "crashes": {"receiver": harness.receiver.crashes, "worker": harness.worker.crashes},
        }
        print(json.dumps(result))
    finally:
        harness.stop()
        cleanup()


def _statuses(log: list[dict[str, object]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in log:
        counts[str(entry.get("status"))] = counts.get(str(entry.get("status")), 0) + 1
    return counts


if __name__ == "__main__":
    main()
