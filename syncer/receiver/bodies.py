"""Reading a request body within bounds of time and memory: the receiver's defence against slow or
heavy clients.

Graph's own POSTs are small and quick; a client that drips a body, or holds many large ones, must
not take the receiver's connections or memory from them. :class:`ReadDeadlines` cuts a body read
still running at its deadline, :class:`BodyBudget` bounds the bytes of bodies in flight per process.
The receiver (:mod:`syncer.receiver.receive`) reads each body in chunks under both.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

# RFC 9110 §8.6: Content-Length = 1*DIGIT. Not str.isdigit(), which is true for "²" and other digits.
CONTENT_LENGTH = re.compile(r"[0-9]+")
READ_CHUNK = 64 * 1024
# Set in the WSGI environ by ``receive`` when the connection must not be reused (the rest of the body
# was not read); the fast path and the Flask view act on it.
CLOSE_KEY = "syncer.close_connection"


class BodyBudget:
    """Bytes of request bodies in flight in this process, against a budget (see ``ReceiverSettings``)."""

    def __init__(self, total: int, large_body_bytes: int) -> None:
        self.total = total
        self.large_limit = total * 3 // 4
        self.large_body_bytes = large_body_bytes
        self.in_flight = 0
        self._lock = threading.Lock()

    def take(self, size: int, *, body_size: int) -> bool:
        """Reserve *size* bytes for a body of (so far) *body_size* bytes; False when over budget."""
        limit = self.total if body_size <= self.large_body_bytes else self.large_limit
        with self._lock:
            if self.in_flight + size > limit:
                return False
            self.in_flight += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.in_flight -= size


class ReadDeadlines:
    """Cuts the body read of a request still running at its deadline.

    A timer thread (a greenlet under gevent's patching) shuts down the read side of the request's
    socket: a ``recv`` blocked in any thread or greenlet returns at once with end of stream. A socket
    timeout alone would not do: it bounds each ``recv``, and a client dripping a byte per interval
    would hold the request for as long as it likes. The timer looks every *tick* seconds (the
    deadline's precision), so that watching a request costs one dictionary entry.
    """

    def __init__(self, tick: float = 0.2) -> None:
        self.tick = tick
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        key = next(self._keys)
        with self._lock:
            self._watched[key] = (deadline, sock)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="syncer-read-deadlines", daemon=True)
                self._thread.start()
        return key

    def done(self, key: int) -> bool:
        """Stop watching; True if the deadline had passed (the socket's read side is shut)."""
        with self._lock:
            return self._watched.pop(key, None) is None

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                expired = [key for key, (deadline, _) in self._watched.items() if deadline <= now]
                socks = [self._watched.pop(key)[1] for key in expired]
            for sock in socks:
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass  # the client went away already


def request_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    # gunicorn (every worker class) and werkzeug's server publish the client socket.
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def force_close(start_response: Callable[..., Any], headers: list[tuple[str, str]]) -> None:
    # gunicorn drops a Connection header from the app (hop-by-hop) but closes when its response object,
    # whose bound method start_response is, is told to; werkzeug's server honours the header.
    close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if callable(close):
        close()
    headers.append(("Connection", "close"))
