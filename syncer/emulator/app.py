"""The emulator's Flask application factory.

Cross-cutting behaviour lives here so every Graph view gets it the same way: request ids
(``request-id``/``client-request-id`` headers, echoed in error bodies), authentication of ``/v1.0``
calls, request faults and the per-mailbox concurrency limit, the admin request log, and error handlers
that turn anything unexpected into Graph's error body (never a traceback; a 500 only when injected).
"""

from __future__ import annotations

import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import jwt
import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from syncer.emulator import admin, batch, delivery, delivery_admin, identity, subscriptions
from syncer.emulator.clock import iso_ts
from syncer.emulator.errors import GraphHTTPError, from_exception, graph_error
from syncer.emulator.families import FAMILIES, MAILBOX_SEGMENTS
from syncer.emulator.identity import authenticate
from syncer.emulator.identity.accounts import graph_user_id
from syncer.emulator.state import EmulatorState, RequestLogEntry

#: The shared core's blueprints, then every family's, in registration order.
_BLUEPRINTS = (identity.bp, admin.bp, batch.bp, *(bp for family in FAMILIES for bp in family.blueprints),
               subscriptions.bp, delivery_admin.admin_bp)


def _mailbox_of(path: str) -> str | None:
    """The mailbox a /v1.0/users/{x}/<outlook-thing> path addresses (id or UPN as written)."""
    parts = path.split("/", 5)
    # ["", "v1.0", "users", "{x}", "<segment>", ...]
    if len(parts) >= 5 and parts[2].lower() == "users" and parts[4].lower() in MAILBOX_SEGMENTS:
        return parts[3]
    return None


_DELTA_SEGMENT = re.compile(r"/(?:microsoft\.graph\.)?delta(?:\(\))?(?=/|$)", re.IGNORECASE)


_SEGMENTS = {name.lower(): name for name in (
    "users", "groups", "drives", "directory", "deletedItems", "members", "$ref", "delta", "restore",
    "subscriptions", "reauthorize", "me", "$batch", "microsoft.graph.user", "microsoft.graph.group",
)}


class _PathMiddleware:
    """Accepts Graph's spellings of the delta function: `delta`, `delta()`, `microsoft.graph.delta[()]`.

    msgraph-sdk calls `/users/delta()`; Graph treats all of these alike, so they are folded into
    `delta` before routing (the drive's `delta(token='...')` form is left for the drive views).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if "delta" in path.lower():
            path = _DELTA_SEGMENT.sub("/delta", path)
        if path.startswith("/v1.0/"):
            # Graph's path segments are case-insensitive (notifications say "Users/{id}"); ids are not, so
            # only the literal segment names are folded to the spelling the routes use.
            path = "/".join(_SEGMENTS.get(seg.lower(), seg) for seg in path.split("/"))
        if path.startswith("/v1.0/me/") or path == "/v1.0/me":
            path = _route_me(path, environ.get("HTTP_AUTHORIZATION"))
        environ["PATH_INFO"] = path
        return self.app(environ, start_response)


def _route_me(path: str, authorization: str | None) -> str:
    """`/me/...` with a signed-in user's token is `/users/{their id}/...` (https://learn.microsoft.com/graph/api/user-get).

    The claims are read unverified here only to route: the bearer check then verifies the same token, so a forged
    one still ends in 401. An app-only token (no `scp`) keeps `/me`, which answers Graph's 400.
    """
    scheme, _, raw = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return path
    try:
        claims = jwt.decode(raw.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return path
    if "scp" not in claims or not claims.get("oid"):
        return path
    user_id = graph_user_id(str(claims.get("tid", "")), str(claims["oid"]))
    return f"/v1.0/users/{user_id}{path[len('/v1.0/me'):]}"


def drop_connection(sock: socket.socket) -> None:
    """End a client connection at once, without an HTTP answer.

    shutdown() acts immediately even while werkzeug still holds file objects on the socket (close()
    would wait for them); it is called on the plain socket type so TLS state cannot get in the way, and
    separately from the linger option (which turns the final close into an RST) so one failing cannot
    leave the connection open -- a client would then wait for an answer that never comes.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _ResetMiddleware:
    """Turns a request flagged by the `reset` fault into a dropped connection (TCP RST)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if environ.get("emulator.reset"):
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                drop_connection(sock)
            raise ConnectionResetError("emulator fault: connection reset")
        return result


def _identity_fault(error: GraphHTTPError) -> Response:
    """An injected failure of the identity platform, in its own error shape (not Graph's)."""
    kind = "temporarily_unavailable" if error.status >= 500 or error.status == 429 else "invalid_request"
    body = {"error": kind, "error_description": f"AADSTS90033: {error.message}", "error_codes": [90033]}
    response = Response(orjson.dumps(body), status=error.status, content_type="application/json; charset=utf-8")
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def create_app(state: EmulatorState) -> Flask:
    """Build the Flask app serving Graph, the identity platform and the admin API for *state*."""
    app = Flask("syncer.emulator")
    app.config["EMULATOR_STATE"] = state
    app.config["JSON_SORT_KEYS"] = False
    app.url_map.strict_slashes = False

    @app.before_request
    def _start() -> Response | None:
        g.started = time.perf_counter()
        g.request_id = str(uuid.uuid4())
        g.client_request_id = request.headers.get("client-request-id", "")
        g.fault = None
        g.mailbox_slot = None
        g.in_batch = bool(request.environ.get("emulator.batch"))
        path = request.path
        if path.startswith("/_emulator"):
            return None  # the harness itself never misbehaves
        graph_call = path.startswith("/v1.0/") or path == "/v1.0"
        ctx = None
        auth_error: GraphHTTPError | None = None
        if graph_call:
            try:
                ctx = authenticate(state, request.headers.get("Authorization"), base=request.host_url.rstrip("/"))
                g.app_context = ctx
            except GraphHTTPError as exc:
                auth_error = exc
        # Faults apply to the identity endpoints too (a token endpoint can throttle or fail as well).
        mailbox = _mailbox_of(path) if graph_call else None
        decision = state.faults.check(
            method=request.method, path=path,
            app=ctx.client_id if ctx else None, tenant=ctx.tenant_id if ctx else None, mailbox=mailbox,
            graph_call=graph_call,
        )
        if decision.reset:
            g.fault = decision.label
            request.environ["emulator.reset"] = True
            return Response(b"", status=204)
        if decision.error is not None:
            g.fault = decision.label
            if not graph_call:
                return _identity_fault(decision.error)
            return from_exception(decision.error)
        if auth_error is not None:
            return from_exception(auth_error)
        # Batch items count like direct calls: Graph runs a batch's independent items concurrently, so five
        # for one mailbox meet the limit of four (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits).
        if mailbox is not None and ctx is not None:
            error = state.faults.enter_mailbox(ctx.client_id, mailbox)
            if error is not None:
                g.fault = "mailboxConcurrency"
                return from_exception(error)
            g.mailbox_slot = (ctx.client_id, mailbox)
        if decision.latency_s:
            # Added latency models server work, so it holds the mailbox slot like a slow request does.
            time.sleep(decision.latency_s)
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["request-id"] = g.get("request_id", "")
        if g.get("client_request_id"):
            response.headers["client-request-id"] = g.client_request_id
        if request.path.startswith("/v1.0"):
            response.headers["x-ms-ags-diagnostic"] = '{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"EMU"}}'
            response.headers.setdefault("Cache-Control", "no-cache")
        if not request.path.startswith("/_emulator"):
            ctx = g.get("app_context")
            state.log_request(_entry(state, response.status_code, ctx.client_id if ctx else None))
        return response

    @app.teardown_request
    def _release(_exc: BaseException | None) -> None:
        slot = g.get("mailbox_slot")
        if slot is not None:
            state.faults.exit_mailbox(*slot)
            g.mailbox_slot = None

    @app.errorhandler(GraphHTTPError)
    def _graph_error(exc: GraphHTTPError) -> Response:
        return from_exception(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 400
        if request.path.startswith("/v1.0"):
            if status == 404:
                segment = request.path.rstrip("/").rsplit("/", 1)[-1]
                return graph_error(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            if status == 405:
                return graph_error(405, "Request_BadRequest" if "/users" in request.path or "/groups" in request.path
                                   else "BadRequest",
                                   f"The HTTP method '{request.method}' is not allowed for this resource.")
        return graph_error(status, exc.name.replace(" ", ""), exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # A bug in the emulator must not look like a Graph 500 (clients would retry it): say so plainly.
        app.logger.exception("emulator bug")
        return graph_error(500, "EmulatorBug",
                           f"The emulator failed to handle this request ({type(exc).__name__}); this is a bug in the emulator.")

    delivery.install(state)
    for blueprint in _BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.wsgi_app = _PathMiddleware(_ResetMiddleware(app.wsgi_app))  # type: ignore[method-assign]
    return app


def _entry(state: EmulatorState, status: int, app_id: str | None) -> RequestLogEntry:
    started = g.get("started", time.perf_counter())
    return RequestLogEntry(
        seq=0, time=iso_ts(state.clock.time()), method=request.method, path=request.full_path.rstrip("?"),
        status=status, client_request_id=g.get("client_request_id", ""), request_id=g.get("request_id", ""),
        app=app_id, duration_ms=(time.perf_counter() - started) * 1000, fault=g.get("fault"),
        batch=bool(g.get("in_batch", False)),
    )
