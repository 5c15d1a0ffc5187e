"""syncer.inbox on real SQLite and PostgreSQL: idempotent put, claim/ack/release/replay, group commit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import database, schema
from syncer.errors import DatabaseError
from syncer.inbox import Inbox, NewItem
from syncer.receiver.groupcommit import GroupCommitter


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    yield engine
    engine.dispose()


def item(key: str | None = None, *, sub: str = "sub-1", kind: str = "change", event: str = "updated") -> NewItem:
    key = key or uuid.uuid4().hex
    return NewItem(
        tenant_id="t1", subscription_id=sub, kind=kind, event=event, resource=f"Users/{key}",
        resource_id=key, dedupe_key=key, payload={"resource": f"Users/{key}", "n": [1, 2]},
    )


def count(engine: Engine, **where: object) -> int:
    t = schema.inbox
    stmt = sa.select(sa.func.count()).select_from(t).where(*[t.c[k] == v for k, v in where.items()])
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_put_absorbs_duplicates_of_waiting_rows(engine: Engine) -> None:
    inbox = Inbox(engine)
    assert inbox.put([item("a"), item("b"), item("a")]) == 2
    assert inbox.put([item("a"), item("c")]) == 1
    assert count(engine) == 3 and inbox.depth() == 3


def test_claim_ack_release_and_the_dedupe_window(engine: Engine) -> None:
    clock = Clock()
    inbox = Inbox(engine, clock=clock)
    inbox.put([item("a"), item("b"), item("c")])
    first = inbox.claim("w1", limit=2, lease=timedelta(minutes=5))
    assert [i.resource_id for i in first] == ["a", "b"]
    assert all(i.attempts == 1 and i.received_at.tzinfo is not None for i in first)
    assert first[0].payload == {"resource": "Users/a", "n": [1, 2]}
    # Once claimed, the same notification arriving again is new work (the pass may have started already).
    assert inbox.put([item("a")]) == 1
    # c and the new a are waiting; a second worker gets them, never a or b again.
    second = inbox.claim("w2", limit=10)
    assert [i.resource_id for i in second] == ["c", "a"]
    assert inbox.claim("w3") == []
    assert inbox.ack([first[0].id], worker="w2") == 0, "not w2's row"
    assert inbox.ack([first[0].id], worker="w1") == 1
    assert inbox.release([first[1].id], worker="w1", error="boom", retry_in=timedelta(seconds=30)) == 1
    assert inbox.claim("w3") == [], "released with a delay: not yet"
    clock.now += timedelta(seconds=31)
    (again,) = inbox.claim("w3")
    assert again.id == first[1].id and again.attempts == 2 and again.last_error == "boom"
    assert inbox.depth() == 3  # b (claimed), c, a' (claimed); a is done


def test_an_expired_lease_is_claimable_again(engine: Engine) -> None:
    clock = Clock()
    inbox = Inbox(engine, clock=clock)
    inbox.put([item("a")])
    (claimed,) = inbox.claim("dead-worker", lease=timedelta(minutes=1))
    assert inbox.claim("w2") == []
    clock.now += timedelta(minutes=2)
    (reclaimed,) = inbox.claim("w2")
    assert reclaimed.id == claimed.id and reclaimed.attempts == 2
    assert inbox.ack([claimed.id], worker="dead-worker") == 0, "its lease lapsed"


def test_replay_by_time_range_and_subscription(engine: Engine) -> None:
    clock = Clock()
    inbox = Inbox(engine, clock=clock)
    inbox.put([item("a", sub="s1"), item("b", sub="s2")])
    clock.now += timedelta(hours=1)
    inbox.put([item("c", sub="s1")])
    done = inbox.claim("w", limit=10)
    assert inbox.ack([i.id for i in done], worker="w") == 3
    assert inbox.depth() == 0
    start = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert inbox.replay(since=start, until=start + timedelta(hours=1, minutes=30), subscription_id="s1") == 1
    assert [i.resource_id for i in inbox.claim("w")] == ["a"]
    assert inbox.replay(subscription_id="s1") == 1  # c (a is claimed, not processed)
    assert inbox.replay() == 1  # b


def test_concurrent_claimers_never_share_a_row(engine: Engine) -> None:
    inbox = Inbox(engine)
    inbox.put([item() for _ in range(200)])
    seen: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            claimed = inbox.claim(name, limit=7)
            if not claimed:
                return
            with lock:
                seen.extend(i.id for i in claimed)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200 and len(set(seen)) == 200


def test_group_commit_batches_concurrent_requests(engine: Engine) -> None:
    commits: list[tuple[int, int]] = []
    committer = GroupCommitter(Inbox(engine), on_commit=lambda reqs, rows, _s: commits.append((reqs, rows)))
    barrier = threading.Barrier(16)
    results: list[int] = []

    def request(n: int) -> None:
        barrier.wait()
        for k in range(10):
            keys = committer.put([item(f"{n}-{k}-{j}") for j in range(3)] + [item(f"{n}-{k}-0")])
            results.append(len(keys))

    threads = [threading.Thread(target=request, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    assert count(engine) == 16 * 10 * 3
    assert results == [3] * 160
    assert sum(r for r, _ in commits) == 160
    assert len(commits) < 160, f"requests should share commits: {len(commits)} commits"


def test_a_bad_request_fails_alone(engine: Engine) -> None:
    inbox = Inbox(engine)
    committer = GroupCommitter(inbox)
    # Hold the committer busy so the next three requests form one batch.
    bad = NewItem(None, "s", "change", "updated", None, None, "bad", {})  # type: ignore[arg-type]
    outcomes: dict[str, object] = {}

    def request(name: str, items: list[NewItem]) -> None:
        try:
            outcomes[name] = committer.put(items)
        except DatabaseError as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=request, args=("good1", [item("g1")])),
        threading.Thread(target=request, args=("bad", [item("b1"), bad])),
        threading.Thread(target=request, args=("good2", [item("g2")])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    assert outcomes["good1"] == {"g1"} and outcomes["good2"] == {"g2"}
    assert isinstance(outcomes["bad"], DatabaseError)
    assert count(engine, dedupe_key="b1") == 0, "the bad request is all-or-nothing"


def test_database_down_raises_database_error() -> None:
    engine = database.create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2")
    committer = GroupCommitter(Inbox(engine))
    with pytest.raises(DatabaseError):
        committer.put([item()])
    with pytest.raises(DatabaseError):
        Inbox(engine).put([item()])
    with pytest.raises(DatabaseError):
        Inbox(engine).depth()
    committer.close()


@pytest.mark.postgres
def test_a_slow_commit_times_out_and_its_retry_is_stored_once(postgres_url: str) -> None:
    engine = database.create_engine(postgres_url)
    schema.metadata.create_all(engine)
    committer = GroupCommitter(Inbox(engine), statement_timeout=0.5)
    blocker = engine.connect()
    tx = blocker.begin()
    blocker.execute(sa.text("LOCK TABLE syncer_inbox IN ACCESS EXCLUSIVE MODE"))
    results: dict[str, object] = {}

    def request(name: str) -> None:
        try:
            results[name] = committer.put([item(name)], timeout=0.5)
        except DatabaseError as exc:
            results[name] = exc

    try:
        # The leader's statement is cancelled by PostgreSQL; a follower stops waiting on its own.
        started = time.monotonic()
        threads = [threading.Thread(target=request, args=(f"slow{n}",)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert time.monotonic() - started < 5, "a stuck commit must not hold requests much past the timeout"
        for name in ("slow0", "slow1", "slow2", "slow3"):
            assert isinstance(results[name], DatabaseError) and "longer than" in str(results[name]), results
    finally:
        tx.rollback()
        blocker.close()
    # Graph retries the 5xx: each item is stored exactly once, whether or not a first try landed late.
    for name in ("slow0", "slow1", "slow2", "slow3"):
        committer.put([item(name)])
        assert count(engine, dedupe_key=name) == 1
    committer.close()
    engine.dispose()


@pytest.mark.postgres
def test_a_committer_connection_killed_while_idle_is_replaced(postgres_url: str) -> None:
    name = f"inbox-test-{uuid.uuid4().hex[:8]}"  # only this test's connections are terminated
    engine = database.create_engine(postgres_url, connect_args={"application_name": name})
    schema.metadata.create_all(engine)
    committer = GroupCommitter(Inbox(engine), committers=1)
    assert committer.put([item("before")]) == {"before"}
    with engine.begin() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND application_name = :name"
            ),
            {"name": name},
        ).all()
    assert killed, "the committer's backend should be found"
    assert committer.put([item("after")]) == {"after"}
    assert count(engine) == 2
    committer.close()
    engine.dispose()
