"""How the identity platform answers: JSON errors for its endpoints, HTML pages for the browser, redirects.

Token-endpoint errors follow https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#error-response-1
(``error``, ``error_description`` starting with the AADSTS code, ``error_codes``, ``timestamp``, ``trace_id``,
``correlation_id``). Texts are guesses unless the documentation quotes them; clients branch on ``error``.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Response, g

from syncer.emulator.api import base_url


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """A JSON answer of the identity platform (never cached, as the token endpoint says)."""
    response = Response(orjson.dumps(body), status=status, content_type="application/json; charset=utf-8")
    response.headers["Cache-Control"] = "no-store, no-cache"
    response.headers["Pragma"] = "no-cache"
    return response


def aad_error(status: int, error: str, code: int, description: str, *, suberror: str | None = None) -> Response:
    """The identity platform's error shape."""
    now = datetime.now(UTC)
    trace = str(uuid.uuid4())
    correlation = getattr(g, "client_request_id", "") or trace
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
                             f"{correlation} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code],
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"{base_url()}/error?code={code}",
    }
    if suberror:
        body["suberror"] = suberror
    return json_response(body, status)


class IdentityError(Exception):
    """Raised inside an identity view to answer with :func:`aad_error`."""

    def __init__(self, status: int, error: str, code: int, description: str, *, suberror: str | None = None) -> None:
        super().__init__(f"{error} AADSTS{code}: {description}")
        self.status, self.error, self.code, self.description, self.suberror = status, error, code, description, suberror

    def response(self) -> Response:
        """The JSON answer."""
        return aad_error(self.status, self.error, self.code, self.description, suberror=self.suberror)


def page(title: str, body_html: str, status: int = 200) -> Response:
    """A small HTML page (the sign-in and device-login pages, and errors shown instead of a redirect)."""
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}button{margin:.2em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    response = Response(doc, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(code: int, description: str, status: int = 400) -> Response:
    """What the sign-in page shows when it cannot trust the redirect URI: the error, no redirect."""
    text = f"AADSTS{code}: {description}"
    return page("Sign in: error", f"<p id='error' data-code='AADSTS{code}'>{html.escape(text)}</p>", status)


def redirect_with(redirect_uri: str, params: dict[str, str], response_mode: str) -> Response:
    """Send the browser back to the app with *params* (query, fragment or an auto-posted form)
    (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#successful-response)."""
    if response_mode == "form_post":
        fields = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
                         for k, v in params.items())
        doc = (f"<!doctype html><html><body onload='document.forms[0].submit()'>"
               f"<form method='post' action='{html.escape(redirect_uri)}'>{fields}"
               "<noscript><button type='submit'>Continue</button></noscript></form></body></html>")
        return Response(doc, status=200, content_type="text/html; charset=utf-8")
    separator = "#" if response_mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    response = Response(b"", status=302)
    response.headers["Location"] = f"{redirect_uri}{separator}{urlencode(params)}"
    return response
