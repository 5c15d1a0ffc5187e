"""Reconcile: make Graph's live subscriptions match the spec, like ``terraform apply``.

``syncer reconcile`` is :func:`reconcile`: under the database lock (so a deploy and the scheduler
never both create a subscription) it lists the live subscriptions, reads our table, expands fan-outs,
plans, and unless it is a dry run applies the plan. The worker calls :func:`run` on its schedule, and
:func:`repair` for a lifecycle event; it finds all three by name on this package.

The package, following the data:

- :mod:`~syncer.reconcile.fanout`: which users a ``for_each`` declaration stands for, asked of Graph;
- :mod:`~syncer.reconcile.desired`: what the spec asks Graph for, one subscription per expanded user;
- :mod:`~syncer.reconcile.plan`: the plan, a pure function of desired, live and recorded state;
- :mod:`~syncer.reconcile.actions`: the plan as a value (its actions and their kinds);
- :mod:`~syncer.reconcile.quotas`: Graph's subscription quotas, checked on the state a plan would leave;
- :mod:`~syncer.reconcile.apply`: the plan carried out through ``$batch``, in phases;
- :mod:`~syncer.reconcile.envelopes`: those calls in envelopes of 20, a quarter of the tenant's budget at a time;
- :mod:`~syncer.reconcile.records`: ``syncer_subscriptions``, the only place a clientState lives;
- :mod:`~syncer.reconcile.lifecycle`: repairs for ``reauthorizationRequired`` and ``subscriptionRemoved``;
- :mod:`~syncer.reconcile.report`: how a plan and its results read to a person, or as JSON.

A clientState is never printed, logged or put in an exception: it lives in the table only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from syncer import applied as applied_spec
from syncer import locks
from syncer.errors import LockTimeout
from syncer.reconcile import apply, plan
from syncer.reconcile.actions import Plan
from syncer.reconcile.apply import ActionResult, Clock, Outcome, graph_for, graphs_for, utcnow
from syncer.reconcile.desired import Expansion, desired_from_spec
from syncer.reconcile.fanout import expand
from syncer.reconcile.lifecycle import reauthorize, recreate, repair
from syncer.reconcile.records import client_state_of, load_recorded
from syncer.reconcile.report import action_line, render_plan, render_results

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient
    from syncer.spec import Spec

__all__ = [
    "ActionResult",
    "Outcome",
    "action_line",
    "client_state_of",
    "graphs_for",
    "make_plan",
    "reauthorize",
    "reconcile",
    "recreate",
    "render_plan",
    "render_results",
    "repair",
    "run",
]

log = logging.getLogger("syncer.reconcile")


def make_plan(
    spec: Spec,
    graphs: Mapping[str, GraphClient],
    engine: Engine,
    *,
    now: datetime,
    prune: bool = False,
) -> Plan:
    """Read everything the planner needs (live subscriptions, our table, fan-out) and plan."""
    spec = spec.resolve_emulator()
    tenant_ids = [t.tenant_id for t in spec.tenants]
    live = {tenant_id: graph_for(graphs, tenant_id).subscriptions.list() for tenant_id in tenant_ids}
    recorded = load_recorded(engine, tenant_ids=tenant_ids)
    expansions: dict[str, Expansion] = expand(spec, graphs)
    desired = desired_from_spec(spec, expansions)
    app_ids = {t.tenant_id: t.client_id for t in spec.tenants}
    own_urls = [u for u in (spec.receiver.notification_url, spec.receiver.lifecycle_url) if u]
    return plan.plan(
        desired,
        live,
        recorded,
        now,
        prune=prune,
        app_ids=app_ids,
        own_urls=own_urls,
        expansions=list(expansions.values()),
    )


def reconcile(
    spec: Spec,
    *,
    graphs: Mapping[str, GraphClient] | None = None,
    engine: Engine | None = None,
    dry_run: bool = False,
    prune: bool = False,
    clock: Clock = utcnow,
    lock_timeout: float | None = 300.0,
    on_wait: Callable[[locks.LockInfo | None], None] | None = None,
) -> Outcome:
    """``syncer reconcile``: plan, and unless *dry_run* apply, holding the reconcile lock throughout."""
    from syncer.database import create_engine

    spec = spec.resolve_emulator()
    own_graphs = graphs is None
    own_engine = engine is None
    graphs = graphs if graphs is not None else graphs_for(spec)
    engine = engine if engine is not None else create_engine(spec.database_url)
    try:
        if dry_run:
            # Reads only: no lock, so a dry run never waits behind (or blocks) a real one.
            return Outcome(make_plan(spec, graphs, engine, now=clock(), prune=prune))
        with locks.hold(
            engine,
            locks.RECONCILE_LOCK,
            holder=locks.default_holder("reconcile"),
            timeout=lock_timeout,
            on_wait=on_wait,
        ):
            the_plan = make_plan(spec, graphs, engine, now=clock(), prune=prune)
            if the_plan.problems:
                return Outcome(the_plan)
            if spec.fingerprint:
                # Before the first create: a worker still on an older spec stops before it could meet
                # (and drop, as unknown) a notification of a subscription this run creates.
                with engine.begin() as connection:
                    applied_spec.record(connection, spec.fingerprint, by="reconcile", path=str(spec.path))
            return Outcome(the_plan, apply.apply(the_plan, graphs, engine, clock=clock), applied=True)
    finally:
        if own_graphs:
            for graph in graphs.values():
                graph.close()
        if own_engine:
            engine.dispose()




def run(
    spec: Spec,
    *,
    engine: Engine | None = None,
    graphs: Mapping[str, GraphClient] | None = None,
    clock: Clock = utcnow,
    lock_timeout: float | None = 30.0,
) -> Outcome | None:
    """The worker's periodic reconcile: apply, never prune; None when another reconcile holds the lock."""
    try:
        outcome = reconcile(spec, engine=engine, graphs=graphs, clock=clock, lock_timeout=lock_timeout)
    except LockTimeout as error:
        log.info("reconcile skipped, another one is running: %s", error)
        return None
    for problem in outcome.plan.problems:
        log.error("reconcile refused: %s", problem)
    for result in outcome.failed:
        log.error("reconcile %s %s failed: %s", result.action.kind, result.action.resource, result.error)
    return outcome
