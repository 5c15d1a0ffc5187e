"""How a reconcile reads to a person (and to a machine): the plan, the results, the exit status.

Counts first, then one line per action with its resource, declaration and expiry; fan-out
expansions; orphans that only ``--prune`` would delete; refusals with their numbers. ``--output
json`` prints :meth:`~syncer.reconcile.Outcome.to_json` instead. Never a clientState: neither the
plan nor the results carry one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from syncer.reconcile.actions import Action, Kind, Plan

if TYPE_CHECKING:
    from syncer.reconcile.apply import ActionResult

_SIGNS = {
    Kind.CREATE: "+",
    Kind.REPLACE: "-/+",
    Kind.UPDATE: "~",
    Kind.RENEW: "~",
    Kind.ADOPT: "=",
    Kind.PRUNE: "-",
    Kind.FORGET: "x",
    Kind.KEEP: " ",
}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "?"


def _expiry(action: Action) -> str:
    if action.kind == Kind.CREATE:
        return f"expires {_when(action.new_expires_at)}"
    if action.new_expires_at is not None and action.expires_at is not None:
        return f"expires {_when(action.expires_at)} -> {_when(action.new_expires_at)}"
    return f"expires {_when(action.expires_at)}"


def action_line(action: Action) -> str:
    """One line for a person: sign, kind, resource, declaration, expiry, and why."""
    name = f" [{action.name}]" if action.name else ""
    why = (
        f" ({', '.join(action.changes)})"
        if action.kind in (Kind.UPDATE, Kind.REPLACE, Kind.PRUNE) and action.changes
        else ""
    )
    return f"  {_SIGNS[action.kind]:>3} {action.kind:<7} {action.resource}{name}  {_expiry(action)}{why}"


def render_plan(the_plan: Plan, *, verbose: bool = False, actions: bool = True) -> list[str]:
    """The plan for a person: counts, fan-out expansions, one line per action, orphans, problems.

    *actions* False leaves out the action lines (after an apply, the result lines say it all).
    """
    counts = the_plan.counts()
    parts = [f"{counts[str(k)]} to {k}" for k in Kind if k != Kind.KEEP]
    lines = [f"Plan: {', '.join(parts)}, {counts['keep']} unchanged."]
    for e in the_plan.expansions:
        shown = ", ".join(e.users[:10]) + (f", ... ({len(e.users) - 10} more)" if len(e.users) > 10 else "")
        lines.append(f"fan-out {e.name}: {len(e.users)} {e.noun} ({e.source}): {shown}")
    for action in the_plan.actions if actions else ():
        if action.kind != Kind.KEEP or verbose:
            lines.append(action_line(action))
    lagging = [a for a in the_plan.actions if a.on_previous_certificate]
    if lagging:
        lines.append(f"{len(lagging)} subscriptions still on the previous certificate (they move to the new one "
                     "when renewed; keep its private key until then):")
        lines.extend(f"{action_line(a)}  [{a.reason}]" for a in lagging)
    if the_plan.orphans:
        lines.append(
            f"{len(the_plan.orphans)} subscriptions of ours are no longer declared (kept; --prune deletes them):"
        )
        lines.extend(action_line(a) for a in the_plan.orphans)
    if the_plan.ignored:
        lines.append(
            f"{the_plan.ignored} live subscriptions are not syncer's (not recorded, other app or URL): left alone"
        )
    for problem in the_plan.problems:
        lines.append(f"refused: {problem}")
    if not the_plan.has_changes and not the_plan.problems:
        lines.append("Nothing to do: Graph matches the spec.")
    return lines


def render_results(results: Sequence[ActionResult]) -> list[str]:
    """One line per applied action (plus a hint line under a failure), then a summary."""
    lines = []
    for r in results:
        a = r.action
        head = f"  {_SIGNS[a.kind]:>3} {a.kind:<7} {a.resource}" + (f" [{a.name}]" if a.name else "")
        if r.ok:
            details = [f"id {r.subscription_id}"] if r.subscription_id else []
            if r.expires_at:
                details.append(f"expires {_when(r.expires_at)}")
            if r.recreated:
                details.append("recreated: Graph had dropped it")
            lines.append(f"{head}  ok" + (f" ({', '.join(details)})" if details else ""))
        else:
            lines.append(f"{head}  FAILED: {r.error}")
            if r.hint:
                lines.append(f"        hint: {r.hint}")
    failed = sum(1 for r in results if not r.ok)
    lines.append(f"Applied: {len(results) - failed} succeeded, {failed} failed.")
    return lines
