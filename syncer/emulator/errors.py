"""Graph's error body, and the one exception the emulator's code raises to produce it.

Every failure a client can see leaves the emulator as Graph writes it (https://learn.microsoft.com/graph/errors)::

    {"error": {"code": "...", "message": "...",
               "innerError": {"date": "...", "request-id": "...", "client-request-id": "..."}}}

This module is deliberately separate from syncer.errors: the emulator and the client are two independent
readings of the documentation and share no protocol code.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Response, g, has_request_context


class GraphHTTPError(Exception):
    """Raised anywhere in the emulator to answer the current request with a Graph error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        inner: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.inner = dict(inner or {})


def error_body(code: str, message: str, *, inner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON error document (also used inside $batch responses)."""
    inner_error: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    if has_request_context():
        inner_error["request-id"] = getattr(g, "request_id", "")
        inner_error["client-request-id"] = getattr(g, "client_request_id", "") or getattr(g, "request_id", "")
    if inner:
        inner_error.update(inner)
    return {"error": {"code": code, "message": message, "innerError": inner_error}}


def graph_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    inner: Mapping[str, Any] | None = None,
) -> Response:
    """A Flask response carrying Graph's error body."""
    response = Response(
        orjson.dumps(error_body(code, message, inner=inner)),
        status=status,
        content_type="application/json",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_exception(exc: GraphHTTPError) -> Response:
    """Render a raised :class:`GraphHTTPError`."""
    return graph_error(exc.status, exc.code, exc.message, headers=exc.headers, inner=exc.inner)


# Shorthands for the errors Graph answers most, so messages stay identical across views.
def bad_request(message: str, code: str = "BadRequest") -> GraphHTTPError:
    """400."""
    return GraphHTTPError(400, code, message)


def not_found(message: str, code: str = "ResourceNotFound") -> GraphHTTPError:
    """404."""
    return GraphHTTPError(404, code, message)


def forbidden(message: str = "Insufficient privileges to complete the operation.",
              code: str = "Authorization_RequestDenied") -> GraphHTTPError:
    """403."""
    return GraphHTTPError(403, code, message)
