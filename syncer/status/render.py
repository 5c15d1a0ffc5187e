"""``syncer status`` as text for a terminal (a summary first, details on request) and as JSON."""

from __future__ import annotations

import fnmatch
import textwrap
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from syncer.status.collect import ScopeStatus, Status, needing_attention

DEFAULT_WIDTH = 160


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


def _ago(status: Status, value: datetime | None) -> str:
    if value is None or status.now is None:
        return "never"
    return human(status.now - value)


def render(
    status: Status,
    *,
    names: Sequence[str] = (),
    pattern: str | None = None,
    failing: bool = False,
    width: int | None = None,
) -> str:
    """The text ``syncer status`` prints: the accounts that must sign in again, then the summary or the
    scopes asked for in detail."""
    body = _body(status, names, pattern, failing, width)
    signed_out = [a.line() for a in status.signed_out()]
    return "\n".join([*signed_out, "", body]) if signed_out else body


def _body(status: Status, names: Sequence[str], pattern: str | None, failing: bool, width: int | None) -> str:
    if names or pattern or failing:
        chosen = needing_attention(status) if failing else status.scopes
        if names:
            chosen = [sc for sc in chosen if sc.name in names]
        if pattern:
            chosen = [sc for sc in chosen if fnmatch.fnmatchcase(sc.scope, pattern)]
        return render_scopes(status, chosen, width=width)
    return render_summary(status, width=width)


def render_summary(status: Status, *, width: int | None = None) -> str:
    """One line per declaration: its scopes by health, rows, oldest freshness, next expiry, inbox."""
    declarations = status.declarations or []
    if not declarations:
        return "No scopes or subscriptions yet: run `syncer reconcile`, then `syncer sync` or `syncer worker`."
    rows = [("DECLARATION", "SCOPES", "OK", "STALE", "FAIL", "NEW", "ROWS", "FRESHNESS", "EXPIRES IN", "INBOX")]
    for d in declarations:
        rows.append(
            (
                d.name,
                str(d.scopes),
                str(d.healthy),
                str(d.stale),
                str(d.failing),
                str(d.new),
                "-" if d.rows is None else str(d.rows),
                _ago(status, d.oldest_fresh_as_of) + (" ago" if d.oldest_fresh_as_of else ""),
                human(d.next_expiry - status.now) if d.next_expiry and status.now else "-",
                str(d.inbox_waiting),
            )
        )
    lines = _table(rows, width, flexible=(0,))
    # From the summary, not the scopes: a summary-only status (collect(detail=False)) has no list of scopes.
    scopes = sum(d.scopes for d in declarations)
    attention = sum(d.stale + d.failing + d.new for d in declarations)
    footer = (
        f"{scopes} scope(s), {attention} needing attention; {sum(d.subscriptions for d in declarations)} "
        f"subscription(s); inbox: {status.inbox_waiting} notification(s) waiting. Details: `syncer status NAME`, "
        "`--scope 'users/*'`, `--failing`; `--output json` for monitoring."
    )
    lines += ["", *textwrap.wrap(footer, (width or DEFAULT_WIDTH) - 1)]
    return "\n".join(lines)


def render_scopes(status: Status, scopes: Sequence[ScopeStatus], *, width: int | None = None) -> str:
    """The detail of *scopes*: freshness, rows, state and last error each, then their subscriptions."""
    lines = ["Scopes"]
    paused = {a.tenant_id for a in status.signed_out()}
    if not scopes:
        lines.append("  (none match)")
    rows = [("NAME", "SCOPE", "HEALTH", "FRESH AS OF", "LAST SUCCESS", "ROWS", "STATE", "LAST ERROR")]
    for sc in scopes:
        rows.append(
            (
                sc.name,
                sc.scope,
                sc.health,
                _ago(status, sc.fresh_as_of) + (" ago" if sc.fresh_as_of else ""),
                _when(sc.last_success),
                "-" if sc.rows is None else str(sc.rows),
                "paused: sign-in required" if sc.tenant_id in paused else _state(sc),
                sc.last_error or (f"resync: {sc.last_resync}" if sc.last_resync else ""),
            )
        )
    if scopes:
        lines += _table(rows, width, flexible=(7, 1, 0))
    shown = {(sc.tenant_id, sc.name) for sc in scopes}
    subscriptions = [sub for sub in status.subscriptions if (sub.tenant_id, sub.name) in shown]
    if subscriptions:
        lines += ["", "Subscriptions"]
        sub_rows = [("NAME", "SCOPE", "ID", "EXPIRES", "IN", "STATUS")]
        for sub in subscriptions:
            sub_rows.append(
                (sub.name, sub.scope, sub.subscription_id, _when(sub.expires_at), human(sub.expires_in), sub.status)
            )
        lines += _table(sub_rows, width, flexible=(1, 0))
    lines += ["", f"Inbox: {status.inbox_waiting} notification(s) waiting"]
    return "\n".join(lines)


def _state(sc: ScopeStatus) -> str:
    if sc.leased_by:
        return f"running ({sc.leased_by})"
    if sc.not_before:
        return f"postponed to {_when(sc.not_before)}"
    if sc.dirty:
        return "due"
    state = sc.last_outcome or "new"
    return f"{state}, resynced" if sc.last_resync else state


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
        "declarations": [record(d, {}) for d in status.declarations or []],
        "scopes": [
            record(sc, {"lag": "lag_seconds", "freshness": "freshness_seconds", "allowed": "allowed_seconds"})
            for sc in status.scopes
        ],
        "subscriptions": [record(sub, {"expires_in": "expires_in_seconds"}) for sub in status.subscriptions],
        "inbox_waiting": status.inbox_waiting,
        "sign_ins": [record(a, {}) for a in status.sign_ins],
    }


def _table(rows: Sequence[tuple[str, ...]], width: int | None, *, flexible: Sequence[int]) -> list[str]:
    """Rows as aligned columns, two spaces apart, within *width* characters: the *flexible* columns
    (in order) give up characters first, cut with an ellipsis."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    limit = (width or DEFAULT_WIDTH) - 2
    for column in flexible:
        excess = sum(widths) + 2 * (len(widths) - 1) - limit
        if excess <= 0:
            break
        header = len(rows[0][column])
        widths[column] = max(header, 8, widths[column] - excess)

    def cell(text: str, i: int) -> str:
        return text if len(text) <= widths[i] else text[: widths[i] - 1] + "…"

    return ["  " + "  ".join(cell(c, i).ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
