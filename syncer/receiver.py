"""The webhook receiver: a Flask app that answers Graph's handshake and stores every notification.

Graph gives a receiver 3 seconds and drops the notifications of an endpoint that is too often slow
(notes §3.3), so this app does the minimum before answering, and nothing that can wait: parse and
check the POST (``syncer.notifications``, pure), store what passed in the inbox (``syncer.inbox``,
group commit), answer ``202 Accepted``. The worker does the rest — delta syncs for change items,
reauthorize/renew, recreate + resync, resync for lifecycle items — without Graph ever waiting on it.

Responses (decided here, following notes §3.2):

* ``POST <path>?validationToken=...`` → ``200 text/plain`` with the decoded token, on the notification
  and lifecycle paths alike, before any other check and without touching the database.
* A well-formed collection → ``202`` once every accepted item is committed, **also when some or all
  items were refused** (unknown subscription, wrong clientState, bad token or HMAC): the rich-notification
  guide says to answer 202 so that a forger learns nothing. Refusals are counted and logged (no secrets).
* Database unavailable, or the commit not confirmed within ``store_timeout`` → ``503``: Graph retries,
  and a retry of something that did land after all is absorbed as a duplicate. Never 2xx for an item
  that is not committed.
* Malformed body → 400, body over the cap → 413, not JSON → 415, not POST → 405.

Both paths accept both kinds of item: the kind is the item's (``changeType`` vs ``lifecycleEvent``),
because an older Graph revision sent lifecycle events to the notification URL (notes §4).

``create_app`` takes its dependencies; ``create_app_from_env`` builds them from ``SYNCER_*`` variables
for any WSGI server (``gunicorn 'syncer.receiver:create_app_from_env()'``). Configuration, building
from a spec and running gunicorn (``ServeConfig``, ``app_for_spec``, ``serve``) live in :mod:`syncer.serve`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from flask import Flask, Response, request
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from syncer import schema
from syncer.errors import DatabaseError, NotificationError
from syncer.groupcommit import GroupCommitter
from syncer.inbox import Inbox, NewItem
from syncer.log import OutageLog
from syncer.metrics import Metrics
from syncer.notifications import (
    Accepted,
    KeyRing,
    Limits,
    Rejection,
    SubscriptionInfo,
    SubscriptionLookup,
    TokenValidator,
    check_collection,
    parse_collection,
    reasons,
)

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
    subscription_queries_per_second: float = 50.0
    log_rejections_per_second: float = 5.0


class _RateLimiter:
    """A token bucket: at most *rate* events per second (log lines, lookups a forger can cause)."""

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


class SubscriptionCache:
    """Subscription lookups from ``syncer_subscriptions``, cached briefly, negative answers too.

    The negative cache absorbs a repeated unknown id; a flood of *random* forged ids is bounded by
    ``max_queries_per_second``: past it an unknown id is treated as unknown without asking the
    database (a brand-new subscription's first notification may then be refused; the worker's
    safety-net sync covers that). Thread-safe; rows are written by reconcile (another process).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: sa.Table = schema.subscriptions,
        ttl: float = 30.0,
        unknown_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_queries_per_second: float = 50.0,
    ) -> None:
        self.engine = engine
        self.table = table
        self.ttl = ttl
        self.unknown_ttl = unknown_ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, SubscriptionInfo | None]] = {}
        self._lock = threading.Lock()
        self._queries = _RateLimiter(max_queries_per_second)

    def __call__(self, ids: Collection[str]) -> Mapping[str, SubscriptionInfo]:
        now = time.monotonic()
        found: dict[str, SubscriptionInfo] = {}
        known: list[str] = []  # ours, cached entry expired: always re-read
        unknown: list[str] = []  # never seen, or seen as unknown: re-read within the rate limit
        with self._lock:
            for sid in ids:
                entry = self._cache.get(sid)
                if entry is not None and entry[0] > now:
                    if entry[1] is not None:
                        found[sid] = entry[1]
                elif entry is not None and entry[1] is not None:
                    known.append(sid)
                else:
                    unknown.append(sid)
        missing = known + unknown if unknown and self._queries.allow() else known
        if not missing:
            return found
        t = self.table
        stmt = sa.select(
            t.c.subscription_id, t.c.tenant_id, t.c.client_state, t.c.scope_key, t.c.include_resource_data
        ).where(t.c.subscription_id.in_(missing))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read subscriptions: {type(exc).__name__}") from exc
        loaded = {
            r.subscription_id: SubscriptionInfo(
                subscription_id=r.subscription_id,
                tenant_id=r.tenant_id,
                client_state=r.client_state,
                scope_key=r.scope_key,
                include_resource_data=bool(r.include_resource_data),
            )
            for r in rows
        }
        with self._lock:
            if len(self._cache) + len(missing) > self.max_entries:
                self._cache.clear()  # crude, but bounded: forged ids cannot grow it without limit
            for sid in missing:
                info = loaded.get(sid)
                self._cache[sid] = (now + (self.ttl if info else self.unknown_ttl), info)
        found.update(loaded)
        return found

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


# Every answer is plain text that no browser may sniff into HTML (the handshake echoes a caller's token).
_ANSWER_HEADERS = (
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)


def _response(status: int, body: str = "") -> Response:
    return Response(body, status=status, headers=_ANSWER_HEADERS)


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class _FastPath:
    """WSGI middleware: notification POSTs go straight to ``receive``, everything else to Flask.

    The notification POST is the one request Graph sends by the thousand, and Flask's request and
    response objects, context push and routing cost as much CPU as all of syncer's own checks
    (measured ~40 us of ~85 us per request, in-process). The same ``receive`` serves Flask's view,
    so there is one implementation; this only skips the framework around it. A request whose body
    end the server does not mark (neither Content-Length nor ``wsgi.input_terminated``) goes the
    Flask way, whose stream never reads past the body.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        receive: Callable[[str, dict[str, Any], Callable[[int], bytes]], tuple[int, str]],
        endpoints: Mapping[str, str],
    ) -> None:
        self.app = app
        self.receive = receive
        self.endpoints = dict(endpoints)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        endpoint = self.endpoints.get(environ.get("PATH_INFO", ""))
        bounded = environ.get("CONTENT_LENGTH") or environ.get("wsgi.input_terminated")
        if endpoint is None or environ.get("REQUEST_METHOD") != "POST" or not bounded:
            return self.app(environ, start_response)
        status, text = self.receive(endpoint, environ, environ["wsgi.input"].read)
        body = text.encode()
        headers = [*_ANSWER_HEADERS, ("Content-Length", str(len(body)))]
        if status == 413:
            headers.append(("Connection", "close"))  # or the server would read the unwanted body to reuse it
        start_response(_status_line(status), headers)
        return [body]


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
        payload=n.payload(a.decrypted),
    )


@dataclass
class ReceiverState:
    """What a running app holds; ``app.extensions['syncer.receiver']``. ``close()`` flushes and stops."""

    engine: Engine
    inbox: Inbox
    lookup: SubscriptionLookup
    metrics: Metrics
    committer: GroupCommitter | None
    settings: ReceiverSettings
    tokens: TokenValidator | None = None
    keys: KeyRing | None = None
    closers: list[Any] = field(default_factory=list)

    def store(self, items: list[NewItem]) -> set[str]:
        if self.committer is not None:
            return self.committer.put(items, timeout=self.settings.store_timeout)
        with self.engine.begin() as conn:
            return self.inbox.put_in(conn, items)

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()
        self.metrics.close()
        for closer in self.closers:
            closer()


def create_app(
    engine: Engine,
    *,
    settings: ReceiverSettings = ReceiverSettings(),
    inbox: Inbox | None = None,
    subscriptions: SubscriptionLookup | None = None,
    tokens: TokenValidator | None = None,
    keys: KeyRing | None = None,
    metrics: Metrics | None = None,
) -> Flask:
    """The receiver app. *tokens* and *keys* are needed only for rich notifications (without them,
    encrypted items are refused); *subscriptions* defaults to a cached read of ``syncer_subscriptions``."""
    inbox = inbox or Inbox(engine)
    metrics = metrics or Metrics()
    committer = None
    if settings.group_commit:
        committer = GroupCommitter(
            inbox,
            committers=settings.committers,
            max_batch_rows=settings.max_batch_rows,
            statement_timeout=settings.store_timeout,
            on_commit=lambda requests, rows, seconds: metrics.record_commit(requests, rows, seconds),
        )
    state = ReceiverState(
        engine=engine,
        inbox=inbox,
        lookup=subscriptions
        or SubscriptionCache(
            engine,
            ttl=settings.subscription_ttl,
            unknown_ttl=settings.unknown_subscription_ttl,
            max_queries_per_second=settings.subscription_queries_per_second,
        ),
        metrics=metrics,
        committer=committer,
        settings=settings,
        tokens=tokens,
        keys=keys,
    )
    limiter = _RateLimiter(settings.log_rejections_per_second)
    # Graph retries each 503 and many POSTs arrive per second: a line per outage, not per request.
    outage = OutageLog(log, "database", level=logging.ERROR)

    app = Flask("syncer.receiver")
    # One more than the cap, so that the view can tell "exactly the cap" from "over it" (see receive).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.extensions["syncer.receiver"] = state

    def answer(status: int, endpoint: str, body: str = "") -> tuple[int, str]:
        metrics.inc("syncer_receiver_requests_total", endpoint=endpoint, status=str(status))
        return status, body

    def log_refusals(refused: tuple[Rejection, ...], remote_addr: str | None) -> None:
        for reason, count in reasons(refused).items():
            metrics.inc("syncer_notifications_rejected_total", count, reason=reason)
        if refused and limiter.allow():
            subs = sorted({r.subscription_id for r in refused if r.subscription_id})[:5]
            suppressed, limiter.suppressed = limiter.suppressed, 0
            log.warning(
                "refused %d notification item(s) from %s: %s; subscriptions %s%s",
                len(refused),
                remote_addr,
                ", ".join(f"{k}={v}" for k, v in sorted(reasons(refused).items())),
                subs,
                f" ({suppressed} similar lines suppressed)" if suppressed else "",
            )

    def receive(endpoint: str, environ: dict[str, Any], read: Callable[[int], bytes]) -> tuple[int, str]:
        """A POST to the notification or lifecycle path: (status, body). Reads only the WSGI environ
        and *read* (the body stream), so that Flask's view and the fast path share it."""
        # Cheap tests on the raw environ first: this runs for every notification POST.
        query = environ.get("QUERY_STRING", "")
        if "validationToken" in query:
            tokens = parse_qs(query, keep_blank_values=True).get("validationToken")
            if tokens:
                # The handshake: echo the decoded token as plain text, nothing else (notes §1.2).
                metrics.inc("syncer_handshakes_total", endpoint=endpoint)
                return answer(200, endpoint, tokens[0])
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type != "application/json" and content_type.partition(";")[0].strip().lower() != "application/json":
            return answer(415, endpoint, "expected application/json")
        declared = environ.get("CONTENT_LENGTH", "")
        length = int(declared) if declared.isdigit() else None
        # Never read past a declared length (PEP 3333: the stream may be the bare socket). Without
        # one (chunked), read one byte past the cap ourselves: a server may just stop reading at a
        # limit, which would look like a truncated (400) body rather than a 413.
        too_large = length is not None and length > settings.max_body_bytes
        body = b"" if too_large else read(settings.max_body_bytes + 1 if length is None else length)
        if too_large or len(body) > settings.max_body_bytes:
            metrics.inc("syncer_notifications_rejected_total", reason="body_too_large")
            return answer(413, endpoint, "Request Entity Too Large")
        try:
            collection = parse_collection(body, limits=settings.limits)
        except NotificationError as exc:
            metrics.inc("syncer_notifications_rejected_total", reason=exc.reason)
            return answer(400, endpoint, f"malformed notification collection ({exc.reason})")
        try:
            verdict = check_collection(collection, lookup=state.lookup, tokens=state.tokens, keys=state.keys)
        except DatabaseError as exc:
            metrics.inc("syncer_notifications_received_total", collection.size)
            outage.failed(exc, "answering 503 to notifications (Graph retries them)")
            return answer(503, endpoint, "temporarily unavailable")
        if verdict.rejected:
            log_refusals(verdict.rejected, environ.get("REMOTE_ADDR"))
        if verdict.accepted:
            items = [_new_item(a) for a in verdict.accepted]
            started = time.perf_counter()
            try:
                new_keys = state.store(items)
            except (DatabaseError, sa.exc.SQLAlchemyError) as exc:
                metrics.inc("syncer_notifications_received_total", collection.size)
                outage.failed(exc, "answering 503 to notifications (Graph retries them)")
                return answer(503, endpoint, "temporarily unavailable")
            outage.ok()
            metrics.record_stored(
                endpoint,
                received=collection.size,
                stored=len(new_keys),
                duplicates=len(items) - len(new_keys),
                seconds=time.perf_counter() - started,
            )
            return 202, ""
        metrics.inc("syncer_notifications_received_total", collection.size)
        return answer(202, endpoint)

    def view(endpoint: str) -> Response:
        status, body = receive(endpoint, request.environ, request.stream.read)
        return _response(status, body)

    endpoints = {settings.lifecycle_path: "lifecycle", settings.notification_path: "notifications"}  # one path: notifications
    for path, endpoint in endpoints.items():
        app.add_url_rule(path, endpoint, partial(view, endpoint), methods=["POST"])
    app.wsgi_app = _FastPath(app.wsgi_app, receive, endpoints)  # type: ignore[method-assign]

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(1))
        except sa.exc.SQLAlchemyError as exc:
            return Response(f"database unreachable: {type(exc).__name__}\n", status=503, mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.get("/metrics")
    def metrics_view() -> Response:
        try:
            depth: float | None = state.inbox.depth()
        except DatabaseError:
            depth = None
        text = metrics.render(gauges={"syncer_inbox_depth": depth})
        return Response(text, mimetype="text/plain", content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        metrics.inc("syncer_receiver_requests_total", endpoint=request.endpoint or "other", status=str(status))
        if status == 413:
            metrics.inc("syncer_notifications_rejected_total", reason="body_too_large")
        response = Response(f"{exc.name}\n", status=status, mimetype="text/plain")
        for key, value in exc.get_headers():
            if key.lower() == "allow":
                response.headers[key] = value
        return response

    return app


def create_app_from_env() -> Flask:
    """``gunicorn 'syncer.receiver:create_app_from_env()'``: the app configured from ``SYNCER_*`` variables.

    Kept here, where the README and ``syncer serve --help`` point WSGI servers; the building lives
    in :mod:`syncer.serve`."""
    from syncer.serve import ServeConfig, build_app

    return build_app(ServeConfig.from_env())
