"""The pager's guards (syncer.graph.delta) against a tiny local HTTP server that plays a misbehaving Graph.

The emulator always pages correctly, so the broken answers (an empty or non-string nextLink, a loop,
items that are not objects, a round that never ends, links to another host) come from canned pages.
A second listener stands for "another host": it proves that nothing is ever sent to it.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from syncer.errors import ForeignOriginError, PagingError
from syncer.graph.client import DEFAULT_MAX_PAGES, GraphClient
from syncer.graph.delta import DeltaRound, iter_pages, link_problem


class StaticCredential:
    tenant_id = "t-paging"

    def token(self, scopes: tuple[str, ...], *, refused: str | None = None) -> str:
        return "static-token"


Route = Callable[[str, str], Any]
"""(base URL, path with query) -> the JSON document to answer."""


class PageServer:
    """Answers GETs with ``route(base, path)`` as JSON; counts the requests."""

    def __init__(self, route: Route) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = orjson.dumps(route(server.base, self.path))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def client(self, **kwargs: Any) -> GraphClient:
        return GraphClient(f"{self.base}/v1.0", StaticCredential(), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Listener:
    """Another host: a TCP listener that only counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Route], PageServer]]:
    servers: list[PageServer] = []

    def start(route: Route) -> PageServer:
        servers.append(PageServer(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def elsewhere() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


def pages(server: PageServer, *, max_pages: int | None = None, limit: int = 50) -> list[Any]:
    """Iterate at most *limit* pages (so that a pager with no loop guard fails the test rather than hang)."""
    cap = {"max_pages": max_pages} if max_pages is not None else {}
    with server.client() as client:
        return list(itertools.islice(iter_pages(client, "users/delta", **cap), limit))


def test_a_good_round_pages_to_its_delta_link(serve: Callable[[Route], PageServer]) -> None:
    def route(base: str, path: str) -> Any:
        if path == "/v1.0/users/delta":
            return {"@odata.nextLink": f"{base}/v1.0/users/delta?$skiptoken=2", "value": [{"id": "a"}]}
        if path == "/v1.0/users/delta?$skiptoken=2":
            return {"@odata.nextLink": f"{base}/v1.0/users/delta?$skiptoken=3", "value": []}
        return {"@odata.deltaLink": f"{base}/v1.0/users/delta?$deltatoken=9", "value": [{"id": "b"}]}

    server = serve(route)
    with server.client() as client:
        assert client.max_pages == DEFAULT_MAX_PAGES
        rnd = client.delta("users/delta")
        assert [len(p.items) for p in rnd] == [1, 0, 1]
        assert rnd.delta_link == f"{server.base}/v1.0/users/delta?$deltatoken=9"


@pytest.mark.parametrize("link", ["", "  ", 42, ["x"], {"href": "x"}, True])
def test_a_next_link_that_is_empty_or_not_a_string_is_refused(serve: Callable[[Route], PageServer], link: Any) -> None:
    server = serve(lambda base, path: {"@odata.nextLink": link, "value": [{"id": "a"}]})
    with pytest.raises(PagingError, match=r"nextLink is (empty|not a string)"):
        pages(server)
    assert len(server.requests) == 1


@pytest.mark.parametrize("link", ["", 7])
def test_a_delta_link_that_is_empty_or_not_a_string_is_never_handed_out(
    serve: Callable[[Route], PageServer], link: Any
) -> None:
    # An empty deltaLink, stored, made every later pass "ok, 0 pages".
    server = serve(lambda base, path: {"@odata.deltaLink": link, "value": []})
    with server.client() as client:
        rnd = client.delta("users/delta")
        with pytest.raises(PagingError, match="deltaLink is"):
            list(rnd)
        assert rnd.delta_link is None


def test_a_next_link_loop_is_stopped(serve: Callable[[Route], PageServer]) -> None:
    # A -> B -> A: the third request would start the loop again.
    def route(base: str, path: str) -> Any:
        other = "b" if path.endswith("=a") else "a"
        return {"@odata.nextLink": f"{base}/v1.0/users/delta?$skiptoken={other}", "value": []}

    server = serve(route)
    with pytest.raises(PagingError, match="already followed"):
        pages(server)
    assert len(server.requests) == 3


def test_a_next_link_back_to_the_start_is_a_loop(serve: Callable[[Route], PageServer]) -> None:
    server = serve(lambda base, path: {"@odata.nextLink": f"{base}/v1.0/users/delta", "value": []})
    with pytest.raises(PagingError, match="already followed"):
        pages(server)
    assert len(server.requests) == 1


@pytest.mark.parametrize("item", [None, "id-only", 3, ["a"]])
def test_value_items_that_are_not_objects_are_refused(serve: Callable[[Route], PageServer], item: Any) -> None:
    server = serve(lambda base, path: {"@odata.deltaLink": f"{base}/v1.0/d", "value": [{"id": "a"}, item]})
    with pytest.raises(PagingError, match=r"JSON object, found .* at index 1"):
        pages(server)


def test_a_round_that_never_ends_stops_at_the_page_cap(serve: Callable[[Route], PageServer]) -> None:
    def route(base: str, path: str) -> Any:
        n = int(path.rsplit("=", 1)[1]) if "=" in path else 0
        return {"@odata.nextLink": f"{base}/v1.0/users/delta?$skiptoken={n + 1}", "value": []}

    server = serve(route)
    with pytest.raises(PagingError, match="cap of 5"):
        pages(server, max_pages=5)
    assert len(server.requests) == 5
    # The client's own cap applies when the call names none.
    with server.client(max_pages=3) as client, pytest.raises(PagingError, match="cap of 3"):
        list(client.iter_pages("users/delta"))
    # A round of exactly the cap is fine.
    server2 = serve(lambda base, path: {"@odata.deltaLink": f"{base}/v1.0/d", "value": []})
    assert len(pages(server2, max_pages=1)) == 1


def test_an_empty_start_url_is_refused(serve: Callable[[Route], PageServer]) -> None:
    server = serve(lambda base, path: {"value": []})
    with server.client() as client, pytest.raises(PagingError, match="empty"):
        list(iter_pages(client, ""))
    assert server.requests == []


@pytest.mark.parametrize("annotation", ["@odata.nextLink", "@odata.deltaLink"])
def test_a_link_to_another_origin_is_not_followed(
    serve: Callable[[Route], PageServer], elsewhere: Listener, annotation: str
) -> None:
    foreign = f"http://127.0.0.1:{elsewhere.port}/v1.0/users/delta?$skiptoken=secret-ish"
    server = serve(lambda base, path: {annotation: foreign, "value": [{"id": "a"}]})
    with server.client() as client:
        rnd = DeltaRound(client, "users/delta")
        with pytest.raises(ForeignOriginError) as caught:
            list(rnd)
        assert rnd.delta_link is None and rnd.pages == 0  # the page carrying the link was not handed over
    assert caught.value.handed == annotation and not caught.value.retryable
    assert "secret-ish" not in str(caught.value)
    assert elsewhere.connections == 0


def test_the_client_refuses_any_other_origin_before_sending(elsewhere: Listener) -> None:
    client = GraphClient("https://graph.microsoft.com", StaticCredential())  # type: ignore[arg-type]
    assert client.url_for("https://GRAPH.microsoft.com:443/v1.0/users").endswith("/users")
    for url in (
        f"http://127.0.0.1:{elsewhere.port}/v1.0/users",
        "http://graph.microsoft.com/v1.0/users",  # same host, other scheme
        "https://graph.microsoft.com:8443/v1.0/users",  # other port
        "https://graph.microsoft.com@evil.example/v1.0/users",  # the real host is evil.example
        "//evil.example/v1.0/users",
        "https:evil.example/v1.0/users",
    ):
        with pytest.raises(ForeignOriginError, match="refusing"):
            client.url_for(url)
    with pytest.raises(ForeignOriginError):
        client.request("GET", f"http://127.0.0.1:{elsewhere.port}/v1.0/users")
    assert elsewhere.connections == 0


def test_link_problem_never_quotes_the_link() -> None:
    assert link_problem("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc") is None
    for bad in ("", " ", None, 3, "https://g/x?$deltatoken=abc\n"):
        problem = link_problem(bad)
        assert problem is not None and "abc" not in problem
