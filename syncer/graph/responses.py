"""What comes back from Graph: the response the client hands out, and typed errors built from a failure.

Pure functions of status, headers and body, so every rule (error body shapes, request ids,
``Retry-After`` as seconds or as an HTTP date, ``Location`` on 410) is unit-tested without a server.
Graph's error body (https://learn.microsoft.com/en-us/graph/errors) is ``{"error": {"code", "message", "innerError": {"request-id",
"client-request-id", "date", ...}}}``; anything else (an HTML page from a proxy, an empty body) still
becomes a typed error with the status and a truncated, masked excerpt.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from syncer.errors import GraphError, ResyncRequired, graph_error_class, mask_secrets, truncate


class GraphResponse:
    """A successful answer from Graph: status, headers and the raw body, parsed on demand with orjson."""

    __slots__ = ("client_request_id", "content", "headers", "request_id", "status")

    def __init__(
        self, status: int, headers: Mapping[str, str], content: bytes, *, client_request_id: str | None = None
    ) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self.request_id = headers.get("request-id")
        self.client_request_id = client_request_id or headers.get("client-request-id")

    def json(self) -> Any:
        """The body parsed as JSON (``None`` for an empty body, e.g. 204)."""
        return orjson.loads(self.content) if self.content else None

    def __repr__(self) -> str:
        return (
            f"GraphResponse(status={self.status}, request_id={self.request_id!r}, bytes={len(self.content)})"
        )


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, date_header: str | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date; ``None`` if absent or unreadable.

    A date is measured against the response's own ``Date`` header when there is one, so that clock
    skew between us and the server does not shorten or stretch the wait; else against *now*. A
    date in the past means "retry now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds else None  # NaN is not a delay
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(date_header) if date_header else None
    if reference is None:
        reference = now or datetime.now(UTC)
    return max((when - reference).total_seconds(), 0.0)


def _http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_error_body(content: bytes | str | None) -> tuple[str | None, str | None, dict[str, Any]]:
    """``(code, message, innerError)`` from a Graph error body; ``(None, None, {})`` when it is not one.

    Batch items carry the body already parsed, hence a dict is accepted too.
    """
    body: Any = content
    if isinstance(content, (bytes, str)):
        if not content:
            return None, None, {}
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None, None, {}
    if not isinstance(body, dict):
        return None, None, {}
    error = body.get("error")
    if isinstance(error, str):
        # The identity platform's shape: {"error": "invalid_client", "error_description": "..."}
        return error, _str_or_none(body.get("error_description")), {}
    if not isinstance(error, dict):
        return None, None, {}
    inner = error.get("innerError") or error.get("innererror") or {}
    return (
        _str_or_none(error.get("code")),
        _str_or_none(error.get("message")),
        inner if isinstance(inner, dict) else {},
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _body_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, bytes):
        return content[:4000].decode("utf-8", "replace")
    if isinstance(content, str):
        return content[:4000]
    try:
        return orjson.dumps(content)[:4000].decode("utf-8", "replace")
    except TypeError:
        return repr(content)[:4000]


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    content: Any,
    *,
    method: str | None = None,
    url: str | None = None,
    client_request_id: str | None = None,
    now: datetime | None = None,
) -> GraphError:
    """The typed :class:`GraphError` for a failed answer (class chosen by status; 410 → ResyncRequired)."""
    code, message, inner = parse_error_body(content)
    request_id = headers.get("request-id") or _str_or_none(inner.get("request-id"))
    client_request_id = (
        client_request_id or headers.get("client-request-id") or _str_or_none(inner.get("client-request-id"))
    )
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now, date_header=headers.get("Date"))
    text = _body_text(content)
    if message is None:
        message = truncate(mask_secrets(text), 300) if text.strip() else f"HTTP {status} with no error body"
    common: dict[str, Any] = {
        "status": status,
        "code": code,
        "method": method,
        "url": url,
        "request_id": request_id,
        "client_request_id": client_request_id,
        "retry_after": retry_after,
        "body": text or None,
    }
    cls = graph_error_class(status)
    if cls is ResyncRequired:
        return ResyncRequired(message, location=headers.get("Location"), **common)
    return cls(message, **common)


def code_is(error: GraphError, *codes: str) -> bool:
    """Whether Graph's error code is one of *codes*, compared case-insensitively (both spellings occur: https://learn.microsoft.com/en-us/graph/throttling)."""
    return error.code is not None and error.code.lower() in {c.lower() for c in codes}
