"""The webhook receiver: a Flask app that answers Graph's handshake and stores every notification.

Graph gives a receiver 3 seconds and drops the notifications of an endpoint that is too often slow
(https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks), so this app does the minimum before answering, and nothing that can wait: parse and
check the POST (``syncer.receiver.notifications`` and ``syncer.receiver.checks``, pure), store what passed in the inbox (``syncer.inbox``,
group commit), answer ``202 Accepted``. The worker does the rest — delta syncs for change items,
reauthorize/renew, recreate + resync, resync for lifecycle items — without Graph ever waiting on it.

Responses (decided here, following https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks):

* ``POST <path>?validationToken=...`` → ``200 text/plain`` with the decoded token, on the notification
  and lifecycle paths alike, before any other check and without touching the database.
* A well-formed collection → ``202`` once every accepted item is committed, **also when some or all
  items were refused** (subscription read and not ours, wrong clientState, bad token or HMAC): the
  rich-notification guide says to answer 202 so that a forger learns nothing. Refusals are counted
  and logged (no secrets).
* An item that cannot be judged *now* → ``503`` for the POST, after the accepted items are committed
  (Graph retries the POST; those come back as duplicates): the subscription lookup fails, a
  validation token is not yet valid (this host's clock is behind; the log names the skew) or the
  token-signing keys cannot be fetched. Only items that passed clientState can be deferred, so a
  forger without the secret still always gets 202.
* Database unavailable, or the commit not confirmed within ``store_timeout`` → ``503``: Graph retries,
  and a retry of something that did land after all is absorbed as a duplicate. Never 2xx for an item
  that is not committed.
* Malformed body → 400, body over the cap → 413, not JSON → 415, not POST → 405.
* A ``Content-Length`` that is not plain ASCII digits → 400 at once (the body's end is unknown).
* A body not read within ``body_timeout`` → 408; past the process's budget of body bytes in flight →
  503 (Graph retries). These three close the connection: the rest of the body is never read.

Both paths accept both kinds of item: the kind is the item's (``changeType`` vs ``lifecycleEvent``),
because an older Graph revision sent lifecycle events to the notification URL (https://learn.microsoft.com/en-us/graph/change-notifications-lifecycle-events).

``Receiver`` is what a request does, without Flask; :mod:`syncer.receiver.app` serves it (the Flask app,
its fast path for notification POSTs, /healthz, /readyz and /metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer.errors import DatabaseError, NotificationError
from syncer.inbox import Inbox, NewItem
from syncer.log import OutageLog
from syncer.metrics import Metrics
from syncer.receiver.bodies import (
    CLOSE_KEY,
    CONTENT_LENGTH,
    READ_CHUNK,
    BodyBudget,
    ReadDeadlines,
    request_socket,
)
from syncer.receiver.checks import Accepted, SubscriptionLookup, check_collection, reasons
from syncer.receiver.groupcommit import GroupCommitter
from syncer.receiver.notifications import Limits, NotificationCollection, Rejection, parse_collection
from syncer.receiver.rich import KeyRing, TokenValidator

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReceiverSettings:
    """What the app needs besides its collaborators; the defaults suit Graph."""

    notification_path: str = "/notifications"
    lifecycle_path: str = "/lifecycle"
    # Graph batches items; rich ones carry whole resources. 4 MiB is generous for that and still
    # small enough that a flood of large bodies cannot exhaust memory.
    max_body_bytes: int = 4 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    # Under Graph's 3-second allowance, with room for the network.
    store_timeout: float = 2.5
    group_commit: bool = True
    # Batches in flight per process (PostgreSQL; SQLite always has one). One: while it commits, the
    # next batch gathers, so batches are twice as large as with two and the statements half as many
    # (measured under gevent: 0.77-0.82 of the no-op app's req/s with one, 0.62-0.66 with two).
    committers: int = 1
    max_batch_rows: int = 2000
    # A known subscription's row changes rarely (clientState never); an unknown id is re-read soon,
    # because reconcile writes the row only after Graph's 201 and the first notification may race it.
    subscription_ttl: float = 30.0
    unknown_subscription_ttl: float = 1.0
    # How long a request waits for a grouped subscription read before answering 503: a read takes
    # milliseconds; a second leaves the store most of Graph's 3 seconds.
    lookup_timeout: float = 1.0
    log_rejections_per_second: float = 5.0
    # A body must be in within this many seconds of its headers (Graph sends one in milliseconds and
    # gives up on the answer after 3 s): a slow or idle client cannot hold a worker's thread or greenlet.
    body_timeout: float = 10.0
    # Bytes of request bodies one process holds at once (reserved from Content-Length before reading).
    # Bodies over ``large_body_bytes`` may take only three quarters of it: the last quarter stays for
    # the small POSTs Graph sends most (one to a few KiB per basic notification), whatever large
    # bodies a client holds open. Past the budget: 503, which Graph retries.
    body_budget_bytes: int = 64 * 1024 * 1024
    large_body_bytes: int = 1024 * 1024


class _RateLimiter:
    """A token bucket: at most *rate* events per second (log lines)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._allowance = rate
        self._last = time.monotonic()
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
            self._last = now
            if self._allowance >= 1:
                self._allowance -= 1
                return True
            self.suppressed += 1
            return False


def _new_item(a: Accepted) -> NewItem:
    n = a.notification
    return NewItem(
        tenant_id=a.subscription.tenant_id,
        subscription_id=n.subscription_id,
        kind=n.kind,
        event=n.event,
        resource=n.resource,
        resource_id=n.resource_id,
        dedupe_key=n.dedupe_key,
        payload=n.payload(a.decrypted, undecrypted=a.undecrypted),
    )


class Receiver:
    """What the receiver does with a request, without Flask: :meth:`receive` is the hot path.

    ``create_app`` wraps one in a Flask app (``app.extensions['syncer.receiver.app']``); tests and
    benchmarks may call :meth:`receive` with a WSGI environ and a body reader. ``close()`` flushes the
    group commit and stops.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        settings: ReceiverSettings,
        inbox: Inbox,
        lookup: SubscriptionLookup,
        metrics: Metrics,
        committer: GroupCommitter | None,
        tokens: TokenValidator | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.inbox = inbox
        self.lookup = lookup
        self.metrics = metrics
        self.committer = committer
        self.tokens = tokens
        self.keys = keys
        self.closers: list[Callable[[], object]] = []
        # Called after each commit that stored new rows: `syncer run` wakes its worker's drain (syncer.worker.wake).
        self.on_stored: list[Callable[[], object]] = []
        self.limiter = _RateLimiter(settings.log_rejections_per_second)
        self.deferral_limiter = _RateLimiter(settings.log_rejections_per_second)
        # Graph retries each 503 and many POSTs arrive per second: a line per outage, not per request.
        self.outage = OutageLog(log, "database", level=logging.ERROR)
        self.budget = BodyBudget(settings.body_budget_bytes, settings.large_body_bytes)
        self.deadlines = ReadDeadlines()

    def store(self, items: list[NewItem]) -> set[str]:
        if self.committer is not None:
            new = self.committer.put(items, timeout=self.settings.store_timeout)
        else:
            with self.engine.begin() as conn:
                new = self.inbox.put_in(conn, items)
        if new:
            for stored in self.on_stored:
                stored()
        return new

    def probe(self) -> None:
        """Raise DatabaseError unless a notification could be stored now, through the path ``store``
        takes: the committer (its connections, its queue, its leader), not a spare pool connection
        that may well work while the committer's is stuck or read-only."""
        if self.committer is not None:
            self.committer.probe(timeout=self.settings.store_timeout)
            return
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name == "postgresql":
                    # A session that would refuse the insert: the database (or the server, a hot
                    # standby after a failover) is read-only.
                    if conn.exec_driver_sql("SELECT current_setting('transaction_read_only')").scalar() == "on":
                        raise DatabaseError("the database is read-only")
                else:
                    conn.execute(sa.select(1))
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database unreachable: {type(exc).__name__}") from exc

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()
        self.metrics.close()
        for closer in self.closers:
            closer()

    def _answer(self, status: int, endpoint: str, body: str = "") -> tuple[int, str]:
        self.metrics.inc("syncer_receiver_requests_total", endpoint=endpoint, status=str(status))
        return status, body

    def _log_refusals(self, refused: tuple[Rejection, ...], remote_addr: str | None) -> None:
        for reason, count in reasons(refused).items():
            self.metrics.inc("syncer_notifications_rejected_total", count, reason=reason)
        if refused and self.limiter.allow():
            subs = sorted({r.subscription_id for r in refused if r.subscription_id})[:5]
            suppressed, self.limiter.suppressed = self.limiter.suppressed, 0
            log.warning(
                "refused %d notification item(s) from %s: %s; subscriptions %s%s",
                len(refused),
                remote_addr,
                ", ".join(f"{k}={v}" for k, v in sorted(reasons(refused).items())),
                subs,
                f" ({suppressed} similar lines suppressed)" if suppressed else "",
            )

    def _log_deferrals(self, deferred: tuple[Rejection, ...], problems: tuple[str, ...]) -> None:
        for reason, count in reasons(deferred).items():
            self.metrics.inc("syncer_notifications_deferred_total", count, reason=reason)
        if self.deferral_limiter.allow():
            suppressed, self.deferral_limiter.suppressed = self.deferral_limiter.suppressed, 0
            log.warning(
                "cannot judge %d notification item(s) now, answering 503 so that Graph retries: %s%s%s",
                len(deferred),
                ", ".join(f"{k}={v}" for k, v in sorted(reasons(deferred).items())),
                "".join(f"; {p}" for p in problems),
                f" ({suppressed} similar lines suppressed)" if suppressed else "",
            )

    def _over_budget(self, endpoint: str, environ: dict[str, Any]) -> tuple[int, str]:
        environ[CLOSE_KEY] = True
        self.metrics.inc("syncer_notifications_rejected_total", reason="body_budget")
        if self.limiter.allow():
            log.warning("request bodies in flight are over the budget of %d bytes: answering 503", self.budget.total)
        return self._answer(503, endpoint, "too many request bodies in flight, retry")

    def receive(self, endpoint: str, environ: dict[str, Any], read: Callable[[int], bytes]) -> tuple[int, str]:
        """A POST to the notification or lifecycle path: (status, body). Reads only the WSGI environ
        and *read* (the body stream), so that Flask's view and the fast path share it."""
        # Cheap tests on the raw environ first: this runs for every notification POST.
        query = environ.get("QUERY_STRING", "")
        if "validationToken" in query:
            echo = parse_qs(query, keep_blank_values=True).get("validationToken")
            if echo:
                # The handshake: echo the decoded token as plain text, nothing else (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#notificationurl-validation).
                self.metrics.inc("syncer_handshakes_total", endpoint=endpoint)
                return self._answer(200, endpoint, echo[0])
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type != "application/json" and content_type.partition(";")[0].strip().lower() != "application/json":
            return self._answer(415, endpoint, "expected application/json")
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared and not CONTENT_LENGTH.fullmatch(declared):
            environ[CLOSE_KEY] = True
            self.metrics.inc("syncer_notifications_rejected_total", reason="bad_content_length")
            return self._answer(400, endpoint, "Content-Length must be decimal digits")
        length = int(declared) if declared else None
        # Never read past a declared length (PEP 3333: the stream may be the bare socket). Without
        # one (chunked), read one byte past the cap ourselves: a server may just stop reading at a
        # limit, which would look like a truncated (400) body rather than a 413.
        if length is not None and length > self.settings.max_body_bytes:
            environ[CLOSE_KEY] = True
            self.metrics.inc("syncer_notifications_rejected_total", reason="body_too_large")
            return self._answer(413, endpoint, "Request Entity Too Large")
        reserved = 0
        try:
            if length is not None:
                if not self.budget.take(length, body_size=length):
                    return self._over_budget(endpoint, environ)
                reserved = length
            body = bytearray()
            want = self.settings.max_body_bytes + 1 if length is None else length
            sock = request_socket(environ)
            watch = self.deadlines.watch(sock, time.monotonic() + self.settings.body_timeout) if sock is not None else None
            failed = False
            try:
                while len(body) < want:
                    size = min(READ_CHUNK, want - len(body))
                    if length is None:  # chunked: reserve as it grows
                        if not self.budget.take(size, body_size=len(body) + size):
                            return self._over_budget(endpoint, environ)
                        reserved += size
                    data = read(size)
                    if not data:
                        break
                    body += data
            except OSError:  # a socket timeout (`syncer run` sets one), a reset
                failed = True
            finally:
                timed_out = watch is not None and self.deadlines.done(watch)
            if timed_out:
                environ[CLOSE_KEY] = True  # the socket's read side is shut
            if failed or (timed_out and (length is None or len(body) < length)):
                environ[CLOSE_KEY] = True
                self.metrics.inc("syncer_notifications_rejected_total", reason="body_timeout")
                return self._answer(408, endpoint, "Request Timeout")
            if len(body) > self.settings.max_body_bytes:
                environ[CLOSE_KEY] = True
                self.metrics.inc("syncer_notifications_rejected_total", reason="body_too_large")
                return self._answer(413, endpoint, "Request Entity Too Large")
            try:
                collection = parse_collection(body, limits=self.settings.limits)
            except NotificationError as exc:
                self.metrics.inc("syncer_notifications_rejected_total", reason=exc.reason)
                return self._answer(400, endpoint, f"malformed notification collection ({exc.reason})")
            del body  # the budget counts bodies; the parsed items are bounded by the limits
        finally:
            self.budget.give(reserved)
        return self._judge_and_store(endpoint, environ, collection)

    def _judge_and_store(
        self, endpoint: str, environ: dict[str, Any], collection: NotificationCollection
    ) -> tuple[int, str]:
        """Check each item (``check_collection``, pure), store what passed, and choose the answer:
        202 once stored (refusals included, so that forgers learn nothing), 503 while something could
        not be judged or stored (Graph retries; what was stored comes back as duplicates)."""
        try:
            verdict = check_collection(collection, lookup=self.lookup, tokens=self.tokens, keys=self.keys)
        except DatabaseError as exc:
            self.metrics.inc("syncer_notifications_received_total", collection.size)
            self.outage.failed(exc, "answering 503 to notifications (Graph retries them)")
            return self._answer(503, endpoint, "temporarily unavailable")
        if verdict.rejected:
            self._log_refusals(verdict.rejected, environ.get("REMOTE_ADDR"))
        if verdict.deferred:
            self._log_deferrals(verdict.deferred, verdict.problems)
        if verdict.accepted:
            for a in verdict.accepted:
                if a.undecrypted is not None:
                    self.metrics.inc("syncer_notifications_undecrypted_total", reason=a.undecrypted)
            items = [_new_item(a) for a in verdict.accepted]
            started = time.perf_counter()
            try:
                new_keys = self.store(items)
            except (DatabaseError, sa.exc.SQLAlchemyError) as exc:
                self.metrics.inc("syncer_notifications_received_total", collection.size)
                self.outage.failed(exc, "answering 503 to notifications (Graph retries them)")
                return self._answer(503, endpoint, "temporarily unavailable")
            self.outage.ok()
            if not verdict.deferred:
                self.metrics.record_stored(
                    endpoint,
                    received=collection.size,
                    stored=len(new_keys),
                    duplicates=len(items) - len(new_keys),
                    seconds=time.perf_counter() - started,
                )
                return 202, ""
            # Stored, but others of the POST could not be judged: 503, and Graph's retry of the
            # whole POST finds these as duplicates.
            self.metrics.inc("syncer_notifications_stored_total", len(new_keys))
            self.metrics.inc("syncer_notifications_duplicate_total", len(items) - len(new_keys))
        self.metrics.inc("syncer_notifications_received_total", collection.size)
        if verdict.deferred:
            return self._answer(503, endpoint, "temporarily unavailable")
        return self._answer(202, endpoint)
