"""A tiny webhook receiver for the emulator's subscription and delivery tests (plain http on loopback).

It answers Graph's validation handshake correctly or in one of the wrong ways Graph rejects, and answers
notification POSTs with scripted statuses and delays, recording everything it saw. Written from the docs
(https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks), independently of syncer's own receiver.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class _Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the emulator's pooled sessions are exercised

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@dataclass
class Received:
    """One notification POST as the receiver saw it."""

    path: str
    query: dict[str, str]
    body: dict[str, Any]
    content_type: str
    at: float


@dataclass
class Validation:
    """One handshake request as the receiver saw it."""

    path: str
    token: str
    raw_query: str
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """Start with :meth:`start`; stop with :meth:`stop` (or use as a context manager)."""

    #: "echo" (correct), "encoded" (returns the token still URL-encoded), "json", "html", "status202",
    #: "status500", "redirect", "wrong", "slow" (sleeps handshake_delay_s first, then echoes).
    handshake: str = "echo"
    handshake_delay_s: float = 0.0
    #: Statuses for the next notification POSTs, consumed in order; then `default_status`.
    script: list[int] = field(default_factory=list)
    default_status: int = 202
    #: Seconds to sleep before answering each notification POST (or a function of the POST number).
    delay_s: float | Callable[[int], float] = 0.0
    #: (certificate PEM path, key PEM path) to serve https instead of http.
    tls: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    validations: list[Validation] = field(default_factory=list)
    _server: BaseWSGIServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        app = Flask("test-webhook")

        @app.post("/<path:path>")
        def hook(path: str) -> Response:
            return self._handle(path)

        ssl_context = None
        if self.tls is not None:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(*self.tls)
        self._server = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_Handler, ssl_context=ssl_context
        )
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "hook") -> str:
        assert self._server is not None
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_port}/{path}"

    def _handle(self, path: str) -> Response:
        token = request.args.get("validationToken")
        if token is not None:
            return self._handshake(path, token)
        with self._lock:
            self.attempts += 1
            number = self.attempts
            status = self.script.pop(0) if self.script else self.default_status
        delay = self.delay_s(number) if callable(self.delay_s) else self.delay_s
        if delay:
            time.sleep(delay)
        body = orjson.loads(request.get_data())
        with self._lock:
            if 200 <= status < 300:
                self.received.append(
                    Received(path, dict(request.args), body, request.headers.get("Content-Type", ""), time.monotonic())
                )
        return Response(status=status)

    def _handshake(self, path: str, token: str) -> Response:
        raw_query = request.query_string.decode()
        with self._lock:
            self.validations.append(
                Validation(path, token, raw_query, request.headers.get("Content-Type", ""), request.get_data())
            )
        mode = "echo" if path == "echoed" else self.handshake  # the target of "redirect" answers correctly
        if mode == "slow":
            time.sleep(self.handshake_delay_s)
            mode = "echo"
        if mode == "echo":
            return Response(token, content_type="text/plain")
        if mode == "encoded":
            encoded = raw_query.split("validationToken=", 1)[1].split("&", 1)[0]
            return Response(encoded, content_type="text/plain")
        if mode == "json":
            return Response(orjson.dumps({"validationToken": token}), content_type="application/json")
        if mode == "html":
            return Response(token, content_type="text/html")
        if mode == "status202":
            return Response(token, status=202, content_type="text/plain")
        if mode == "redirect":  # to a URL that would echo correctly
            return Response(status=307, headers={"Location": f"/echoed?{raw_query}"})
        if mode == "status500":
            return Response("boom", status=500, content_type="text/plain")
        return Response(token + "x", content_type="text/plain")

    # --- helpers for assertions ---------------------------------------------------------------------------------

    def items(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every changeNotification item received (optionally only on *path*)."""
        with self._lock:
            return [item for r in self.received if path is None or r.path == path for item in r.body["value"]]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def wait_items(self, count: int, timeout: float = 5.0, path: str | None = None) -> list[dict[str, Any]]:
        self.wait_for(lambda: len(self.items(path)) >= count, timeout)
        return self.items(path)
