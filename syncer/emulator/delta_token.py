"""Delta and skip tokens: the state of a round, carried in its links as an opaque, HMAC-signed value.

A token holds the collection key, the window of the change log being walked, the position, the issue time and the
original query options (``$select``, page size, calendar window), because Graph's links "carry the original options"
(https://learn.microsoft.com/graph/delta-query-overview). The key is random per emulator instance, so a token from an
earlier run is well-formed but foreign: a lost sync state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState


@dataclass
class Cursor:
    """Decoded delta/skip token."""

    key: str
    since: int
    hwm: int
    pos: int | None
    sub: int
    issued: float
    select: list[str] | None
    page: int
    window: list[str] | None
    initial: bool
    is_delta_link: bool
    members: bool = False
    #: a list's $filter, carried by its nextLinks
    filter: str | None = None
    #: Prefer: return=minimal on a directory deltaLink round
    minimal: bool = False
    #: unique per issued deltaLink (Outlook cache eviction is by issue order)
    serial: int = 0

    def to_payload(self) -> dict[str, Any]:
        """Compact JSON for the token."""
        return {"k": self.key, "s": self.since, "h": self.hwm, "p": self.pos, "b": self.sub,
                "t": round(self.issued, 3), "sel": self.select, "n": self.page, "w": self.window,
                "i": self.initial, "d": self.is_delta_link, "m": self.members, "f": self.filter, "r": self.minimal, "q": self.serial}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Cursor:
        """Inverse of :meth:`to_payload`."""
        return cls(key=p["k"], since=p["s"], hwm=p["h"], pos=p["p"], sub=p["b"], issued=p["t"],
                   select=p["sel"], page=p["n"], window=p["w"], initial=p["i"], is_delta_link=p["d"],
                   members=p.get("m", False), filter=p.get("f"), minimal=p.get("r", False), serial=p.get("q", 0))


def encode_token(state: EmulatorState, cursor: Cursor) -> str:
    """Sign and encode a cursor (URL-safe, no padding)."""
    body = base64.urlsafe_b64encode(orjson.dumps(cursor.to_payload())).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(state.delta_token_key, body, hashlib.sha256).digest()[:12]).rstrip(b"=")
    return (body + b"." + sig).decode()


def decode_token(state: EmulatorState, token: str) -> Cursor | None:
    """The cursor in *token*, or None if it is malformed or forged."""
    body, _, sig = token.partition(".")
    if not body or not sig:
        return None
    expected = base64.urlsafe_b64encode(
        hmac.new(state.delta_token_key, body.encode(), hashlib.sha256).digest()[:12]).rstrip(b"=").decode()
    if not hmac.compare_digest(expected, sig):
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return Cursor.from_payload(payload)
    except (ValueError, KeyError, TypeError):
        return None


def is_foreign_token(token: str) -> bool:
    """A well-formed token this instance did not sign (e.g. from before a restart): a lost sync state."""
    body, _, sig = token.partition(".")
    if not body or not sig:
        return False
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return False
    return isinstance(payload, dict) and "k" in payload and "s" in payload
