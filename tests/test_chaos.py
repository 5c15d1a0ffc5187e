"""Chaos convergence: whatever breaks while changes flow, once the faults stop the mirror equals Graph.

`syncer serve` and `syncer worker` run as subprocesses and are SIGKILLed at seeded moments, Graph
answers 30% of reads with 429 (Retry-After 1 s) and 10% with 5xx and expires delta tokens, 15% of
the notifications are dropped and 15% duplicated, and the database goes away for a few seconds
(PostgreSQL: a TCP proxy between syncer and the server is cut; SQLite: another process holds the write
lock). Then every mirror table must equal a fresh enumeration from the emulator (deletes included),
and the emulator's delivery log must show no 2xx for a notification the inbox does not hold.
The machinery is in tests/chaos_harness.py; bench/chaos.py is the long version.

Then one test per scenario of tests/chaos_scenarios.py (silent partition, read-only primary, slow
database, clock jumps, poison data, corrupt deltaLinks, hostile clients, two receivers and two workers),
on PostgreSQL, all on one harness: each asserts that no 2xx was lost and that the mirror equals the
emulator again after the fault, and prints its figures.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from chaos_database import TcpProxy, dedicated_database
from chaos_faults_inputs import Hostile
from chaos_harness import WORKER_ID, Harness
from chaos_scenario_harness import ScenarioHarness
from chaos_scenarios import HEADER, SCENARIOS, run
from conftest import PG_SKIP, postgres_base_url

from syncer import schema

pytestmark = pytest.mark.timeout(110)

CHAOS_SECONDS = 12.0
OUTAGE_SECONDS = 4.0
OUTAGE_MAX_SECONDS = 20.0


def _refused_since(harness: Harness, seq: int, report: dict[str, Any] | None = None) -> bool:
    """Whether the emulator's delivery log shows a 503 from the receiver after entry *seq*."""
    log = (report or harness.delivery())["log"]
    return any(e["seq"] > seq and e.get("status") == 503 for e in log)


def test_chaos_converges(database_url: str, tmp_path: Path) -> None:
    lines: list[str] = []
    harness = Harness(database_url, tmp_path / "chaos", seed=8, echo=lines.append)
    try:
        harness.start()
        took, differences = harness.converge(timeout=30)
        assert not differences, "initial sync: " + "; ".join(map(str, differences))

        harness.faults_on(delta_resets=4)
        harness.changes_for(CHAOS_SECONDS, rate=6.0, during=harness.killer(seconds=CHAOS_SECONDS, kills=4))
        harness.settle()
        # The database goes away while changes keep coming: the receiver must refuse, not pretend.
        before_outage = harness.delivery()["log"]
        after_seq = before_outage[-1]["seq"] if before_outage else 0
        with harness.db.outage():  # type: ignore[union-attr]
            harness.changes_for(OUTAGE_SECONDS, rate=4.0)
            # The emulator may be holding deliveries back (a killed receiver made the endpoint "slow",
            # or a retry is backing off): keep the database away, and changes coming, until a POST
            # has actually met the outage, so that the 503 check below is about the receiver.
            deadline = time.monotonic() + OUTAGE_MAX_SECONDS
            while not _refused_since(harness, after_seq) and time.monotonic() < deadline:
                harness.changes_for(1.0, rate=4.0)
            time.sleep(0.5)
        harness.changes_for(2.0, rate=6.0)
        harness.faults_off()
        # Dropped notifications: the next notification of the same scope brings their changes too
        # (a pass syncs from the deltaLink); the spec's safety net would, after sync_interval >= 1m.
        harness.touch_every_scope()

        took, differences = harness.converge(timeout=45)
        report = harness.delivery()
        outputs = harness.receiver.output() + harness.worker.output()  # type: ignore[union-attr]
        assert not differences, (
            f"not converged after {took:.0f}s: " + "; ".join(map(str, differences)) + "\n" + "\n".join(lines) + outputs
        )
        assert harness.receiver.kills + harness.worker.kills >= 3, lines  # type: ignore[union-attr]
        # Nothing died of its own: the outage and the faults were survived, not restarted away.
        assert harness.receiver.crashes == [] and harness.worker.crashes == [], outputs  # type: ignore[union-attr]
        assert sum(harness.changes.values()) >= 40, harness.changes

        # Every 2xx stands for a committed inbox row; the outage was answered with refusals.
        assert harness.unstored_acks(report) == []
        assert _refused_since(harness, after_seq, report), "the receiver never answered 503 while the database was away"
        # Notification faults really happened, and the notification path carried changes.
        counters = report  # the counters are top-level keys
        assert counters.get("dropped", 0) > 0 and counters.get("duplicated", 0) > 0, counters
        counts = harness.counts()
        assert counts["inbox_rows"] > 0
        print(f"chaos {database_url.split(':')[0]}: converged in {took:.1f}s;", *lines, dict(harness.changes),
              counts, {k: counters.get(k) for k in ("delivered", "retried", "dropped", "duplicated")}, sep="\n  ")
    finally:
        harness.stop()


def test_worker_restarted_under_its_id_resumes_at_once(database_url: str, tmp_path: Path) -> None:
    """What a SIGKILL mid-pass leaves (a scope lease, claimed inbox rows, the SQLite worker lock) is
    taken back by the next process under the same --worker-id, not after the 5-minute leases."""
    harness = Harness(database_url, tmp_path / "resume", seed=5)
    try:
        harness.start()
        _, differences = harness.converge(timeout=30)
        assert not differences
        assert harness.worker is not None and harness.graph is not None
        harness.worker.kill()
        user = harness.content_users[0]
        harness.graph.request("POST", f"users/{user}/mailFolders/inbox/messages",
                              json={"subject": "after the kill", "body": {"contentType": "text", "content": "x"}})
        harness.admin("POST", "delivery/wait", json={"timeoutSeconds": 10})
        # The state a SIGKILL in the middle of a drain and a pass leaves behind.
        now = datetime.now(UTC)
        engine = harness.engine()
        try:
            with engine.begin() as connection:
                s, i = schema.sync_state, schema.inbox
                leased = connection.execute(
                    sa.update(s).where(s.c.scope_key == f"users/{user}/mailFolders/inbox/messages")
                    .values(leased_by=WORKER_ID, lease_until=now + timedelta(minutes=5))
                ).rowcount
                claimed = connection.execute(
                    sa.update(i).where(i.c.processed_at.is_(None))
                    .values(claimed_by=WORKER_ID, claimed_until=now + timedelta(minutes=5))
                ).rowcount
                connection.execute(sa.delete(schema.locks))
                connection.execute(sa.insert(schema.locks).values(
                    name="worker", holder=WORKER_ID, acquired_at=now, expires_at=now + timedelta(seconds=30)))
        finally:
            engine.dispose()
        assert leased == 1 and claimed >= 1
        harness.worker.start()
        _, differences = harness.converge(timeout=20)
        assert not differences, "; ".join(map(str, differences)) + harness.worker.output()
        assert harness.worker.crashes == [], harness.worker.output()
    finally:
        harness.stop()


def test_a_cut_proxy_lets_no_connection_through() -> None:
    """The outage is total: a connection attempted right after the cut is refused, not accepted by the
    accept() that was already waiting (which a plain close() of the listening socket leaves running)."""
    upstream = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy(upstream.getsockname()[:2]).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as before:
            before.sendall(b"x")
            peer, _ = upstream.accept()  # the proxy forwards while it is up
            assert peer.recv(1) == b"x"
            peer.close()
        time.sleep(0.1)  # the proxy's accept thread is blocked in accept() again
        proxy.cut()
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
            peer, _ = upstream.accept()
            peer.close()
    finally:
        proxy.stop()
        upstream.close()


# --- one fault at a time (tests/chaos_scenarios.py) -------------------------------------------------

SCENARIO_SECONDS = 3.0


@pytest.fixture(scope="module")
def scenario_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioHarness]:
    """One harness for every scenario (starting the processes is the cost), in a PostgreSQL database of
    its own (the read-only scenario alters the whole database)."""
    base = postgres_base_url()
    if base is None:
        if os.environ.get("SYNCER_REQUIRE_POSTGRES"):
            pytest.fail("SYNCER_REQUIRE_POSTGRES is set but SYNCER_TEST_DATABASE_URL is not")
        pytest.skip(PG_SKIP)
    with dedicated_database(base, prefix="t_chaos", io_timeout=10) as url:
        harness = ScenarioHarness(url, tmp_path_factory.mktemp("scenarios"), seed=12, admin_url=base)
        try:
            harness.start()
            _, differences = harness.converge(timeout=30)
            assert not differences, "initial sync: " + "; ".join(map(str, differences))
            yield harness
        finally:
            harness.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_nothing_and_recovers(scenario_harness: ScenarioHarness, name: str) -> None:
    scenario = SCENARIOS[name]()
    outcome = run(scenario_harness, scenario, seconds=SCENARIO_SECONDS, rate=4.0, timeout=30, nudge=True)
    print(HEADER, outcome.row(), outcome.as_json(), sep="\n")
    logs = "".join(p.output() for p in scenario_harness.processes())[-6000:]
    assert outcome.error is None, outcome.error
    assert outcome.changes > 0 and outcome.answered > 0, outcome.as_json()
    assert outcome.lost == 0, outcome.as_json()
    assert outcome.recovery is not None, "not recovered: " + "; ".join(outcome.differences) + "\n" + logs
    assert outcome.crashes == {}, logs
    if isinstance(scenario, Hostile):
        assert outcome.notes["forged_stored"] == 0, outcome.notes
