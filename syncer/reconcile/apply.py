"""Applying a reconcile plan: Graph calls (batched), in phases, each result recorded in our table.

:mod:`syncer.reconcile.plan` decides; this module does. :func:`apply` carries out a plan in phases,
each through ``$batch`` (20 calls per envelope, a few envelopes at a time, each envelope's results recorded
as it comes back: :mod:`syncer.reconcile.envelopes`):

1. deletes (prune, and the first half of replace); a 404 means already gone, which is fine;
2. creates (create, the second half of replace), each with a fresh random clientState that is
   written to ``syncer_subscriptions`` as soon as Graph confirms, for the receiver to check;
3. PATCHes (renew, update, adopt-and-renew); a 404 here means Graph dropped the subscription, so it
   is created anew in a last phase (the documented advice: https://learn.microsoft.com/en-us/graph/change-notifications-lifecycle-events).

A clientState is never printed, logged or put in an exception: it lives in the table only.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy.engine import Engine

from syncer.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    GraphError,
    NotFoundError,
    ReconcileError,
)
from syncer.graph.batch import BatchRequest, BatchResult
from syncer.graph.subscriptions import LiveSubscription
from syncer.graph.times import format_datetime
from syncer.reconcile.actions import Action, Kind, Plan
from syncer.reconcile.desired import Desired
from syncer.reconcile.envelopes import run as _run
from syncer.reconcile.envelopes import send_all
from syncer.reconcile.records import delete_rows, record_created, record_patches, relink_rows, row_values

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient
    from syncer.spec import Spec

log = logging.getLogger("syncer.reconcile")

CLIENT_STATE_BYTES = 48
"""secrets.token_urlsafe(48) is 64 characters: well inside Graph's 128, and 384 bits of secret."""

VALIDATION_HINT = (
    "Graph could not validate {url}: is the receiver running (syncer serve or syncer run) and reachable from Graph? "
    "The URL must be public HTTPS (http only for a local emulator) and answer the validationToken echo "
    "with 200 text/plain within 10 seconds."
)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(UTC)


def new_client_state() -> str:
    """A fresh random clientState (URL-safe, 64 characters)."""
    return secrets.token_urlsafe(CLIENT_STATE_BYTES)


@dataclass
class ActionResult:
    """What applying one action did. ``subscription_id`` is the subscription that now serves it."""

    action: Action
    ok: bool
    subscription_id: str | None = None
    expires_at: datetime | None = None
    error: str | None = None
    hint: str | None = None
    recreated: bool = False  # a PATCH found the subscription gone and a new one was created

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no secret)."""
        doc = self.action.to_json()
        doc.update(
            {
                "ok": self.ok,
                "result_subscription_id": self.subscription_id,
                "result_expires_at": format_datetime(self.expires_at) if self.expires_at else None,
                "error": self.error,
                "hint": self.hint,
                "recreated": self.recreated,
            }
        )
        return doc


@dataclass
class Outcome:
    """A reconcile run: its plan and, unless it was a dry run, one result per changing action."""

    plan: Plan
    results: list[ActionResult] = field(default_factory=list)
    applied: bool = False

    @property
    def failed(self) -> list[ActionResult]:
        """Results that did not succeed."""
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        """No problem refused the plan and no action failed."""
        return not self.plan.problems and not self.failed

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the plan, and the results when applied."""
        doc = self.plan.to_json()
        doc["applied"] = self.applied
        doc["ok"] = self.ok
        doc["results"] = [r.to_json() for r in self.results]
        return doc


# --- Graph calls ------------------------------------------------------------------------------------------------


def _sub_path(subscription_id: str) -> str:
    return f"/subscriptions/{quote(subscription_id, safe='')}"


def _create_request(d: Desired, expires: datetime, client_state: str, rid: str) -> BatchRequest:
    body: dict[str, Any] = {
        "changeType": ",".join(d.change_types),
        "notificationUrl": d.notification_url,
        "resource": d.resource,
        "expirationDateTime": format_datetime(expires),
        "clientState": client_state,
    }
    if d.lifecycle_url:
        body["lifecycleNotificationUrl"] = d.lifecycle_url
    if d.query_options:
        body["notificationQueryOptions"] = d.query_options
    if d.include_resource_data:
        body["includeResourceData"] = True
        body["encryptionCertificate"] = d.encryption_certificate
        body["encryptionCertificateId"] = d.encryption_certificate_id
    return BatchRequest("POST", "/subscriptions", body=body, id=rid)


def graph_for(graphs: Mapping[str, GraphClient], tenant_id: str) -> GraphClient:
    graph = graphs.get(tenant_id)
    if graph is None:
        raise ReconcileError(f"no Graph client for tenant {tenant_id}")
    return graph


def graphs_for(spec: Spec, **kwargs: Any) -> dict[str, GraphClient]:
    """One Graph client per tenant of *spec*, keyed by tenant id."""
    from syncer.graph.client import GraphClient

    spec = spec.resolve_emulator()
    return {t.tenant_id: GraphClient.from_spec(spec, t.name, **kwargs) for t in spec.tenants}


def _by_tenant_pairs(
    pairs: Sequence[tuple[Action, ActionResult]],
) -> dict[str, list[tuple[Action, ActionResult]]]:
    out: dict[str, list[tuple[Action, ActionResult]]] = {}
    for pair in pairs:
        out.setdefault(pair[0].tenant_id, []).append(pair)
    return out


def _by_tenant(actions: Sequence[Action]) -> dict[str, list[Action]]:
    out: dict[str, list[Action]] = {}
    for action in actions:
        out.setdefault(action.tenant_id, []).append(action)
    return out


def hint_for(error: GraphError, action: Action) -> str | None:
    """What the user can do about *error*, when we can tell."""
    d = action.desired
    text = f"{error.code or ''} {error.graph_message}".lower()
    if isinstance(error, BadRequestError) and ("validation" in text or "notificationurl" in text):
        return VALIDATION_HINT.format(url=d.notification_url if d else "the notification URL")
    if isinstance(error, ForbiddenError):
        if "quota" in text or "limit" in text or "maximum" in text:
            return "a Graph quota is reached: prune subscriptions or spread them over apps"
        permission = d.resource_type.permission if d else "the resource's read permission"
        return f"does the app have the application permission {permission}, with admin consent?"
    if isinstance(error, ConflictError):
        return (
            "Graph already has a subscription of this app for this resource and change types "
            "(another deployment with another notification URL?); run with --prune, or delete it"
        )
    if isinstance(error, NotFoundError) and action.kind in (Kind.CREATE, Kind.REPLACE):
        return "the resource does not exist (or the mailbox is not enabled for REST)"
    return None


def failed_result(action: Action, error: GraphError | None, fallback: str = "failed") -> ActionResult:
    if error is None:
        return ActionResult(action, ok=False, error=fallback)
    return ActionResult(action, ok=False, error=str(error), hint=hint_for(error, action))


# --- apply ------------------------------------------------------------------------------------------------------


def apply(
    the_plan: Plan,
    graphs: Mapping[str, GraphClient],
    engine: Engine,
    *,
    clock: Clock = utcnow,
) -> list[ActionResult]:
    """Carry out *the_plan*; one result per changing action (keep is not reported). Refuses a plan with problems."""
    if the_plan.problems:
        raise ReconcileError(
            "refusing to apply a plan with problems:\n" + "\n".join(f"  {p}" for p in the_plan.problems)
        )
    results: dict[int, ActionResult] = {}
    index = {id(a): i for i, a in enumerate(the_plan.actions)}

    def done(action: Action, result: ActionResult) -> None:
        results[index[id(action)]] = result

    # Phase 1: deletes. A replace whose delete fails does not go on to create (Graph would say 409).
    # Replaces that move to another resource or change types create first (no 409 possible), so a
    # failed create leaves the old subscription working.
    to_delete = the_plan.of_kind(Kind.PRUNE) + [
        a for a in the_plan.of_kind(Kind.REPLACE) if not a.create_first
    ]
    deleted_ok: set[int] = set()
    for tenant_id, actions in _by_tenant(to_delete).items():
        graph = graph_for(graphs, tenant_id)
        requests = [
            BatchRequest("DELETE", _sub_path(a.subscription_id or ""), id=str(i))
            for i, a in enumerate(actions, 1)
        ]
        for action, result in zip(actions, _run(graph, requests), strict=True):
            if result.ok or isinstance(result.error, NotFoundError):
                deleted_ok.add(id(action))
                if action.kind == Kind.PRUNE:
                    done(action, ActionResult(action, ok=True, subscription_id=action.subscription_id))
            else:
                done(action, failed_result(action, result.error))
        delete_rows(
            engine, [a.subscription_id or "" for a in actions if id(a) in deleted_ok and a.kind == Kind.PRUNE]
        )

    # Phase 2: creates (and the second half of each replace whose delete worked, or the first half of
    # a create-first replace).
    to_create = the_plan.of_kind(Kind.CREATE) + [
        a for a in the_plan.of_kind(Kind.REPLACE) if id(a) in deleted_ok or a.create_first
    ]
    retire: list[tuple[Action, ActionResult]] = []
    for action, created in create_subscriptions(to_create, graphs, engine, clock=clock):
        done(action, created)
        if action.kind == Kind.REPLACE and action.create_first and created.ok:
            retire.append((action, created))

    # Phase 2b: the old halves of create-first replaces, now that their successors exist.
    for tenant_id, pairs in _by_tenant_pairs(retire).items():
        graph = graph_for(graphs, tenant_id)
        requests = [
            BatchRequest("DELETE", _sub_path(a.subscription_id or ""), id=str(i))
            for i, (a, _r) in enumerate(pairs, 1)
        ]
        for (action, created), result in zip(pairs, _run(graph, requests), strict=True):
            if not (result.ok or isinstance(result.error, NotFoundError)):
                created.ok = False
                created.error = (
                    f"created {created.subscription_id}, but the old subscription {action.subscription_id} "
                    f"could not be deleted: {result.error}"
                )
                created.hint = "it stays live until it expires; `syncer reconcile --prune` deletes it"

    # Phase 3: PATCHes; 404 = Graph dropped it: recreate.
    to_patch = the_plan.of_kind(Kind.RENEW, Kind.UPDATE) + [
        a for a in the_plan.of_kind(Kind.ADOPT) if a.writes_graph
    ]
    gone: list[Action] = []
    for tenant_id, actions in _by_tenant(to_patch).items():

        def patch(i: int, actions: list[Action] = actions) -> BatchRequest:
            a = actions[i]
            body: dict[str, Any] = {}
            if a.new_expires_at is not None:
                body["expirationDateTime"] = format_datetime(a.new_expires_at)
            if a.kind == Kind.UPDATE and a.desired is not None:
                if "notificationUrl" in a.changes:
                    body["notificationUrl"] = a.desired.notification_url
                if "encryptionCertificate" in a.changes:
                    body["encryptionCertificate"] = a.desired.encryption_certificate
                    body["encryptionCertificateId"] = a.desired.encryption_certificate_id
            return BatchRequest("PATCH", _sub_path(a.subscription_id or ""), body=body, id=str(i + 1), idempotent=True)

        def record(first: int, results: list[BatchResult], actions: list[Action] = actions) -> None:
            # Each envelope's renewals are recorded as it comes back (see create_subscriptions).
            patched: list[tuple[Action, LiveSubscription]] = []
            for action, result in zip(actions[first : first + len(results)], results, strict=True):
                if result.ok and isinstance(result.body, dict):
                    live = LiveSubscription.from_json(result.body, keep_raw=False)
                    patched.append((action, live))
                    done(action, ActionResult(action, ok=True, subscription_id=live.id, expires_at=live.expiration))
                elif isinstance(result.error, NotFoundError):
                    gone.append(action)
                else:
                    done(action, failed_result(action, result.error))
            record_patches(engine, patched, now=utcnow())

        send_all(graph_for(graphs, tenant_id), len(actions), patch, record)

    # Adoptions that need no Graph call: only our row changes.
    quiet_adopts = [a for a in the_plan.of_kind(Kind.ADOPT) if not a.writes_graph]
    relink_rows(engine, quiet_adopts, now=utcnow())
    for action in quiet_adopts:
        done(
            action,
            ActionResult(
                action, ok=True, subscription_id=action.subscription_id, expires_at=action.expires_at
            ),
        )

    # Phase 4: recreate what a PATCH found gone.
    if gone:
        delete_rows(engine, [a.subscription_id or "" for a in gone])
        for tenant_id, actions in _by_tenant(gone).items():
            # Gone, says Graph; should a copy linger anyway, creating beside it would be a 409. 404s are fine.
            graph = graph_for(graphs, tenant_id)
            _run(
                graph,
                [
                    BatchRequest("DELETE", _sub_path(a.subscription_id or ""), id=str(i))
                    for i, a in enumerate(actions, 1)
                ],
            )
        now = clock()
        fresh = [replace(a, new_expires_at=now + a.desired.lifetime) if a.desired else a for a in gone]
        for original, (_fresh, again) in zip(
            gone, create_subscriptions(fresh, graphs, engine, clock=clock), strict=True
        ):
            again.action = original
            again.recreated = again.ok
            done(original, again)

    forget = the_plan.of_kind(Kind.FORGET)
    delete_rows(engine, [a.subscription_id or "" for a in forget])
    for action in forget:
        done(action, ActionResult(action, ok=True))
    return [results[i] for i in sorted(results)]


def create_subscriptions(
    actions: Sequence[Action], graphs: Mapping[str, GraphClient], engine: Engine, *, clock: Clock
) -> list[tuple[Action, ActionResult]]:
    """POST each action's desired subscription with a fresh clientState; one result per action, in order.

    Each envelope's successes are recorded (with their clientStates) as soon as it comes back: a reconcile
    stopped half-way through 30,000 creates keeps the secret of every subscription Graph already made.
    """
    out: list[tuple[Action, ActionResult] | None] = [None] * len(actions)
    positions = {id(a): i for i, a in enumerate(actions)}
    for tenant_id, group in _by_tenant(actions).items():
        graph = graph_for(graphs, tenant_id)
        now = clock()
        states: dict[int, str] = {}

        def make(i: int, group: list[Action] = group, states: dict[int, str] = states, now: datetime = now) -> BatchRequest:
            a = group[i]
            assert a.desired is not None, "create and replace actions carry their desired subscription"
            states[i] = new_client_state()
            return _create_request(a.desired, a.new_expires_at or now + a.desired.lifetime, states[i], str(i + 1))

        def record(first: int, results: list[BatchResult], group: list[Action] = group,
                   states: dict[int, str] = states) -> None:
            rows, replaced = [], []
            for i, result in enumerate(results, first):
                action, state = group[i], states.pop(i)
                if result.ok and isinstance(result.body, dict):
                    live = LiveSubscription.from_json(result.body, keep_raw=False)
                    assert action.desired is not None
                    rows.append(row_values(action.desired, live, state, utcnow()))
                    if action.kind == Kind.REPLACE and action.subscription_id:
                        replaced.append(action.subscription_id)
                    created = ActionResult(action, ok=True, subscription_id=live.id, expires_at=live.expiration)
                else:
                    created = failed_result(action, result.error)
                out[positions[id(action)]] = (action, created)
            record_created(engine, rows, replacing=replaced)

        send_all(graph, len(group), make, record)
    return [pair for pair in out if pair is not None]
