"""The notification dispatcher: what Graph does between a change in the tenant and a POST to your webhook
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks, https://learn.microsoft.com/graph/change-notifications-lifecycle-events, https://learn.microsoft.com/graph/change-notifications-with-resource-data).

The store calls :meth:`Dispatcher.on_change` after every committed write; that only enqueues. One dispatcher
thread matches changes against live subscriptions, builds Graph-shaped ``changeNotification`` items (rich ones
encrypted, :mod:`syncer.emulator.rich`), applies notification faults and the slow/drop state of the target endpoint,
and queues them per notification URL. It then hands batches (several items per POST, one URL each) to a small
worker pool that POSTs them with Graph's budgets: a POST that fails, answers non-2xx or takes too long is retried
with exponential backoff until the retry window is spent, then dropped (and a ``missed`` lifecycle event goes to the
subscription's lifecycle URL). Every decision comes from :mod:`syncer.emulator.delivery_policy`, every item's shape
from :mod:`syncer.emulator.notification_shapes`, every POST leaves through :mod:`syncer.emulator.webhook_endpoint`;
every time is the emulator clock, so tests compress hours into milliseconds with config and ``clock.advance``.

Lifecycle events (``reauthorizationRequired`` as a subscription nears expiry, ``missed`` after drops,
``subscriptionRemoved`` on an early removal) go through the same queues to ``lifecycleNotificationUrl``, and only
there: a subscription without one gets none (current docs).

The admin side (:mod:`syncer.emulator.delivery_admin`) reports counters,
per-endpoint state and a log of every POST, and injects notification faults.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from syncer.emulator.clock import iso_ts
from syncer.emulator.delivery_policy import NotificationFaults, attempt_timeout, next_retry_at
from syncer.emulator.notification_shapes import (
    change_notification,
    lifecycle_notification,
    notified_change_type,
    rich_resource,
)
from syncer.emulator.rich import encrypt_content, validation_token
from syncer.emulator.subscription_model import Subscription, SubscriptionRegistry
from syncer.emulator.webhook_endpoint import Batch, Endpoint, Notification

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import ChangeEvent

__all__ = ["Dispatcher", "NotificationFaults", "install"]



_COUNTERS = (
    "delivered", "deliveredPosts", "attempts", "failedAttempts", "retried", "dropped", "duplicated", "delayed",
    "reordered", "held", "lifecycleQueued", "lifecycleSkipped", "missedQueued",
)


class Dispatcher:
    """Background delivery of one emulator's notifications; see the module docstring."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.config = state.config
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events: deque[ChangeEvent] = deque()
        self._endpoints: dict[str, Endpoint] = {}
        self._batch_seq = itertools.count(1)
        self._log_seq = itertools.count(1)
        self._log: deque[dict[str, Any]] = deque()
        self._log_items = 0
        # Its own RNG, so faults do not depend on how many ids the rest of the emulator drew.
        self._rng = random.Random(f"{self.config.seed}:notifications")
        self.faults = NotificationFaults()
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.dropped_by: dict[str, int] = {}
        self._last_missed: dict[str, float] = {}
        #: subscription id -> (held-at time, notification) while the app must reauthorize
        self._held: dict[str, list[tuple[float, Notification]]] = {}
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self._last_sweep = 0.0
        self._routing = 0

    # --- lifecycle of the dispatcher itself ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and the worker pool (idempotent; called on the first subscription)."""
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._pool = ThreadPoolExecutor(max_workers=self.config.delivery_workers, thread_name_prefix="emu-deliver")
            self._thread = threading.Thread(target=self._run, name="emu-dispatcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering: the thread ends, in-flight POSTs finish (bounded by their timeouts), sessions close."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(timeout)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for endpoint in self._endpoints.values():
                endpoint.session.close()

    def reset(self) -> None:
        """Forget queues, counters, the log and faults (admin reset)."""
        with self._lock:
            self._events.clear()
            for endpoint in self._endpoints.values():
                endpoint.fresh.drain()
                endpoint.retries.drain()
                endpoint.session.close()
            self._endpoints.clear()
            self._log.clear()
            self._log_items = 0
            self.counters = dict.fromkeys(_COUNTERS, 0)
            self.dropped_by.clear()
            self._last_missed.clear()
            self._held.clear()
            self.faults = NotificationFaults()

    # --- inputs ------------------------------------------------------------------------------------------------

    @property
    def _registry(self) -> SubscriptionRegistry:
        return self.state.subscriptions

    def on_change(self, event: ChangeEvent) -> None:
        """The store's change hook: enqueue only (the store's writer must never wait on delivery)."""
        if len(self._registry) == 0:
            return
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def subscription_added(self, subscription: Subscription) -> None:
        """A subscription exists: make sure the dispatcher runs."""
        self.start()

    def forget(self, subscriptions: Iterable[Subscription]) -> None:
        """Subscriptions are gone; their queued change notifications are discarded at send time."""
        with self._cond:
            for subscription in subscriptions:
                held = self._held.pop(subscription.id, [])
                if held:
                    self._drop([item for _, item in held], reason="subscriptionGone", missed=False)
            self._cond.notify()

    def send_lifecycle(self, subscription: Subscription, event: str) -> bool:
        """Queue a lifecycle event to the subscription's lifecycle URL; False when it has none."""
        with self._cond:
            if subscription.lifecycle_url is None:
                self.counters["lifecycleSkipped"] += 1
                return False
            self._queue_lifecycle_locked(subscription, event)
        self.start()
        return True

    def remove_early(self, subscription: Subscription) -> bool:
        """Graph removes a subscription on its own (admin fault): delete it and send ``subscriptionRemoved``."""
        self._registry.remove(subscription.id)
        self.forget([subscription])
        return self.send_lifecycle(subscription, "subscriptionRemoved")

    def set_faults(self, faults: NotificationFaults) -> None:
        """Replace the notification fault rates."""
        with self._lock:
            self.faults = faults

    # --- reporting ---------------------------------------------------------------------------------------------

    def report(self, *, log_limit: int = 100, since: int = 0) -> dict[str, Any]:
        """Counters, per-endpoint state, faults and the tail of the POST log (the admin API's body)."""
        now = self.state.clock.time()
        with self._lock:
            log = [entry for entry in self._log if entry["seq"] > since]
            return {
                **self.counters,
                "droppedBy": dict(self.dropped_by),
                "pending": len(self._events) + self._routing + sum(len(e.fresh) + len(e.retries) + e.in_flight for e in self._endpoints.values()),
                "heldNow": {sid: len(items) for sid, items in self._held.items() if items},
                "endpoints": {url: e.snapshot(now) for url, e in self._endpoints.items()},
                "faults": self.faults.to_json(),
                "log": log[-log_limit:] if log_limit > 0 else [],
            }

    def wait_idle(self, timeout: float = 10.0, *, include_scheduled: bool = True) -> bool:
        """Block until nothing is queued or in flight (or, with ``include_scheduled=False``, nothing is *due*)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._idle(include_scheduled):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def _idle(self, include_scheduled: bool) -> bool:
        if self._events or self._routing:
            return False
        now = self.state.clock.time()
        for endpoint in self._endpoints.values():
            if endpoint.in_flight:
                return False
            for queue in (endpoint.fresh, endpoint.retries):
                due = queue.next_due()
                if due is not None and (include_scheduled or due <= now):
                    return False
        return True

    # --- the dispatcher thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        tick = self.config.delivery_tick_s
        while True:
            with self._cond:
                if self._stopping:
                    return
                if not self._events:
                    self._cond.wait(tick)
                if self._stopping:
                    return
                events = list(self._events)
                self._events.clear()
                # Taken but not yet queued: wait_idle must not call the dispatcher idle meanwhile.
                self._routing = len(events)
            try:
                for event in events:
                    self._route(event)
                self._housekeeping()
                self._schedule()
            except Exception as exc:  # the dispatcher must survive a bad event
                self._append_log({"outcome": "internalError", "error": repr(exc)[:500]})
            finally:
                with self._cond:
                    self._routing = 0
                    self._cond.notify_all()

    def _endpoint(self, url: str) -> Endpoint:
        """The endpoint record for *url* (caller holds the lock)."""
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            endpoint = Endpoint.open(url, rules=self.config.throttle, pool_size=self.config.delivery_max_in_flight)
            self._endpoints[url] = endpoint
        return endpoint

    def _route(self, event: ChangeEvent) -> None:
        """Turn one change into notification items on the queues of the matching subscriptions' URLs."""
        # Float seconds straight from the clock: a datetime round trip rounds to microseconds and could put an
        # item's due time a hair after a frozen clock's "now", where it would wait for the next advance.
        now = self.state.clock.time()
        now_dt = datetime.fromtimestamp(now, UTC)
        for subscription in self._registry.matching(event.tenant_id, event.collections):
            if subscription.resource_type != event.resource_type or subscription.expiration <= now_dt:
                continue
            change_type = notified_change_type(subscription, event)
            if change_type not in subscription.change_types:
                continue
            narrow = subscription.parsed.spec.deliver
            if narrow is not None and not narrow(self.state, subscription, event):
                continue
            if subscription.held_since is None and not self._app_may_read(subscription):
                self.hold(subscription)
            item = self._build(subscription, event, change_type)
            if subscription.held_since is not None:
                with self._lock:
                    self._held.setdefault(subscription.id, []).append((now, item))
                    self.counters["held"] += 1
            else:
                self._enqueue(item, now)

    def _app_may_read(self, subscription: Subscription) -> bool:
        """Whether the subscribing app still holds a permission the resource needs (an admin may revoke it); for a
        user's subscription, whether the user's sessions were not revoked since it was last authorized."""
        app = self.state.apps.get(subscription.application_id)
        if app is None:
            return False
        if subscription.creator_id != app.service_principal_id:
            with self.state.lock:
                return self.state.grants.delegation_alive(subscription.id, subscription.tenant_id,
                                                          subscription.creator_id)
        return bool(app.roles.intersection(subscription.parsed.spec.permissions))

    def hold(self, subscription: Subscription) -> bool:
        """Pause delivery for *subscription* until it is reauthorized or renewed, and say so with
        ``reauthorizationRequired`` (https://learn.microsoft.com/graph/change-notifications-lifecycle-events). Held notifications older than the retry window are lost."""
        if subscription.held_since is not None:
            return False
        subscription.held_since = self.state.clock.time()
        self.send_lifecycle(subscription, "reauthorizationRequired")
        return True

    def release(self, subscription: Subscription) -> None:
        """The app reauthorized (or renewed): deliver what was held, resume normal delivery."""
        subscription.held_since = None
        now = self.state.clock.time()
        with self._cond:
            for _held_at, item in self._held.pop(subscription.id, []):
                self._endpoint(item.url).fresh.push(item, due=now, kind=item.kind)
            self._cond.notify()

    def _build(self, subscription: Subscription, event: ChangeEvent, change_type: str) -> Notification:
        notification_id = uuid.UUID(int=self._rng.getrandbits(128)).hex[:13]
        payload = change_notification(subscription, event, change_type, notification_id=notification_id)
        rich = False
        if subscription.include_resource_data and subscription.certificate is not None and event.item is not None:
            payload["encryptedContent"] = encrypt_content(
                rich_resource(event, subscription),
                certificate=subscription.certificate,
                certificate_id=subscription.encryption_certificate_id or "",
            )
            rich = True
        return Notification(subscription.notification_url, "change", payload, subscription, rich)

    def _enqueue(self, item: Notification, now: float) -> None:
        with self._lock:
            faults = self.faults
            if faults.drop and self._rng.random() < faults.drop:
                self._drop([item], reason="fault")
                return
            copies = 1
            if faults.duplicate and self._rng.random() < faults.duplicate:
                copies = 2
                self.counters["duplicated"] += 1
            due = now
            if faults.delay and self._rng.random() < faults.delay:
                due += faults.delay_s
                self.counters["delayed"] += 1
            if faults.reorder and self._rng.random() < faults.reorder:
                due += faults.reorder_s
                self.counters["reordered"] += 1
            endpoint = self._endpoint(item.url)
            mode = endpoint.health.current_mode(now)
            if mode == "drop":
                self._drop([item], reason="endpointDrop", endpoint=endpoint)
                return
            if mode == "slow":
                due += self.config.throttle.slow_delay_s
            for _ in range(copies):
                endpoint.fresh.push(item, due=due, kind=item.kind)

    def _housekeeping(self) -> None:
        """Expire subscriptions and send reauthorizationRequired on the configured cadence (rate-limited)."""
        real_now = time.monotonic()
        if real_now - self._last_sweep < self.config.delivery_sweep_s:
            return
        self._last_sweep = real_now
        now = self.state.clock.time()
        expired = self._registry.expire(datetime.fromtimestamp(now, UTC))
        if expired:
            self.forget(expired)
        with self._lock:
            window = self.config.retry.window_s
            for subscription_id, held in list(self._held.items()):
                lost = [item for held_at, item in held if now - held_at > window]
                if lost:
                    self._held[subscription_id] = [(t, i) for t, i in held if now - t <= window]
                    self._drop(lost, reason="heldTooLong")
        # From the registry's index of due times: a sweep costs the notices it sends, not a pass over 30,000.
        for subscription in self._registry.reauthorization_due(
            now, lead=self.config.reauthorization_lead_s, interval=self.config.reauthorization_interval_s
        ):
            self.send_lifecycle(subscription, "reauthorizationRequired")

    def _schedule(self) -> None:
        """Hand every due batch to the worker pool, within each endpoint's in-flight limit."""
        now = self.state.clock.time()
        work: list[tuple[Endpoint, Batch]] = []
        with self._lock:
            for endpoint in self._endpoints.values():
                while endpoint.in_flight < self.config.delivery_max_in_flight:
                    batch = self._next_batch(endpoint, now)
                    if batch is None:
                        break
                    endpoint.in_flight += 1
                    work.append((endpoint, batch))
        pool = self._pool
        for endpoint, batch in work:
            if pool is None or self._stopping:
                with self._lock:
                    endpoint.in_flight -= 1
                continue
            try:
                pool.submit(self._attempt, endpoint, batch)
            except RuntimeError:  # pool shut down under us
                with self._lock:
                    endpoint.in_flight -= 1

    def _next_batch(self, endpoint: Endpoint, now: float) -> Batch | None:
        _, retry = endpoint.retries.take_batch(now, 1)
        if retry:
            return retry[0]
        while True:
            kind, items = endpoint.fresh.take_batch(now, self.config.notification_batch_max)
            if not items:
                return None
            live = [i for i in items if i.kind == "lifecycle" or not i.subscription.removed]
            if len(live) < len(items):
                gone = [i for i in items if i.kind == "change" and i.subscription.removed]
                self._drop(gone, reason="subscriptionGone", endpoint=endpoint, missed=False)
            if live:
                return Batch(next(self._batch_seq), endpoint.url, kind, live)

    # --- one POST ----------------------------------------------------------------------------------------------

    def _body(self, batch: Batch) -> dict[str, Any]:
        body: dict[str, Any] = {"value": [item.payload for item in batch.items]}
        pairs = sorted({(self._audience(i.subscription), i.subscription.tenant_id) for i in batch.items if i.rich})
        if pairs:
            now = self.state.clock.now()
            lifetime = timedelta(seconds=self.config.validation_token_lifetime_s)
            body["validationTokens"] = [
                validation_token(
                    signing_key=self.state.signing_key,
                    kid=self.state.signing_kid,
                    app_id=app_id,
                    tenant_id=tenant_id,
                    now=now,
                    lifetime=lifetime,
                )
                for app_id, tenant_id in pairs
            ]
        return body

    def _audience(self, subscription: Subscription) -> str:
        if self.config.notification_url_app_id_as_audience and subscription.notification_url_app_id:
            return subscription.notification_url_app_id
        return subscription.application_id

    def _attempt(self, endpoint: Endpoint, batch: Batch) -> None:
        try:
            self._attempt_inner(endpoint, batch)
        except Exception as exc:
            self._append_log({"outcome": "internalError", "url": endpoint.url, "error": repr(exc)[:500]})
            with self._cond:
                endpoint.in_flight -= 1
                self._cond.notify_all()

    def _attempt_inner(self, endpoint: Endpoint, batch: Batch) -> None:
        started_at = self.state.clock.time()
        with self._lock:
            mode = endpoint.health.current_mode(started_at)
            if mode == "drop" and batch.kind == "change":
                self._drop(batch.items, reason="endpointDrop", endpoint=endpoint)
                endpoint.in_flight -= 1
                self._cond.notify_all()
                return
        attempt = batch.attempts + 1
        timeout = attempt_timeout(self.config.retry, attempt)
        body = self._body(batch)
        data = orjson.dumps(body)
        status, elapsed, timed_out = endpoint.post(data, timeout=timeout, verify=self.config.notification_tls_verify)
        ok = isinstance(status, int) and 200 <= status < 300 and not timed_out
        now = self.state.clock.time()
        with self._cond:
            endpoint.in_flight -= 1
            endpoint.posts += 1
            endpoint.last_status = status
            endpoint.health.record(now, elapsed_s=elapsed, timed_out=timed_out, timeout_s=timeout)
            self.counters["attempts"] += 1
            if attempt > 1:
                self.counters["retried"] += len(batch.items)
            if batch.first_attempt_at is None:
                batch.first_attempt_at = started_at
            batch.attempts = attempt
            outcome = "delivered"
            if ok:
                self.counters["delivered"] += len(batch.items)
                self.counters["deliveredPosts"] += 1
                endpoint.delivered += len(batch.items)
            else:
                self.counters["failedAttempts"] += 1
                endpoint.failed_attempts += 1
                due = next_retry_at(self.config.retry, first_attempt_at=batch.first_attempt_at, attempts_made=attempt, now=now)
                if due is None:
                    outcome = "dropped"
                    self._drop(batch.items, reason="retryWindow", endpoint=endpoint, log=False)
                else:
                    outcome = "retry"
                    endpoint.retries.push(batch, due=due, kind="retry")
            self._append_log_locked({
                "batch": batch.seq, "url": batch.url, "kind": batch.kind, "attempt": attempt, "status": status,
                "outcome": outcome, "elapsedMs": round(elapsed * 1000, 2), "count": len(batch.items), "body": body,
            })
            self._cond.notify_all()

    # --- drops and the log ---------------------------------------------------------------------------------------

    def _drop(
        self,
        items: list[Notification],
        *,
        reason: str,
        endpoint: Endpoint | None = None,
        missed: bool = True,
        log: bool = True,
    ) -> None:
        """Account dropped items and queue ``missed`` where Graph would send it (caller holds the lock)."""
        self.counters["dropped"] += len(items)
        self.dropped_by[reason] = self.dropped_by.get(reason, 0) + len(items)
        if endpoint is not None:
            endpoint.dropped += len(items)
        if log:
            self._append_log_locked({
                "url": items[0].url if items else None, "kind": items[0].kind if items else None,
                "outcome": "dropped", "reason": reason, "count": len(items),
                "body": {"value": [i.payload for i in items]},
            })
        # Injected drops model losses Graph does not know about: no missed event for those.
        if not missed or reason == "fault":
            return
        now = self.state.clock.time()
        owed: dict[str, Subscription] = {}
        for item in items:
            subscription = item.subscription
            if item.kind != "change" or subscription.lifecycle_url is None or subscription.removed:
                continue
            if subscription.id in owed or not self._sends(subscription, "missed"):
                continue
            last = self._last_missed.get(subscription.id)
            if last is not None and now - last < self.config.missed_min_interval_s:
                continue
            self._last_missed[subscription.id] = now
            owed[subscription.id] = subscription
        for subscription in owed.values():
            self._queue_lifecycle_locked(subscription, "missed")

    def _queue_lifecycle_locked(self, subscription: Subscription, event: str) -> None:
        assert subscription.lifecycle_url is not None
        payload = lifecycle_notification(subscription, event)
        endpoint = self._endpoint(subscription.lifecycle_url)
        endpoint.fresh.push(
            Notification(subscription.lifecycle_url, "lifecycle", payload, subscription),
            due=self.state.clock.time(),
            kind="lifecycle",
        )
        self.counters["lifecycleQueued"] += 1
        if event == "missed":
            self.counters["missedQueued"] += 1
        self._cond.notify_all()

    def _sends(self, subscription: Subscription, event: str) -> bool:
        """Whether Graph sends *event* for this resource type (https://learn.microsoft.com/graph/change-notifications-lifecycle-events), or the config says every type gets it."""
        return self.config.lifecycle_events_all_types or event in subscription.parsed.spec.lifecycle_events

    def _append_log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._append_log_locked(entry)

    def _append_log_locked(self, entry: dict[str, Any]) -> None:
        self._log.append({"seq": next(self._log_seq), "time": iso_ts(self.state.clock.time()), **entry})
        self._log_items += int(entry.get("count") or 0)
        # Bounded by entries and by the items their bodies hold: bodies reference whole notifications.
        while self._log and (
            len(self._log) > self.config.delivery_log_size or self._log_items > self.config.delivery_log_items
        ):
            self._log_items -= int(self._log.popleft().get("count") or 0)


def install(state: EmulatorState) -> Dispatcher:
    """Give *state* its dispatcher: hook it to the store, to shutdown and to reset (idempotent)."""
    if state.delivery is None:
        dispatcher = Dispatcher(state)
        state.delivery = dispatcher
        state.store.add_listener(dispatcher.on_change)
        state.on_shutdown(dispatcher.stop)
        state.on_reset(dispatcher.reset)
    return state.delivery
