"""Admin API of notification delivery: what the emulator delivered, and notification faults on demand.

No authentication (it is the test harness), JSON in and out, everything under ``/_emulator/``:

``GET /_emulator/delivery?limit=100&since=0``
    Counters (``delivered``, ``deliveredPosts``, ``attempts``, ``failedAttempts``, ``retried``, ``dropped`` with
    ``droppedBy`` reason: ``retryWindow`` | ``endpointDrop`` | ``fault`` | ``subscriptionGone``, ``duplicated``,
    ``delayed``, ``reordered``, ``lifecycleQueued``, ``lifecycleSkipped``, ``missedQueued``), ``pending``,
    ``endpoints`` (per URL: ``mode`` normal/slow/drop, ``mode_until``, the current window's counts, posts,
    delivered, failures, drops, ``lastStatus``), ``faults`` and ``log``: the last ``limit`` entries with
    ``seq > since``, each ``{seq, time, url, kind, attempt, status, outcome: delivered|retry|dropped, elapsedMs,
    count, body}`` where ``body`` is exactly what the POST carried (``status`` is an int, ``"timeout"`` or
    ``"connectionError"``).
``POST /_emulator/delivery/faults`` ``{"drop": 0.1, "duplicate": 0.0, "reorder": 0.0, "delay": 0.0,
  "delaySeconds": 5, "reorderSeconds": 0.2}``
    Set notification fault rates (0..1; omitted keys keep their value). Draws come from an RNG seeded by the
    emulator seed. Injected drops are silent (no ``missed``), like losses Graph does not know about.
    ``DELETE`` clears them; ``GET`` shows them.
``POST /_emulator/delivery/wait`` ``{"timeoutSeconds": 10, "includeScheduled": true}``
    Block until nothing is queued or in flight (``includeScheduled: false``: nothing is *due* now, so retries
    waiting on a frozen clock do not count). Answers ``{"idle": bool}``.
``GET /_emulator/subscriptions``
    Every live subscription of every app (clientState included, plus ``tenantId`` and ``heldSince``).
``POST /_emulator/subscriptions/<id>/lifecycle`` ``{"lifecycleEvent": "reauthorizationRequired", "hold": false}``
    Fire a lifecycle event now (``subscriptionRemoved`` also deletes the subscription). ``202 {"sent": bool}``;
    ``sent`` is false when the subscription has no lifecycleNotificationUrl. With ``"hold": true`` the
    subscription's access has lapsed: its notifications are held (``heldNow`` in the report) until the app
    reauthorizes or renews it; held ones older than the retry window are lost (``droppedBy.heldTooLong``, with
    ``missed``). The same happens on its own when the app loses the permission the resource needs
    (``PATCH /_emulator/apps/<id> {"roles": [...]}``).
``DELETE /_emulator/subscriptions/<id>``
    Graph removes the subscription early: it is deleted and ``subscriptionRemoved`` is sent.
``POST /_emulator/delivery/burst`` ``{"count": 10000, "tenantId": "..."}``
    Update ``count`` existing users (their ``jobTitle``) through the store in one go, each write firing the change
    hook exactly as a PATCH would: a change source faster than HTTP writes, for throughput tests and benchmarks.
    Answers ``{"changed": n, "seconds": s}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.clock import iso_ts
from syncer.emulator.delivery_policy import LIFECYCLE_EVENTS, NotificationFaults
from syncer.emulator.errors import graph_error
from syncer.emulator.families.directory.users import users_of

if TYPE_CHECKING:
    from syncer.emulator.delivery import Dispatcher
    from syncer.emulator.subscription_model import SubscriptionRegistry

admin_bp = Blueprint("emulator_delivery_admin", __name__)


def _dispatcher() -> Dispatcher:
    dispatcher = emulator_state().delivery
    assert dispatcher is not None, "create_app installs the dispatcher before serving this blueprint"
    return dispatcher


def _registry() -> SubscriptionRegistry:
    return emulator_state().subscriptions


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str) -> Response:
    return graph_error(status, "BadRequest" if status == 400 else "ResourceNotFound", message)


def _body() -> dict[str, Any] | None:
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


@admin_bp.get("/_emulator/delivery")
def delivery_report() -> Response:
    """Counters, endpoints, faults and the POST log."""
    try:
        limit = int(request.args.get("limit", "100"))
        since = int(request.args.get("since", "0"))
    except ValueError:
        return _error(400, "limit and since must be integers")
    return _json(_dispatcher().report(log_limit=limit, since=since))


_FAULT_FIELDS = {
    "drop": "drop", "duplicate": "duplicate", "reorder": "reorder", "delay": "delay",
    "delaySeconds": "delay_s", "reorderSeconds": "reorder_s",
}


@admin_bp.route("/_emulator/delivery/faults", methods=["GET", "POST", "DELETE"])
def delivery_faults() -> Response:
    """Show, set or clear notification fault rates."""
    dispatcher = _dispatcher()
    if request.method == "DELETE":
        dispatcher.set_faults(NotificationFaults())
    elif request.method == "POST":
        body = _body()
        if body is None:
            return _error(400, "body must be a JSON object")
        values = dispatcher.faults.to_json()
        for name, value in body.items():
            if name not in _FAULT_FIELDS:
                return _error(400, f"unknown fault '{name}'; expected one of {sorted(_FAULT_FIELDS)}")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                return _error(400, f"'{name}' must be a non-negative number")
            if name in ("drop", "duplicate", "reorder", "delay") and value > 1:
                return _error(400, f"'{name}' is a rate between 0 and 1")
            values[name] = float(value)
        dispatcher.set_faults(NotificationFaults(**{_FAULT_FIELDS[k]: v for k, v in values.items()}))
    return _json(dispatcher.faults.to_json())


@admin_bp.post("/_emulator/delivery/wait")
def delivery_wait() -> Response:
    """Block until delivery is idle (or the timeout passes)."""
    body = _body()
    if body is None:
        return _error(400, "body must be a JSON object")
    timeout = body.get("timeoutSeconds", 10)
    if not isinstance(timeout, int | float) or timeout < 0:
        return _error(400, "timeoutSeconds must be a non-negative number")
    idle = _dispatcher().wait_idle(float(timeout), include_scheduled=bool(body.get("includeScheduled", True)))
    return _json({"idle": idle})


@admin_bp.get("/_emulator/subscriptions")
def all_subscriptions() -> Response:
    """Every live subscription, any app."""
    base = base_url()
    values = []
    for subscription in _registry().all():
        item = subscription.to_json(base_url=base)
        item.pop("@odata.context")
        item["tenantId"] = subscription.tenant_id
        item["heldSince"] = iso_ts(subscription.held_since) if subscription.held_since is not None else None
        values.append(item)
    return _json({"value": values})


@admin_bp.post("/_emulator/subscriptions/<subscription_id>/lifecycle")
def fire_lifecycle(subscription_id: str) -> Response:
    """Send a lifecycle event for a subscription now."""
    subscription = _registry().get(subscription_id)
    if subscription is None:
        return _error(404, f"no subscription {subscription_id}")
    body = _body()
    if body is None:
        return _error(400, "body must be a JSON object")
    event = body.get("lifecycleEvent", body.get("event"))
    if event not in LIFECYCLE_EVENTS:
        return _error(400, f"lifecycleEvent must be one of {list(LIFECYCLE_EVENTS)}")
    hold = body.get("hold", False)
    if not isinstance(hold, bool) or (hold and event != "reauthorizationRequired"):
        return _error(400, "hold is a boolean, only with reauthorizationRequired")
    dispatcher = _dispatcher()
    if event == "subscriptionRemoved":
        sent = dispatcher.remove_early(subscription)
    elif hold:
        sent = dispatcher.hold(subscription) and subscription.lifecycle_url is not None
    else:
        sent = dispatcher.send_lifecycle(subscription, str(event))
    return _json({"sent": sent}, 202)


@admin_bp.delete("/_emulator/subscriptions/<subscription_id>")
def remove_subscription(subscription_id: str) -> Response:
    """Graph drops the subscription on its own: delete it and send subscriptionRemoved."""
    subscription = _registry().get(subscription_id)
    if subscription is None:
        return _error(404, f"no subscription {subscription_id}")
    sent = _dispatcher().remove_early(subscription)
    return _json({"removed": True, "lifecycleSent": sent})


@admin_bp.post("/_emulator/delivery/burst")
def delivery_burst() -> Response:
    """Update many existing users at once (each write notifies like a PATCH)."""
    state = emulator_state()
    body = _body()
    if body is None:
        return _error(400, "body must be a JSON object")
    count = body.get("count", 1000)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return _error(400, "count must be a non-negative integer")
    tenant_id = str(body.get("tenantId") or state.config.tenant_id)
    if tenant_id not in state.tenants:
        return _error(404, f"no tenant {tenant_id}")
    started = time.perf_counter()
    users = users_of(state.store.tenant(tenant_id))
    with state.lock:
        emitted, _, _, _ = users.walk(since=0, hwm=1 << 62, pos=None, sub=0, limit=count, include_removed=False)
    for n, entry in enumerate(emitted):
        item = dict(entry.item or {"id": entry.item_id})
        item["jobTitle"] = f"burst {n}"
        state.store.put(users, entry.item_id, item, change_type="updated")
    return _json({"changed": len(emitted), "seconds": round(time.perf_counter() - started, 4)})
