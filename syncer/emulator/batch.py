"""POST /v1.0/$batch: JSON batching as https://learn.microsoft.com/graph/json-batching describes it.

The envelope is checked first (JSON, at most 20 requests, unique case-insensitive ids, relative URLs,
a Content-Type header with every body, dependsOn naming known ids); a bad envelope is one 400. Each
item then runs through the same Flask app as a separate request -- same auth header, same faults (so a
throttled item comes back as 429 with its own Retry-After inside the 200 envelope), same latency, same
per-mailbox concurrency limit, same request log (flagged ``batch``).

Items run concurrently, as Graph runs them: "the individual requests aren't interdependent and therefore
can be placed into the batch request in any order", and only ``dependsOn`` sequences them
(https://learn.microsoft.com/en-us/graph/json-batching). Every item whose dependencies are done starts at
once on a thread of its own (threads shared by all batches and reused, far more than are ever busy, so none waits
for a thread): five items for one mailbox then meet Outlook's 4 concurrent requests per app and mailbox
(https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits) and one of them answers
429, as Graph's would. An item starts only when everything it depends on has finished; one whose
dependency failed is not run and answers 424. Responses keep the request order (Graph allows any order).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.test import EnvironBuilder, run_wsgi_app

from syncer.emulator.errors import GraphHTTPError, error_body

bp = Blueprint("batch", __name__, url_prefix="/v1.0")

MAX_REQUESTS = 20
_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}
_KEEP_HEADERS = ("Content-Type", "Location", "Retry-After", "Preference-Applied", "ETag", "OData-Version")

#: Threads shared by every batch (idle ones are reused: starting 20 threads per envelope cost more CPU than
#: answering a small item). Its bound is far above what the emulator serves at once (50 full envelopes in
#: flight), so an item still never waits for a thread.
_ITEM_POOL = ThreadPoolExecutor(max_workers=MAX_REQUESTS * 50, thread_name_prefix="emulator-batch")


def _bad(message: str) -> GraphHTTPError:
    return GraphHTTPError(400, "BadRequest", message)


def _check(payload: Any) -> list[dict[str, Any]]:
    """The validated list of request items, or a GraphHTTPError(400) for the whole batch."""
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        raise _bad("Invalid batch payload format.")
    items = payload["requests"]
    if not items:
        raise _bad("Invalid batch payload format: 'requests' is empty.")
    if len(items) > MAX_REQUESTS:
        raise _bad(f"Number of batch request steps exceeds the maximum of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise _bad("Invalid batch payload format: each request must be an object.")
        rid = item.get("id")
        if not isinstance(rid, str) or not rid:
            raise _bad("Invalid batch payload format: every request needs a string 'id'.")
        if rid.lower() in seen:
            raise _bad(f"Batch request contains duplicate id '{rid}'.")
        seen.add(rid.lower())
        method = item.get("method")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise _bad(f"Invalid method '{method}' in request '{rid}'.")
        url = item.get("url")
        if not isinstance(url, str) or not url or "://" in url:
            raise _bad(f"Invalid url in request '{rid}': a relative URL is required.")
        headers = item.get("headers", {})
        if not isinstance(headers, dict):
            raise _bad(f"Invalid headers in request '{rid}'.")
        if "body" in item and not any(k.lower() == "content-type" for k in headers):
            raise _bad(f"Content-Type header must be specified when a body is present (request '{rid}').")
    for item in items:
        depends = item.get("dependsOn", [])
        if not isinstance(depends, list) or any(not isinstance(d, str) or d.lower() not in seen for d in depends):
            raise _bad(f"Request '{item['id']}' depends on an unknown request id.")
    return items


def _order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items in an order that honours dependsOn (400 on a cycle)."""
    by_id = {item["id"].lower(): item for item in items}
    done: list[dict[str, Any]] = []
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        mark = state.get(key)
        if mark == 2:
            return
        if mark == 1:
            raise _bad("The dependsOn graph of the batch contains a cycle.")
        state[key] = 1
        for dep in by_id[key].get("dependsOn", []):
            visit(dep.lower())
        state[key] = 2
        done.append(by_id[key])

    for item in items:
        visit(item["id"].lower())
    return done


def run_items(items: list[dict[str, Any]], run: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run *items* (checked, dependencies first) concurrently as far as ``dependsOn`` allows; answers in item order.

    *run* answers one item (``{"id", "status", ...}``). Each round starts every item whose dependencies
    have all finished, each on its own thread; an item with a failed dependency answers 424 unrun.
    """
    answers: dict[str, dict[str, Any]] = {}
    waiting = list(items)
    running: dict[Future[dict[str, Any]], str] = {}
    pool = _ITEM_POOL
    while waiting or running:
        still: list[dict[str, Any]] = []
        for item in waiting:
            depends = [d.lower() for d in item.get("dependsOn", [])]
            if any(d not in answers for d in depends):
                still.append(item)
                continue
            failed = [d for d in item.get("dependsOn", []) if answers[d.lower()]["status"] >= 400]
            if failed:
                answers[item["id"].lower()] = {
                    "id": item["id"], "status": 424, "headers": {"Content-Type": "application/json"},
                    "body": error_body("FailedDependency", f"Dependent request '{failed[0]}' failed.")}
                continue
            running[pool.submit(run, item)] = item["id"].lower()
        if len(still) == len(waiting) and not running:
            break  # unreachable after _order's cycle check; never spin
        waiting = still
        if not running:
            continue  # a 424 decided this round may let others start
        # With every item started, one wake-up when all are done (not one per item, each re-arming the rest).
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED if waiting else ALL_COMPLETED)
        for future in finished:
            answers[running.pop(future)] = future.result()
    return [answers[item["id"].lower()] for item in items]


def _run_one(app: Flask, item: dict[str, Any], *, base: str, auth: str | None) -> dict[str, Any]:
    """One item through the whole app (auth, faults, latency, mailbox limit, log), as its own request."""
    rid = item["id"]
    headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
    if auth and not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = auth
    body = item.get("body")
    data: bytes | None = None
    if body is not None:
        content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
        if isinstance(body, str) and "json" not in content_type.lower():
            try:
                data = base64.b64decode(body, validate=True)
            except ValueError:
                data = body.encode()
        else:
            data = orjson.dumps(body)
    url = item["url"] if item["url"].startswith("/") else f"/{item['url']}"
    builder = EnvironBuilder(path=f"/v1.0{url}", method=item["method"].upper(), headers=list(headers.items()), data=data,
                             base_url=base, environ_overrides={"emulator.batch": True})
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    # The WSGI app straight, not a test client: the client's cookie jar and redirect bookkeeping cost a quarter of
    # an item's CPU. A fresh app context gives the item its own `g` (request id, auth, fault label, mailbox slot).
    with app.app_context():
        app_iter, status, inner_headers = run_wsgi_app(app, environ)
        try:
            payload_bytes = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
    out: dict[str, Any] = {"id": rid, "status": int(status.split(" ", 1)[0]),
                           "headers": {k: inner_headers[k] for k in _KEEP_HEADERS if k in inner_headers}}
    if payload_bytes:
        if "json" in (inner_headers.get("Content-Type") or ""):
            out["body"] = orjson.loads(payload_bytes)
        else:
            out["body"] = base64.b64encode(payload_bytes).decode()
    return out


@bp.post("/$batch")
def batch() -> Response:
    """Run up to 20 requests; always 200 for a well-formed envelope."""
    if request.environ.get("emulator.batch"):
        raise _bad("Nested batch requests are not supported.")
    raw = request.get_data(cache=True)
    try:
        payload = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise _bad("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from None
    items = _order(_check(payload))
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    base = request.host_url
    auth = request.headers.get("Authorization")
    responses = run_items(items, lambda item: _run_one(app, item, base=base, auth=auth))
    return Response(orjson.dumps({"responses": responses}), status=200, content_type="application/json")
