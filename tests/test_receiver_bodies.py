"""Slow, heavy or ill-framed request bodies cannot exhaust the receiver, over real HTTP in every server
syncer runs: werkzeug (`syncer run`, with its request handler) and `syncer serve` (gunicorn: gevent
workers on PostgreSQL, gthread on SQLite, see tests/test_receiver.py's ``served``)."""

from __future__ import annotations

import io
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import notification_builders as nb
import orjson
import pytest
import requests
from sqlalchemy.engine import Engine
from test_receiver import JSON, SUB, add_subscription, inbox_rows, make_receiver, served
from werkzeug.serving import make_server

from syncer import database, schema
from syncer.errors import NotificationError
from syncer.receiver import notifications
from syncer.receiver.app import create_app
from syncer.receiver.receive import ReceiverSettings
from syncer.run import _QuietHandler

SERVERS = ["werkzeug", "gunicorn"]
ENV = {
    "body_timeout": "SYNCER_RECEIVER_BODY_TIMEOUT",
    "body_budget_bytes": "SYNCER_RECEIVER_BODY_BUDGET",
    "threads": "SYNCER_RECEIVER_THREADS",
    "connections": "SYNCER_RECEIVER_CONNECTIONS",
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    yield engine
    engine.dispose()


@contextmanager
def receiver_at(kind: str, engine: Engine, database_url: str, **settings: Any) -> Iterator[str]:
    """The receiver's URL: werkzeug with `syncer run`'s handler, or `syncer serve` with one worker."""
    if kind == "werkzeug":
        settings.pop("threads", None)
        settings.pop("connections", None)
        server = make_receiver(engine, **settings)
        server.httpd.shutdown()
        server.httpd.server_close()
        handler = type("_Handler", (_QuietHandler,), {"timeout": settings.get("body_timeout", ReceiverSettings.body_timeout)})
        httpd = make_server("127.0.0.1", 0, server.app, threaded=True, request_handler=handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_port}"
        finally:
            httpd.shutdown()
            httpd.server_close()
            server.app.extensions["syncer.receiver.app"].close()
    else:
        env = {ENV[k]: str(v) for k, v in settings.items()}
        with served(database_url, SYNCER_RECEIVER_WORKERS="1", **env) as (url, _output):
            yield url


def head(length: bytes, path: bytes = b"/notifications") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + length + b"\r\n\r\n"
    )


def connect(url: str, data: bytes, *, timeout: float = 8) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    sock.sendall(data)
    return sock


def answer(sock: socket.socket) -> tuple[int, bool]:
    """The status of the response on *sock*, and whether the server then closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    status = int(data.split(b" ", 2)[1])
    try:
        while sock.recv(65536):
            pass
        closed = True
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return status, closed


def valid_post(url: str, user: str) -> tuple[int, float]:
    session = requests.Session()
    session.trust_env = False
    started = time.monotonic()
    response = session.post(url + "/notifications", data=nb.body(nb.change_item(SUB, user_id=user)), headers=JSON, timeout=10)
    return response.status_code, time.monotonic() - started


# --- Content-Length ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_a_content_length_that_is_not_ascii_digits_is_400_at_once(kind: str, engine: Engine, database_url: str) -> None:
    with receiver_at(kind, engine, database_url) as url:
        for value in ["²".encode(), b"\xb2", b"+12", b"-1", b"0x10", b"1_2", "١٢".encode()]:
            sock = connect(url, head(value) + b'{"value":[]}', timeout=3)
            started = time.monotonic()
            with sock:
                status, closed = answer(sock)
            assert (status, closed) == (400, True), value
            assert time.monotonic() - started < 2, value
        # Whitespace around a field value is not part of it (RFC 9110 §5.5): every server strips it, and
        # "Content-Length:  12" is 12.
        with connect(url, head(b" 12") + b'{"value":[]}', timeout=3) as sock:
            assert answer(sock)[0] == 202


def test_the_app_itself_refuses_a_length_that_is_not_ascii_digits_without_reading(engine: Engine) -> None:
    """What reaches the app when a server passes the header as is (no server we run does for " 12")."""
    app = create_app(engine, settings=ReceiverSettings(group_commit=False))

    class Unreadable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body was read")

    for value in [" 12", "12 ", "²", "+12", "-1", "0x10"]:
        seen: list[Any] = []
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/notifications", "QUERY_STRING": "", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": value, "wsgi.input": Unreadable(), "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80",
        }
        body = b"".join(app.wsgi_app(environ, lambda status, headers, *_, seen=seen: seen.append((status, headers))))
        status, headers = seen[0]
        assert status.startswith("400 "), (value, status, body)
        assert ("Connection", "close") in headers
    app.extensions["syncer.receiver.app"].close()


# --- slow bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_an_idle_or_dripping_body_is_cut_at_the_deadline(kind: str, engine: Engine, database_url: str) -> None:
    with receiver_at(kind, engine, database_url, body_timeout=1.0) as url:
        idle = connect(url, head(b"100") + b'{"value": [')
        drip = connect(url, head(b"100") + b"{")
        started = time.monotonic()
        stop = threading.Event()

        def dripping() -> None:
            # A byte every 0.2 s: each recv returns well within any per-read timeout.
            while not stop.wait(0.2):
                try:
                    drip.sendall(b" ")
                except OSError:
                    return

        dripper = threading.Thread(target=dripping)
        dripper.start()
        try:
            with idle:
                assert answer(idle) == (408, True)
            with drip:
                assert answer(drip) == (408, True)
            assert time.monotonic() - started < 3.5
        finally:
            stop.set()
            dripper.join()
        assert valid_post(url, "after")[0] == 202


@pytest.mark.parametrize("kind", SERVERS)
def test_slow_bodies_beyond_the_capacity_do_not_stop_a_valid_post(kind: str, engine: Engine, database_url: str) -> None:
    # Capacity: 24 requests at once under gevent, 12 threads under gthread, a thread per connection on
    # werkzeug. 48 slow bodies hold every gunicorn slot; each is cut after a second, so a valid POST
    # queued behind them is answered within a few deadlines (before the fix: never).
    with receiver_at(kind, engine, database_url, body_timeout=1.0, threads=12, connections=24) as url:
        slow = [connect(url, head(b"1000") + b'{"value": [') for _ in range(48)]
        try:
            status, seconds = valid_post(url, "valid")
            assert status == 202 and seconds < 6, seconds
            assert [r.resource_id for r in inbox_rows(engine)] == ["valid"]
        finally:
            for sock in slow:
                sock.close()


# --- heavy bodies --------------------------------------------------------------------------------------


def heavy_body() -> bytes:
    """4 MiB of empty arrays: ~1.4 million JSON values, ~100 MB once parsed."""
    return b'{"value": [' + b",".join([b"[]"] * (4 * 1024 * 1024 // 3 - 10)) + b"]}"


def test_a_body_with_too_many_values_is_refused_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[int] = []
    loads = orjson.loads

    def counting(data: Any) -> Any:
        parses.append(len(data))
        return loads(data)

    monkeypatch.setattr(notifications.orjson, "loads", counting)
    with pytest.raises(NotificationError) as refused:
        notifications.parse_collection(heavy_body())
    assert refused.value.reason == "too_large"
    assert parses == []
    # Commas and brackets inside strings are not values: such a body is parsed as usual.
    items = [nb.change_item(SUB, user_id=f"a,b,[c],{{d}},{n}") for n in range(1000)]
    stringy = nb.body(*items).replace(b'"resource"', b'"note":"' + b",[{" * 300 + b'","resource"')
    assert notifications.parse_collection(stringy).size == 1000
    assert len(parses) == 1


@pytest.mark.parametrize("kind", SERVERS)
def test_heavy_bodies_do_not_slow_valid_posts(kind: str, engine: Engine, database_url: str) -> None:
    heavy = heavy_body()
    statuses: list[int] = []

    with receiver_at(kind, engine, database_url) as url:
        def send_heavy() -> None:
            session = requests.Session()
            session.trust_env = False
            for _ in range(3):
                statuses.append(session.post(url + "/notifications", data=heavy, headers=JSON, timeout=30).status_code)

        senders = [threading.Thread(target=send_heavy) for _ in range(4)]
        for t in senders:
            t.start()
        times = []
        for n in range(10):
            status, seconds = valid_post(url, f"v{n}")
            assert status == 202
            times.append(seconds)
        for t in senders:
            t.join()
    assert statuses == [400] * 12
    assert statistics.median(times) < 0.5, times


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def gunicorn_worker(url: str) -> int:
    """The pid of the one worker of the `syncer serve` listening at *url* (found by its environment)."""
    marker = f"SYNCER_RECEIVER_BIND={urlsplit(url).netloc}".encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.add(int(proc.name))
        except OSError:
            continue
    parents = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in pids}
    (worker,) = [pid for pid, parent in parents.items() if parent in pids]
    return worker


def test_held_heavy_bodies_stay_within_the_budget_and_small_posts_still_pass(engine: Engine, database_url: str) -> None:
    budget = 8 * 1024 * 1024
    with receiver_at("gunicorn", engine, database_url, body_timeout=30, body_budget_bytes=budget) as url:
        worker = gunicorn_worker(url)
        assert valid_post(url, "warm")[0] == 202
        before = rss_kib(worker)
        length = 4 * 1024 * 1024
        held: list[socket.socket] = []
        try:
            for _ in range(24):
                parts = urlsplit(url)
                sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
                held.append(sock)
                try:
                    sock.sendall(head(str(length).encode()) + b" " * (length - 1024))
                except OSError:
                    pass  # refused (503) and closed before the whole body was sent
            time.sleep(1.0)
            grown = rss_kib(worker) - before
            # Large bodies may take three quarters of the budget: one 4 MiB body is held, the rest 503.
            assert grown < (budget + 16 * 1024 * 1024) // 1024, f"RSS grew by {grown} KiB"
            status, seconds = valid_post(url, "small")
            assert status == 202 and seconds < 2
        finally:
            for sock in held:
                sock.close()
    assert {r.resource_id for r in inbox_rows(engine)} == {"warm", "small"}
