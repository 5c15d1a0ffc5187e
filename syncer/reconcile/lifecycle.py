"""Lifecycle repairs: what the worker does when Graph sends a lifecycle event for one subscription.

- ``reauthorizationRequired`` → :func:`reauthorize`: renew when due (a renewal reauthorizes too),
  otherwise ``POST /subscriptions/{id}/reauthorize``; a 404 means Graph dropped it: recreate.
- ``subscriptionRemoved`` (or a 404 while renewing) → :func:`recreate`: a new subscription with a fresh
  clientState, recorded in place of the old row. Nothing was delivered in the gap: the worker marks
  the scope for a resync.

Both hold the reconcile lock, so a repair never races a reconcile into a duplicate. :func:`repair`
is the worker's entry point (``syncer.worker.jobs`` finds it as ``syncer.reconcile.repair``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from syncer import locks
from syncer.errors import GraphError, LockTimeout, NotFoundError, ReconcileError
from syncer.reconcile.actions import Action, Kind
from syncer.reconcile.apply import (
    ActionResult,
    Clock,
    create_subscriptions,
    failed_result,
    graph_for,
    graphs_for,
    utcnow,
)
from syncer.reconcile.desired import Desired, Expansion, desired_from_spec
from syncer.reconcile.plan import Recorded
from syncer.reconcile.records import load_recorded, record_patches
from syncer.resolve import needs_resolution
from syncer.resources import match_resource

if TYPE_CHECKING:
    from datetime import datetime

    from syncer.graph.client import GraphClient
    from syncer.spec import Spec

log = logging.getLogger("syncer.reconcile")


def _row(engine: Engine, subscription_id: str) -> Recorded:
    for row in load_recorded(engine):
        if row.subscription_id == subscription_id:
            return row
    raise ReconcileError(f"subscription {subscription_id} is not in syncer's table: nothing to repair")


def _desired_for_row(spec: Spec, row: Recorded) -> Desired:
    try:
        declared = spec.subscription(row.name)
    except Exception as error:  # ConfigError: the declaration is gone
        raise ReconcileError(
            f"subscription {row.subscription_id} belongs to {row.name!r}, which is no longer declared; "
            "run `syncer reconcile --prune`"
        ) from error
    expansions = {}
    if declared.fan_out is None and needs_resolution(declared):
        # The row holds the path the declaration resolved to (syncer.resolve): recreate that one.
        tenant_id = spec.tenant(declared.tenant).tenant_id
        expansions[row.name] = Expansion(row.name, tenant_id, "recorded", (row.resource,), resources=(row.resource,))
    if declared.resource_type.key == "todoTask" and "{list}" in declared.resource:
        # One subscription per To Do list: the recorded resource names the user and the list.
        matched = match_resource(row.resource)
        names = ("user", "list") if declared.fan_out is not None else ("list",)
        binding = tuple((n, matched[1][n]) for n in names if matched and n in matched[1])
        if len(binding) != len(names):
            raise ReconcileError(f"cannot tell which To Do list {row.resource!r} of {row.name!r} is for")
        tenant_id = spec.tenant(declared.tenant).tenant_id
        expansions[row.name] = Expansion(row.name, tenant_id, "recorded", ("/".join(v for _, v in binding),), (binding,))
    elif declared.fan_out is not None:
        matched = match_resource(row.resource)
        tenant_id = spec.tenant(declared.tenant).tenant_id
        if declared.fan_out.over_teams:
            names = ("team", "channel") if declared.fan_out.channels else ("team",)
            binding = tuple((n, matched[1][n]) for n in names if matched and n in matched[1])
            if len(binding) != len(names):
                raise ReconcileError(f"cannot tell which team {row.resource!r} of {row.name!r} is for")
            label = "/".join(v for _, v in binding)
            expansions[row.name] = Expansion(row.name, tenant_id, "recorded", (label,), (binding,))
        else:
            user = matched[1].get("user") if matched else None
            if not user:
                raise ReconcileError(f"cannot tell which user {row.resource!r} of {row.name!r} is for")
            expansions[row.name] = Expansion(row.name, tenant_id, "recorded", (user,))
    single = replace(spec, subscriptions=(declared,))
    return desired_from_spec(single, expansions)[0]


def _on_row(
    kind: Kind,
    row: Recorded,
    d: Desired,
    *,
    new_expires_at: datetime | None,
    changes: tuple[str, ...] = (),
    reason: str,
) -> Action:
    """A repair of our *row*: named after the row (what Graph has), planned from its declaration *d*."""
    return Action(
        kind,
        row.tenant_id,
        row.resource,
        name=row.name,
        subscription_id=row.subscription_id,
        expires_at=row.expires_at,
        new_expires_at=new_expires_at,
        changes=changes,
        reason=reason,
        desired=d,
    )


def reauthorize(
    subscription_id: str,
    *,
    spec: Spec,
    graphs: Mapping[str, GraphClient],
    engine: Engine,
    clock: Clock = utcnow,
    lock_timeout: float | None = 60.0,
) -> ActionResult:
    """Answer ``reauthorizationRequired``: renew when due (a renewal reauthorizes), else POST reauthorize.

    A 404 means Graph dropped the subscription: it is recreated.
    """
    spec = spec.resolve_emulator()
    with locks.hold(
        engine, locks.RECONCILE_LOCK, holder=locks.default_holder("reauthorize"), timeout=lock_timeout
    ):
        row = _row(engine, subscription_id)
        d = _desired_for_row(spec, row)
        graph = graph_for(graphs, row.tenant_id)
        now = clock()
        due = row.expires_at - now <= d.renew_before
        action = _on_row(
            Kind.RENEW if due else Kind.KEEP,
            row,
            d,
            new_expires_at=now + d.lifetime if due else None,
            reason="reauthorizationRequired",
        )
        try:
            if due:
                live = graph.subscriptions.update(subscription_id, expiration=now + d.lifetime)
                record_patches(engine, [(action, live)], now=utcnow())
                return ActionResult(action, ok=True, subscription_id=live.id, expires_at=live.expiration)
            graph.subscriptions.reauthorize(subscription_id)
            return ActionResult(action, ok=True, subscription_id=subscription_id, expires_at=row.expires_at)
        except NotFoundError:
            return _recreate_locked(row, d, graphs, engine, clock=clock)
        except GraphError as error:
            return failed_result(action, error)


def recreate(
    subscription_id: str,
    *,
    spec: Spec,
    graphs: Mapping[str, GraphClient],
    engine: Engine,
    clock: Clock = utcnow,
    lock_timeout: float | None = 60.0,
) -> ActionResult:
    """Answer ``subscriptionRemoved`` (or a 404 on renew): create the subscription anew with a fresh clientState.

    The gap has no notifications: the caller should request a delta resync of the scope.
    """
    spec = spec.resolve_emulator()
    with locks.hold(
        engine, locks.RECONCILE_LOCK, holder=locks.default_holder("recreate"), timeout=lock_timeout
    ):
        row = _row(engine, subscription_id)
        return _recreate_locked(row, _desired_for_row(spec, row), graphs, engine, clock=clock)


def _recreate_locked(
    row: Recorded, d: Desired, graphs: Mapping[str, GraphClient], engine: Engine, *, clock: Clock
) -> ActionResult:
    graph = graph_for(graphs, row.tenant_id)
    now = clock()
    action = _on_row(
        Kind.REPLACE, row, d, new_expires_at=now + d.lifetime, changes=("removed by Graph",), reason="recreate"
    )
    try:
        # Removed means gone, but if it is still there a create would be a 409 duplicate.
        graph.subscriptions.delete(row.subscription_id)
    except NotFoundError:
        pass
    except GraphError as error:
        return failed_result(action, error)
    ((_action, result),) = create_subscriptions([action], graphs, engine, clock=clock)
    if result.ok:
        result.recreated = True
    return result


def repair(
    spec: Spec,
    *,
    event: str,
    subscription_id: str,
    engine: Engine,
    graphs: Mapping[str, GraphClient] | None = None,
    clock: Clock = utcnow,
) -> ActionResult | None:
    """A lifecycle event's repair: ``reauthorizationRequired`` → :func:`reauthorize`, ``subscriptionRemoved`` →
    :func:`recreate`. None when there is nothing we can do now (unknown id, lock busy): the next reconcile will."""
    if event == "reauthorizationRequired":
        fix = reauthorize
    elif event == "subscriptionRemoved":
        fix = recreate
    else:
        return None
    own = graphs is None
    clients = graphs if graphs is not None else graphs_for(spec)
    try:
        result = fix(subscription_id, spec=spec, graphs=clients, engine=engine, clock=clock)
    except (ReconcileError, LockTimeout) as error:
        log.warning("%s for %s not repaired now: %s", event, subscription_id, error)
        return None
    finally:
        if own:
            for graph in clients.values():
                graph.close()
    if not result.ok:
        log.error("%s for %s: repair failed: %s", event, subscription_id, result.error)
    return result
