"""Graph's validation handshake: prove a notification URL belongs to the subscriber before subscribing
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation).

Graph POSTs ``{url}?validationToken={opaque}`` (``text/plain``, empty body) and wants, within 10 s, ``200 OK`` with
``text/plain`` and the URL-decoded token verbatim; anything else fails the create (or the PATCH of the URL) with
``400 ValidationError`` and one of the observed messages below.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import requests

from syncer.emulator.errors import GraphHTTPError

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

# Observed handshake failures (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks lists the rules, not these bodies).
HANDSHAKE_NOT_200 = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)
HANDSHAKE_MISMATCH = "Subscription validation request failed. Response must exactly match validationToken query parameter."
HANDSHAKE_TIMEOUT = "Subscription validation request timed out."

_IDLE_SESSIONS: list[requests.Session] = []
"""Sessions between two handshakes: 30,000 creates reuse a few connection pools (and keep-alive connections,
where the receiver keeps them) instead of building a session and a connection each."""
_IDLE_LOCK = threading.Lock()
_MAX_IDLE = 32


def _take_session() -> requests.Session:
    with _IDLE_LOCK:
        if _IDLE_SESSIONS:
            return _IDLE_SESSIONS.pop()
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= (requests' trust_env)
    return session


def _give_back(session: requests.Session, *, healthy: bool) -> None:
    with _IDLE_LOCK:
        if healthy and len(_IDLE_SESSIONS) < _MAX_IDLE:
            session.cookies.clear()  # nothing one receiver sets may reach another
            _IDLE_SESSIONS.append(session)
            return
    session.close()


def new_validation_token(state: EmulatorState) -> str:
    """An opaque token shaped like Graph's (spaces and colons included, so receivers must URL-decode it)."""
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


def handshake(state: EmulatorState, url: str) -> str | None:
    """POST ``url?validationToken=...`` and check the echo; returns Graph's failure message or None on success."""
    token = new_validation_token(state)
    parts = urlsplit(url)
    if parts.query and not state.config.handshake_keeps_query:
        url = parts._replace(query="").geturl()
    separator = "&" if urlsplit(url).query else "?"
    target = f"{url}{separator}validationToken={quote(token, safe='')}"
    session = _take_session()
    started = time.monotonic()
    healthy = False
    try:
        response = session.post(
            target,
            data=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=state.config.handshake_timeout_s,
            verify=state.config.notification_tls_verify,
            allow_redirects=False,  # a redirect is not a 200 (guess: Graph does not follow them)
        )
        healthy = True
    except requests.Timeout:
        return HANDSHAKE_TIMEOUT
    except requests.RequestException:
        return HANDSHAKE_NOT_200
    finally:
        _give_back(session, healthy=healthy)
    if time.monotonic() - started > state.config.handshake_timeout_s:
        return HANDSHAKE_TIMEOUT
    if response.status_code != 200:
        return HANDSHAKE_NOT_200
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "text/plain" or response.content.decode("utf-8", errors="replace") != token:
        return HANDSHAKE_MISMATCH
    return None


def validate_endpoints(state: EmulatorState, urls: list[str]) -> None:
    for url in urls:
        failure = handshake(state, url)
        if failure is not None:
            raise GraphHTTPError(400, "ValidationError", failure)
