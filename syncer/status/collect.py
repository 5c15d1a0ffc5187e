"""Read the state of the mirror: each scope's freshness and health, each subscription's expiry.

Read-only and cheap: one query per core table, one index probe per scope for its last runs, and
(unless asked not to) one grouped count per mirror table, so it can run against a busy production
database every minute.

**Freshness** is the time as of which a scope's mirror is known to reflect Graph: the end of its
last run that succeeded (a delta pass, or a fetch by id of notified items: with a live subscription,
Graph notifies every change, so what was not notified did not change), but no later than the first
notification still waiting for it (``dirty_since``): that change is not in the mirror yet. A quiet
scope stays fresh through its safety-net pass every ``sync_interval``; so a scope is **stale** when
its freshness is older than its declaration's ``sync_interval`` plus a grace (the time the safety
net takes to notice and run the pass), or older than ``--max-lag`` when one is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import schema, signins
from syncer.errors import DatabaseError
from syncer.status.summary import declaration_counts

DEFAULT_INTERVAL = timedelta(hours=1)
"""A scope whose declaration is no longer in the spec is judged by the default ``sync_interval``."""


def allowance(sync_interval: timedelta) -> timedelta:
    """How old a scope's freshness may be before it is stale: its ``sync_interval`` plus a grace of a
    quarter of it (at least 5 minutes): the safety net looks every minute, and a pass takes time."""
    return sync_interval + max(timedelta(minutes=5), sync_interval / 4)


@dataclass(frozen=True)
class ScopeStatus:
    """One scope's freshness and health."""

    tenant_id: str
    scope: str
    name: str
    table: str
    last_success: datetime | None
    lag: timedelta | None  # now - last success (None: never synced)
    rows: int | None  # live rows of this scope in its mirror table (None: table missing, or not counted)
    dirty: bool
    not_before: datetime | None
    leased_by: str | None
    last_error: str | None
    last_outcome: str | None
    last_resync: str | None = None
    """Why the last pass had to enumerate the scope again (a 410, a lost deltaLink); None if it did not."""
    fresh_as_of: datetime | None = None
    """The mirror reflects Graph as of this time (see the module's docstring); None: never synced."""
    freshness: timedelta | None = None  # now - fresh_as_of
    allowed: timedelta = timedelta(hours=1, minutes=15)  # older than this: stale (allowance())
    health: str = "new"  # healthy | stale | failing | new


@dataclass(frozen=True)
class SubscriptionStatus:
    """One live Graph subscription syncer manages."""

    tenant_id: str
    name: str
    scope: str
    subscription_id: str
    expires_at: datetime
    expires_in: timedelta
    status: str


@dataclass(frozen=True)
class DeclarationSummary:
    """One declaration of the spec, summed over its scopes: the first thing ``syncer status`` shows."""

    name: str
    table: str
    scopes: int
    healthy: int
    stale: int
    failing: int
    new: int
    rows: int | None
    oldest_fresh_as_of: datetime | None  # None: some scope never synced (or none exists)
    subscriptions: int
    next_expiry: datetime | None
    inbox_waiting: int


@dataclass(frozen=True)
class Status:
    scopes: list[ScopeStatus]
    subscriptions: list[SubscriptionStatus]
    inbox_waiting: int
    declarations: list[DeclarationSummary] | None = None
    now: datetime | None = None
    sign_ins: list[signins.SignIn] = field(default_factory=list)
    """Delegated accounts as the worker last saw them (:mod:`syncer.signins`)."""

    def signed_out(self) -> list[signins.SignIn]:
        """The delegated accounts that must sign in again (``syncer login NAME``); their scopes are paused."""
        return [s for s in self.sign_ins if s.required]


def collect(
    engine: Engine,
    *,
    now: datetime | None = None,
    count_rows: bool = True,
    intervals: Mapping[str, timedelta] | None = None,
    max_lag: timedelta | None = None,
    detail: bool = True,
) -> Status:
    """Read the status of every scope and subscription.

    *intervals* maps declaration names to their ``sync_interval`` (from the spec), which decides when
    a scope is stale; *max_lag* overrides it for every scope. Counting each scope's live rows reads
    every mirror table whole; a check run every minute passes ``count_rows=False`` (rows are then None).
    Without *detail*, only the summary per declaration is read, by grouped queries (:mod:`syncer.status.summary`):
    ``scopes`` and ``subscriptions`` are then empty.
    """
    now = now or datetime.now(UTC)
    intervals = intervals or {}
    s, subs, inbox = schema.sync_state, schema.subscriptions, schema.inbox
    try:
        tables = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as error:
        raise DatabaseError(f"cannot reach the database: {error}") from error
    lacking = sorted({s.name, schema.sync_runs.name, subs.name, inbox.name} - tables)
    if lacking:
        raise DatabaseError(f"the database lacks {', '.join(lacking)}: run `syncer db upgrade` first")
    if not detail:
        return _summary_only(engine, now=now, intervals=intervals, max_lag=max_lag, count_rows=count_rows,
                             tables=tables)
    with engine.connect() as connection:
        states = _states(connection)
        counts, missing = _row_counts(connection, {row.table_name for row in states}) if count_rows else ({}, set())
        sub_rows = connection.execute(sa.select(subs).order_by(subs.c.name, subs.c.scope_key)).all()
        waiting_by_subscription = {
            sub_id: int(n)
            for sub_id, n in connection.execute(
                sa.select(inbox.c.subscription_id, sa.func.count())
                .where(inbox.c.processed_at.is_(None))
                .group_by(inbox.c.subscription_id)
            )
        }
    scopes = []
    for row in states:
        allowed = max_lag if max_lag is not None else allowance(intervals.get(row.name, DEFAULT_INTERVAL))
        fresh = _fresh_as_of(row)
        last = row.last_success_at
        scopes.append(
            ScopeStatus(
                tenant_id=row.tenant_id,
                scope=row.scope_key,
                name=row.name,
                table=row.table_name,
                last_success=last,
                lag=(now - last) if last else None,
                rows=None if row.table_name in missing or not count_rows else counts.get((row.tenant_id, row.scope_key), 0),
                dirty=row.dirty_since is not None or bool(row.resync_requested) or row.page_link is not None,
                not_before=row.not_before,
                leased_by=row.leased_by if row.lease_until and row.lease_until > now else None,
                last_error=row.last_error,
                last_outcome=row.last_outcome,
                last_resync=_resync_of(row.last_outcome, row.last_run_error),
                fresh_as_of=fresh,
                freshness=(now - fresh) if fresh else None,
                allowed=allowed,
                health=_health(row.last_error, fresh, now, allowed),
            )
        )
    subscriptions = [
        SubscriptionStatus(
            tenant_id=row.tenant_id,
            name=row.name,
            scope=row.scope_key,
            subscription_id=row.subscription_id,
            expires_at=row.expires_at,
            expires_in=row.expires_at - now,
            status=row.status,
        )
        for row in sub_rows
    ]
    name_of = {row.subscription_id: row.name for row in sub_rows}
    waiting_by_name: dict[str, int] = {}
    for sub_id, n in waiting_by_subscription.items():
        key = name_of.get(sub_id, "(unknown subscription)")
        waiting_by_name[key] = waiting_by_name.get(key, 0) + n
    declarations = summarize(scopes, subscriptions, waiting_by_name, declared=list(intervals), counted=count_rows)
    return Status(scopes, subscriptions, sum(waiting_by_subscription.values()), declarations, now, signins.read(engine))


def _summary_only(engine: Engine, *, now: datetime, intervals: Mapping[str, timedelta], max_lag: timedelta | None,
                  count_rows: bool, tables: set[str]) -> Status:
    subs, inbox = schema.subscriptions, schema.inbox
    allowed = {name: max_lag if max_lag is not None else allowance(i) for name, i in intervals.items()}
    default = max_lag if max_lag is not None else allowance(DEFAULT_INTERVAL)
    with engine.connect() as connection:
        counts = declaration_counts(connection, now=now, allowed=allowed, default=default, count_rows=count_rows,
                                    tables=tables)
        by_name = {name: (int(n), expiry) for name, n, expiry in connection.execute(
            sa.select(subs.c.name, sa.func.count(), sa.func.min(subs.c.expires_at)).group_by(subs.c.name))}
        waiting = {name or "(unknown subscription)": int(n) for name, n in connection.execute(
            sa.select(subs.c.name, sa.func.count()).select_from(
                inbox.outerjoin(subs, subs.c.subscription_id == inbox.c.subscription_id))
            .where(inbox.c.processed_at.is_(None)).group_by(subs.c.name))}
    declarations = []
    for name in sorted(set(intervals) | set(counts) | set(by_name) | set(waiting)):
        found = counts.get(name, {})
        n_subs, expiry = by_name.get(name, (0, None))
        declarations.append(DeclarationSummary(
            name=name, table=found.get("table", ""), scopes=found.get("scopes", 0), healthy=found.get("healthy", 0),
            stale=found.get("stale", 0), failing=found.get("failing", 0), new=found.get("new", 0),
            rows=found.get("rows"), oldest_fresh_as_of=found.get("oldest_fresh_as_of"), subscriptions=n_subs,
            next_expiry=schema.UtcDateTime().process_result_value(expiry, engine.dialect) if expiry else None,
            inbox_waiting=waiting.get(name, 0),
        ))
    return Status([], [], sum(waiting.values()), declarations, now, signins.read(engine))


def _states(connection: Connection) -> list[Any]:
    s, r = schema.sync_state, schema.sync_runs

    # Each scope's runs: one probe of the (tenant_id, scope_key, started_at) index per scope, not an
    # aggregate over every pass ever recorded (months of them, for a status monitoring may run every minute).
    def last_run(column: sa.ColumnElement[Any], *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
        return (
            sa.select(column)
            .where(r.c.tenant_id == s.c.tenant_id, r.c.scope_key == s.c.scope_key, *where)
            .order_by(r.c.started_at.desc(), r.c.id.desc())  # (id: two passes started in one instant)
            .limit(1)
            .scalar_subquery()
        )

    # A pass that resynced (worker/sync.py) says why in its run's error column, its outcome being ok.
    # The last ok run may be a fetch by id, which (unlike a pass) leaves last_success_at alone.
    return list(
        connection.execute(
            sa.select(
                s,
                last_run(r.c.outcome).label("last_outcome"),
                last_run(r.c.error).label("last_run_error"),
                last_run(r.c.finished_at, r.c.outcome == "ok").label("last_ok_at"),
            ).order_by(s.c.name, s.c.tenant_id, s.c.scope_key)
        ).all()
    )


def _row_counts(connection: Connection, table_names: set[str]) -> tuple[dict[tuple[str, str], int], set[str]]:
    counts: dict[tuple[str, str], int] = {}
    missing: set[str] = set()
    existing = set(sa.inspect(connection).get_table_names())
    for table_name in sorted(table_names):
        if table_name not in existing:
            missing.add(table_name)
            continue
        t = sa.table(table_name, sa.column("tenant_id"), sa.column("_scope"), sa.column("_deleted_at"))
        query = (
            sa.select(t.c.tenant_id, t.c._scope, sa.func.count())
            .where(t.c._deleted_at.is_(None))
            .group_by(t.c.tenant_id, t.c._scope)
        )
        for tenant_id, scope_key, count in connection.execute(query):
            counts[(tenant_id, scope_key)] = int(count)
    return counts, missing


def _fresh_as_of(row: Any) -> datetime | None:
    candidates = [t for t in (row.last_success_at, row.last_ok_at) if t is not None]
    if not candidates:
        return None
    fresh: datetime = max(candidates)
    if row.dirty_since is not None:
        fresh = min(fresh, row.dirty_since)  # a notified change waits: the mirror lacks it since then
    return fresh


def _health(last_error: str | None, fresh: datetime | None, now: datetime, allowed: timedelta) -> str:
    if last_error:
        return "failing"
    if fresh is None:
        return "new"
    return "stale" if now - fresh > allowed else "healthy"


def _resync_of(outcome: str | None, error: str | None) -> str | None:
    if outcome in ("ok", "stopped", "running") and error and error.startswith("resync: "):
        return error.removeprefix("resync: ")
    return None


def summarize(
    scopes: list[ScopeStatus],
    subscriptions: list[SubscriptionStatus],
    waiting_by_name: Mapping[str, int],
    *,
    declared: Sequence[str] = (),
    counted: bool = True,
) -> list[DeclarationSummary]:
    """One line per declaration: those of the spec (*declared*, even before their first pass) and
    those the database still knows (a declaration removed from the spec keeps its rows)."""
    names = sorted(
        set(declared) | {sc.name for sc in scopes} | {sub.name for sub in subscriptions} | set(waiting_by_name)
    )
    summaries = []
    for name in names:
        mine = [sc for sc in scopes if sc.name == name]
        theirs = [sub for sub in subscriptions if sub.name == name]
        fresh = [sc.fresh_as_of for sc in mine]
        health = [sc.health for sc in mine]
        summaries.append(
            DeclarationSummary(
                name=name,
                table=mine[0].table if mine else "",
                scopes=len(mine),
                healthy=health.count("healthy"),
                stale=health.count("stale"),
                failing=health.count("failing"),
                new=health.count("new"),
                rows=sum(sc.rows or 0 for sc in mine) if counted and mine else None,
                oldest_fresh_as_of=None if not fresh or None in fresh else min(f for f in fresh if f is not None),
                subscriptions=len(theirs),
                next_expiry=min((sub.expires_at for sub in theirs), default=None),
                inbox_waiting=waiting_by_name.get(name, 0),
            )
        )
    return summaries


def stale(status: Status, max_lag: timedelta | None = None) -> list[ScopeStatus]:
    """The scopes whose freshness is older than *max_lag* (default: each scope's own allowance), or
    that never succeeded."""
    return [
        sc for sc in status.scopes
        if sc.freshness is None or sc.freshness > (max_lag if max_lag is not None else sc.allowed)
    ]


def needing_attention(status: Status) -> list[ScopeStatus]:
    """The scopes ``--failing`` shows: failing, stale or never synced."""
    return [sc for sc in status.scopes if sc.health != "healthy"]
