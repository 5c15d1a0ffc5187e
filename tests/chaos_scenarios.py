"""Chaos scenarios: one fault at a time while real notifications flow, and what it cost.

Each :class:`Scenario` starts a fault, lets the harness's change stream run through the emulator's
Graph write API while it lasts (so the emulator delivers real notifications to ``syncer serve``), ends
the fault, then measures (:func:`run`):

- **2xx answered**: change items in POSTs the receiver answered 2xx (the emulator's delivery log);
- **rows stored**: inbox rows added meanwhile (duplicates are stored once, so fewer is normal; in
  ``hostile`` more: its replayed valid items are stored again once the first copy was processed);
- **lost**: items answered 2xx that are not in the inbox (must be 0);
- **recovery**: seconds from the fault's end until :func:`syncer.verify.compare` finds no difference
  between the mirror and the emulator (None: not within the timeout).

The scenarios (``SCENARIOS``, in the order ``--scenarios all`` runs them):

``partition``  the database stops answering without closing anything (packets dropped: a silent network
               partition); after it, the connections opened before stay silent (stale pooled
               connections) — TcpProxy.blackhole(new_connections=True), restore();
``readonly``   the primary turns read-only (a failover demoted it): ``default_transaction_read_only``
               on the database, its sessions terminated; at the end writes are allowed again for *new*
               sessions only, as on the promoted primary (a pooled session stays read-only);
``slowdb``     the database answers, slowly (TcpProxy.slow: 200 ms more per round trip);
``clock``      Graph's clock jumps an hour ahead (token times, subscription expiry) and back; the
               worker's clock jumps 10 minutes ahead and back, while a second worker runs 10 minutes
               behind (leases and claims judged by two clocks 20 minutes apart);
``poison``     items with U+0000, 100 kB strings and wrong JSON types (written into the emulator's store
               directly: Graph's write API refuses wrong types);
``deltalink``  the stored deltaLinks are overwritten (empty, not a URL, a bogus token, truncated) while
               the worker runs;
``hostile``    threads POST floods of random subscription ids, slow and short bodies, and mixed batches
               (a replayed valid item among forged ones) straight to the receiver;
``two``        two receivers behind the notification URL (connections alternate) and two workers.

The receiver's own clock is not skewed: it reads the time only to stamp ``received_at``; the token times
it checks are Graph's, which ``clock`` moves.

The harness is tests/chaos_harness.py (tests/chaos_scenario_harness.py: what the scenarios add to it); the
scenarios live by fault family in tests/chaos_faults_database.py (partition, readonly, slowdb),
tests/chaos_faults_processes.py (clock, two) and tests/chaos_faults_inputs.py (poison, deltalink, hostile).
tests/test_chaos.py runs every scenario briefly, bench/chaos.py longer (``--scenarios``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos_faults_database import Partition, ReadOnlyPrimary, SlowDatabase
from chaos_faults_inputs import CorruptDeltaLink, Hostile, Poison
from chaos_faults_processes import ClockJump, TwoOfEach
from chaos_scenario_harness import Scenario, ScenarioHarness

SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "partition": Partition,
    "readonly": ReadOnlyPrimary,
    "slowdb": SlowDatabase,
    "clock": ClockJump,
    "poison": Poison,
    "deltalink": CorruptDeltaLink,
    "hostile": Hostile,
    "two": TwoOfEach,
}


# --- running one -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario cost."""

    name: str
    answered: int  # change items answered 2xx by the receiver
    stored: int  # inbox rows added
    lost: int  # answered 2xx, not in the inbox
    recovery: float | None  # seconds from the fault's end to mirror == Graph; None: not converged
    changes: int
    statuses: dict[str, int]
    differences: list[str] = field(default_factory=list)
    crashes: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the scenario could not run (e.g. a fault the harness does not have yet)

    def row(self) -> str:
        recovery = f"{self.recovery:.1f}" if self.recovery is not None else "never"
        return f"{self.name:<10} {self.answered:>12} {self.stored:>11} {self.lost:>5} {recovery:>11}"

    def as_json(self) -> dict[str, Any]:
        return {
            "answered_2xx": self.answered, "rows_stored": self.stored, "lost": self.lost,
            "recovery_seconds": None if self.recovery is None else round(self.recovery, 1),
            "converged": self.recovery is not None, "changes": self.changes, "responses": self.statuses,
            "differences": self.differences[:5], "crashes": self.crashes, **self.notes,
            **({"error": self.error} if self.error else {}),
        }


HEADER = f"{'scenario':<10} {'2xx answered':>12} {'rows stored':>11} {'lost':>5} {'recovery s':>11}"


def run(h: ScenarioHarness, scenario: Scenario, *, seconds: float, rate: float, timeout: float,
        nudge: bool = False) -> Outcome:
    """Run *scenario* on the started harness *h*: fault, changes while it lasts, end, measure.

    *nudge*: after the fault, one change in every scope (a notification for each), so that a
    notification Graph gave up on is made good by the next one's pass rather than by the spec's
    safety net a minute later (the test suite's choice; the bench measures without)."""
    h.settle(min_uptime=1.0)
    seq, inbox_id, changes = h.last_seq(), h.last_inbox_id(), sum(h.changes.values())
    crashes_before = {p.name: len(p.crashes) for p in h.processes()}
    error = None
    try:
        scenario.start(h)
        try:
            h.changes_for(seconds, rate=rate, during=lambda elapsed: scenario.during(h, elapsed))
        finally:
            scenario.end(h)
    except Exception as exc:  # reported with the figures; the next scenario still runs
        error = f"{type(exc).__name__}: {exc}"
    ended = time.monotonic()
    recovery: float | None = None
    differences: list[str] = []
    try:
        if nudge:
            h.touch_every_scope()
        _, found = h.converge(timeout=timeout)
        differences = [str(d) for d in found]
        recovery = None if found else time.monotonic() - ended
        report = h.delivery()
        log = [e for e in report["log"] if e["seq"] > seq]
        answered = sum(
            1 for e in log if isinstance(e.get("status"), int) and 200 <= e["status"] < 300
            for i in (e.get("body") or {}).get("value", []) if "changeType" in i
        )
        lost = len(h.unstored_acks({"log": log}))
        notes = scenario.notes()
        if isinstance(scenario, Hostile):
            notes["forged_stored"] = scenario.forged_stored(h)
        statuses = Counter(str(e.get("status", e.get("outcome"))) for e in log)
        crashes = {p.name: p.crashes[crashes_before.get(p.name, 0):] for p in h.processes()
                   if p.crashes[crashes_before.get(p.name, 0):]}
        return Outcome(scenario.name, answered, h.inbox_rows_after(inbox_id), lost, recovery,
                       sum(h.changes.values()) - changes, dict(statuses), differences, crashes, notes, error)
    finally:
        scenario.cleanup(h)
        if recovery is None:
            h.reset()
            h.converge(timeout=timeout)
