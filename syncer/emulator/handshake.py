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

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import NewConnectionError

from syncer.emulator.errors import GraphHTTPError

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

# Observed handshake failures (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks lists the rules, not these bodies).
HANDSHAKE_NOT_200 = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)
HANDSHAKE_MISMATCH = "Subscription validation request failed. Response must exactly match validationToken query parameter."
HANDSHAKE_TIMEOUT = "Subscription validation request timed out."

_POOLS: dict[bool | str, urllib3.PoolManager] = {}
"""Connection pools per ``verify`` setting, shared by every handshake: 30,000 creates reuse keep-alive connections
(where the receiver keeps them). urllib3 straight rather than a requests session: a create is mostly its two
handshakes, and requests' per-call preparation cost as much CPU as the rest of the create."""
_POOLS_LOCK = threading.Lock()
_MAX_IDLE = 32


def _pool(verify: bool | str) -> urllib3.PoolManager:
    with _POOLS_LOCK:
        pool = _POOLS.get(verify)
        if pool is None:
            # As requests would verify: certifi's bundle for True, the given CA file for a path, nothing for False.
            if verify is False:
                pool = urllib3.PoolManager(maxsize=_MAX_IDLE, cert_reqs="CERT_NONE")
            else:
                pool = urllib3.PoolManager(maxsize=_MAX_IDLE, cert_reqs="CERT_REQUIRED",
                                           ca_certs=DEFAULT_CA_BUNDLE_PATH if verify is True else verify)
            _POOLS[verify] = pool
        return pool


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
    started = time.monotonic()
    timeout = state.config.handshake_timeout_s
    try:
        response = _pool(state.config.notification_tls_verify).request(
            "POST",
            target,
            body=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            redirect=False,  # a redirect is not a 200 (guess: Graph does not follow them)
        )
    except NewConnectionError:
        return HANDSHAKE_NOT_200  # refused or unresolvable: not a timeout (urllib3 files it under one)
    except urllib3.exceptions.TimeoutError:
        return HANDSHAKE_TIMEOUT
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        return HANDSHAKE_NOT_200
    if time.monotonic() - started > state.config.handshake_timeout_s:
        return HANDSHAKE_TIMEOUT
    if response.status != 200:
        return HANDSHAKE_NOT_200
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "text/plain" or response.data.decode("utf-8", errors="replace") != token:
        return HANDSHAKE_MISMATCH
    return None


def validate_endpoints(state: EmulatorState, urls: list[str]) -> None:
    for url in urls:
        failure = handshake(state, url)
        if failure is not None:
            raise GraphHTTPError(400, "ValidationError", failure)
