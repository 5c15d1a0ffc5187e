"""What ``syncer status`` prints: how fresh each scope is, and when each subscription expires.

Read-only and cheap: one query per core table and one grouped count per mirror table, so it can be
run against a busy production database. Computed values (lag, rows) are plain data first
(:func:`collect`), rendered second (:func:`render`), so tests check the data and the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import schema, signins
from syncer.errors import DatabaseError


@dataclass(frozen=True)
class ScopeStatus:
    """One scope's freshness."""

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
class Status:
    scopes: list[ScopeStatus]
    subscriptions: list[SubscriptionStatus]
    inbox_waiting: int
    sign_ins: list[signins.SignIn] = field(default_factory=list)
    """Delegated accounts as the worker last saw them (those that must sign in again: :meth:`signed_out`)."""

    def signed_out(self) -> list[signins.SignIn]:
        return [s for s in self.sign_ins if s.required]


def collect(engine: Engine, *, now: datetime | None = None, count_rows: bool = True) -> Status:
    """Read the status of every scope and subscription.

    Counting each scope's live rows reads every mirror table whole; a check run every minute
    passes ``count_rows=False`` (rows are then None)."""
    now = now or datetime.now(UTC)
    s, r, subs, inbox = schema.sync_state, schema.sync_runs, schema.subscriptions, schema.inbox
    try:
        tables = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as error:
        raise DatabaseError(f"cannot reach the database: {error}") from error
    lacking = sorted({s.name, r.name, subs.name, inbox.name} - tables)
    if lacking:
        raise DatabaseError(f"the database lacks {', '.join(lacking)}: run `syncer db upgrade` first")
    with engine.connect() as connection:
        # The last pass of each scope: one probe of the (tenant_id, scope_key, started_at) index per
        # scope, not an aggregate over every pass ever recorded (months of them, for a status that
        # monitoring may run every minute).
        def last_run(column: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
            return (
                sa.select(column)
                .where(r.c.tenant_id == s.c.tenant_id, r.c.scope_key == s.c.scope_key)
                .order_by(r.c.started_at.desc(), r.c.id.desc())  # (id: two passes started in one instant)
                .limit(1)
                .scalar_subquery()
            )

        # A pass that resynced (sync.py) says why in its run's error column, its outcome being ok.
        states = connection.execute(
            sa.select(s, last_run(r.c.outcome).label("last_outcome"), last_run(r.c.error).label("last_run_error"))
            .order_by(s.c.name, s.c.tenant_id, s.c.scope_key)
        ).all()
        counts: dict[tuple[str, str], int] = {}
        missing: set[str] = set()
        existing = set(sa.inspect(connection).get_table_names())
        for table_name in sorted({row.table_name for row in states} if count_rows else ()):
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
        sub_rows = connection.execute(sa.select(subs).order_by(subs.c.name, subs.c.scope_key)).all()
        waiting = int(connection.execute(sa.select(sa.func.count()).where(inbox.c.processed_at.is_(None))).scalar_one())
    scopes = []
    for row in states:
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
    return Status(scopes, subscriptions, waiting, signins.read(engine))


def _resync_of(outcome: str | None, error: str | None) -> str | None:
    if outcome in ("ok", "stopped", "running") and error and error.startswith("resync: "):
        return error.removeprefix("resync: ")
    return None


def human(delta: timedelta | None) -> str:
    """``3d 4h``, ``12m 5s``, ``-2h`` (in the past); ``never`` for None."""
    if delta is None:
        return "never"
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "never"


def render(status: Status) -> str:
    """The text ``syncer status`` prints."""
    lines = [s.line() for s in status.signed_out()]
    paused = {s.tenant_id for s in status.signed_out()}
    lines += [""] if lines else []
    lines.append("Scopes")
    if not status.scopes:
        lines.append("  (none yet: run `syncer sync` or `syncer worker`)")
    rows = [("NAME", "SCOPE", "LAST SUCCESS", "LAG", "ROWS", "STATE", "LAST ERROR")]
    for sc in status.scopes:
        state = sc.last_outcome or "new"
        if sc.last_resync:
            state = f"{state}, resynced"
        if sc.leased_by:
            state = f"running ({sc.leased_by})"
        elif sc.tenant_id in paused:
            state = "paused: sign-in required"
        elif sc.not_before:
            state = f"postponed to {_when(sc.not_before)}"
        elif sc.dirty:
            state = "due"
        rows.append(
            (
                sc.name,
                sc.scope,
                _when(sc.last_success),
                human(sc.lag),
                "-" if sc.rows is None else str(sc.rows),
                state,
                (sc.last_error or (f"resync: {sc.last_resync}" if sc.last_resync else ""))[:80],
            )
        )
    if status.scopes:
        lines += _table(rows)
    lines.append("")
    lines.append("Subscriptions")
    if not status.subscriptions:
        lines.append("  (none: run `syncer reconcile`)")
    else:
        sub_rows = [("NAME", "SCOPE", "ID", "EXPIRES", "IN", "STATUS")]
        for sub in status.subscriptions:
            sub_rows.append(
                (sub.name, sub.scope, sub.subscription_id, _when(sub.expires_at), human(sub.expires_in), sub.status)
            )
        lines += _table(sub_rows)
    lines.append("")
    lines.append(f"Inbox: {status.inbox_waiting} notification(s) waiting")
    return "\n".join(lines)


def to_json(status: Status) -> dict[str, Any]:
    """The status as JSON-ready data (``syncer status --output json``): times in ISO 8601 UTC,
    durations in seconds, for monitoring to read."""

    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, timedelta):
            return round(v.total_seconds(), 3)
        return v

    def record(item: Any, renames: dict[str, str]) -> dict[str, Any]:
        return {renames.get(f.name, f.name): value(getattr(item, f.name)) for f in fields(item)}

    return {
        "scopes": [record(sc, {"lag": "lag_seconds"}) for sc in status.scopes],
        "subscriptions": [record(sub, {"expires_in": "expires_in_seconds"}) for sub in status.subscriptions],
        "inbox_waiting": status.inbox_waiting,
        "sign_ins": [record(s, {}) for s in status.sign_ins],
    }


def stale(status: Status, max_lag: timedelta) -> list[ScopeStatus]:
    """The scopes whose last success is older than *max_lag*, or that never succeeded."""
    return [sc for sc in status.scopes if sc.lag is None or sc.lag > max_lag]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
