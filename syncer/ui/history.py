"""The last hours of the mirror's life, per hour, for the status page's charts.

Each series is one grouped query over an indexed time column: processed notifications by
``processed_at`` (the inbox's own index; the receiver's hot path gets no new index for a chart, so
a notification counts in the hour it was processed, which trails its arrival by the drain's
interval), passes by ``started_at`` (migration 0004).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncer import schema


@dataclass(frozen=True)
class Series:
    """One value per hour, oldest first: ``hours[i]`` starts the hour ``values[i]`` counts."""

    name: str
    title: str
    hours: list[datetime]
    values: list[int]

    @property
    def total(self) -> int:
        return sum(self.values)


def hours_back(now: datetime, count: int = 24) -> list[datetime]:
    """The starts of the last *count* hours, the current (unfinished) one last."""
    top = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [top - timedelta(hours=count - 1 - i) for i in range(count)]


def _hour_of(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[str]:
    """``YYYY-MM-DD HH`` of a UTC timestamp column, in SQL (SQLite stores the UTC digits as text)."""
    if dialect == "sqlite":
        return sa.func.substr(column, 1, 13)
    return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24")


def bucket(hours: list[datetime], counts: Iterable[tuple[str, int]]) -> list[int]:
    """*counts* keyed ``YYYY-MM-DD HH`` laid over *hours* (missing hours are 0)."""
    by_hour: Mapping[str, int] = {key: int(n or 0) for key, n in counts}
    return [by_hour.get(h.strftime("%Y-%m-%d %H"), 0) for h in hours]


def collect(connection: Connection, now: datetime | None = None, hours: int = 24) -> list[Series]:
    """Notifications processed, rows written and passes throttled, per hour over the last *hours*."""
    slots = hours_back(now or datetime.now(UTC), hours)
    since = slots[0]
    dialect = connection.dialect.name
    inbox, runs = schema.inbox, schema.sync_runs

    processed_hour = _hour_of(inbox.c.processed_at, dialect).label("hour")
    notifications = connection.execute(
        sa.select(processed_hour, sa.func.count()).where(inbox.c.processed_at >= since).group_by(processed_hour)
    ).all()
    run_hour = _hour_of(runs.c.started_at, dialect).label("hour")
    written = connection.execute(
        sa.select(run_hour, sa.func.sum(runs.c.upserted + runs.c.deleted))
        .where(runs.c.started_at >= since)
        .group_by(run_hour)
    ).all()
    throttled = connection.execute(
        sa.select(run_hour, sa.func.count())
        .where(runs.c.started_at >= since, runs.c.outcome == "throttled")
        .group_by(run_hour)
    ).all()
    return [
        Series("notifications", "Notifications processed", slots, bucket(slots, notifications)),
        Series("rows", "Rows written", slots, bucket(slots, written)),
        Series("throttled", "Passes throttled (429)", slots, bucket(slots, throttled)),
    ]


FRESHNESS_BUCKETS: list[tuple[str, timedelta | None]] = [
    ("< 1m", timedelta(minutes=1)),
    ("< 5m", timedelta(minutes=5)),
    ("< 15m", timedelta(minutes=15)),
    ("< 1h", timedelta(hours=1)),
    ("< 2h", timedelta(hours=2)),
    ("< 1d", timedelta(days=1)),
    ("older", None),
]


def freshness_histogram(freshness: Iterable[timedelta | None]) -> list[tuple[str, int]]:
    """How many scopes are how fresh: ``(label, count)`` per bucket of :data:`FRESHNESS_BUCKETS`,
    then ``never`` for the scopes never synced."""
    counts = [0] * len(FRESHNESS_BUCKETS)
    never = 0
    for value in freshness:
        if value is None:
            never += 1
            continue
        for i, (_, limit) in enumerate(FRESHNESS_BUCKETS):
            if limit is None or value < limit:
                counts[i] += 1
                break
    return [(label, n) for (label, _), n in zip(FRESHNESS_BUCKETS, counts, strict=True)] + [("never", never)]
