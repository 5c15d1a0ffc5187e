"""Named database locks on SQLite (a row with expiry) and PostgreSQL (advisory lock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer.database import create_engine, is_sqlite
from syncer.errors import LockTimeout
from syncer.locks import DatabaseLock, LockInfo, hold, read_lock
from syncer.migrate import upgrade_core
from syncer.schema import locks


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade_core(database_url)
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def test_a_second_holder_waits_is_told_who_holds_it_and_times_out(engine: Engine) -> None:
    seen: list[LockInfo | None] = []
    with hold(engine, "reconcile", holder="deploy job"):
        started = time.monotonic()
        with (
            pytest.raises(LockTimeout, match="held by deploy job since"),
            hold(engine, "reconcile", holder="scheduler", timeout=0.6, poll=0.05, on_wait=seen.append),
        ):
            pytest.fail("took a lock that was held")
        assert time.monotonic() - started >= 0.6
    assert seen and seen[0] is not None and seen[0].holder == "deploy job"
    assert "deploy job since" in str(seen[0])
    # Released: free for the next one, and no row is left behind.
    assert read_lock(engine, "reconcile") is None
    with hold(engine, "reconcile", holder="scheduler", timeout=1):
        info = read_lock(engine, "reconcile")
        assert info is not None and info.holder == "scheduler"


def test_different_names_do_not_block_each_other(engine: Engine) -> None:
    with hold(engine, "reconcile"), hold(engine, "worker", timeout=0.5):
        pass


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(engine: Engine) -> None:
    first = DatabaseLock(engine, "reconcile", holder="first")
    first.acquire()
    got_at: list[float] = []

    def waiter() -> None:
        with hold(engine, "reconcile", holder="second", timeout=10, poll=0.05):
            got_at.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    assert not got_at
    released_at = time.monotonic()
    first.release()
    thread.join(timeout=10)
    assert got_at and got_at[0] >= released_at


def test_mutual_exclusion_under_contention(engine: Engine) -> None:
    counter = {"value": 0, "inside": 0, "max_inside": 0}

    def worker() -> None:
        for _ in range(3):
            with hold(engine, "reconcile", timeout=30, poll=0.01):
                counter["inside"] += 1
                counter["max_inside"] = max(counter["max_inside"], counter["inside"])
                value = counter["value"]
                time.sleep(0.01)  # a read-modify-write that would lose updates without the lock
                counter["value"] = value + 1
                counter["inside"] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert counter["value"] == 12
    assert counter["max_inside"] == 1


def test_sqlite_lock_of_a_crashed_holder_expires(sqlite_url: str) -> None:
    upgrade_core(sqlite_url)
    engine = create_engine(sqlite_url)
    past = datetime.now(UTC) - timedelta(minutes=10)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(locks).values(
                name="reconcile",
                holder="dead process",
                acquired_at=past,
                expires_at=past + timedelta(minutes=2),
            )
        )
    with hold(engine, "reconcile", holder="alive", timeout=1):
        info = read_lock(engine, "reconcile")
        assert info is not None and info.holder == "alive"
    engine.dispose()


def test_sqlite_heartbeat_keeps_a_long_holder_alive(sqlite_url: str) -> None:
    upgrade_core(sqlite_url)
    engine = create_engine(sqlite_url)
    with hold(engine, "reconcile", holder="long", ttl=timedelta(seconds=3)) as lock:
        first = read_lock(engine, "reconcile")
        time.sleep(1.3)  # past one heartbeat (ttl / 3)
        later = read_lock(engine, "reconcile")
        assert first is not None and later is not None and later.expires_at > first.expires_at
        with pytest.raises(LockTimeout), hold(engine, "reconcile", holder="other", timeout=0.3, poll=0.05):
            pass
        assert not lock.lost
    engine.dispose()


def test_postgres_lock_dies_with_its_session(postgres_url: str) -> None:
    upgrade_core(postgres_url)
    engine = create_engine(postgres_url)
    assert not is_sqlite(engine)
    lock = DatabaseLock(engine, "reconcile", holder="crashing")
    lock.acquire()
    # The process "dies": its connection goes away without releasing anything.
    assert lock._connection is not None
    lock._connection.invalidate()
    lock._connection = None
    with hold(engine, "reconcile", holder="next", timeout=5, poll=0.05):
        info = read_lock(engine, "reconcile")
        assert info is not None and info.holder == "next"
    engine.dispose()
