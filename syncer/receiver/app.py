"""The receiver's Flask app: Graph's POSTs handed to a :class:`~syncer.receiver.receive.Receiver`, and the probes.

What a POST does and how it is answered is decided in :mod:`syncer.receiver.receive`; this module only
adapts HTTP to it, twice: Flask's view, and a WSGI fast path that spares the notification POST the
framework. Both call the same ``Receiver.receive``. It also serves /healthz, /readyz and Prometheus /metrics.

``create_app`` takes its dependencies; ``create_app_from_env`` builds them from ``SYNCER_*`` variables
for any WSGI server (``gunicorn 'syncer.receiver:create_app_from_env()'``). Configuration, building
from a spec and running gunicorn (``ServeConfig``, ``app_for_spec``, ``serve``) live in :mod:`syncer.receiver.serve`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from syncer import signins
from syncer.errors import DatabaseError
from syncer.inbox import Inbox
from syncer.metrics import Metrics
from syncer.receiver.bodies import CLOSE_KEY, force_close
from syncer.receiver.checks import SubscriptionLookup
from syncer.receiver.groupcommit import GroupCommitter
from syncer.receiver.receive import Receiver, ReceiverSettings
from syncer.receiver.rich import KeyRing, TokenValidator
from syncer.receiver.subscriptions import SubscriptionCache

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
        if environ.get(CLOSE_KEY):
            force_close(start_response, headers)  # or the server would read the unwanted body to reuse it
        start_response(_status_line(status), headers)
        return [body]


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
    receiver = Receiver(
        engine,
        inbox=inbox,
        lookup=subscriptions
        or SubscriptionCache(
            engine,
            ttl=settings.subscription_ttl,
            unknown_ttl=settings.unknown_subscription_ttl,
            timeout=settings.lookup_timeout,
        ),
        metrics=metrics,
        committer=committer,
        settings=settings,
        tokens=tokens,
        keys=keys,
    )

    app = Flask("syncer.receiver.app")
    # One more than the cap, so that the view can tell "exactly the cap" from "over it" (see receive).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.extensions["syncer.receiver.app"] = receiver

    def view(endpoint: str) -> Response:
        status, body = receiver.receive(endpoint, request.environ, request.stream.read)
        response = _response(status, body)
        if request.environ.get(CLOSE_KEY):
            response.headers["Connection"] = "close"
        return response

    endpoints = {settings.lifecycle_path: "lifecycle", settings.notification_path: "notifications"}  # one path: notifications
    for path, endpoint in endpoints.items():
        app.add_url_rule(path, endpoint, partial(view, endpoint), methods=["POST"])
    app.wsgi_app = _FastPath(app.wsgi_app, receiver.receive, endpoints)  # type: ignore[method-assign]

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        # Ready = a notification POSTed now would be stored: the probe goes the way of one (see
        # Receiver.probe), so readiness fails while the committer cannot commit and comes back
        # with its first success. It waits up to store_timeout: give the probe a longer timeout.
        try:
            receiver.probe()
        except DatabaseError as exc:
            return Response(f"cannot store notifications: {exc}\n", status=503, mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @app.get("/metrics")
    def metrics_view() -> Response:
        try:
            depth: float | None = receiver.inbox.depth()
        except DatabaseError:
            depth = None
        try:  # delegated accounts as the worker last saw them (syncer.signins)
            accounts = signins.read(receiver.inbox.engine)
        except Exception:  # the database is down: the depth above says so already
            accounts = []
        text = receiver.metrics.render(gauges={"syncer_inbox_depth": depth}, labelled={"syncer_sign_in_required": {
            (("account", a.account), ("tenant", a.name)): float(a.required) for a in accounts}})
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
