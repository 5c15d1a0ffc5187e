"""What every Teams read shares: the permission check, ``$top`` limits, paging and the message query options.

Teams lists page by ``@odata.nextLink`` with an opaque ``$skiptoken`` (here a signed offset that carries the first
call's options, as Graph's links do) and hold at most 50 items a page
(https://learn.microsoft.com/graph/api/channel-list-messages, https://learn.microsoft.com/graph/api/chat-list-messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from flask import Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, json_response
from syncer.emulator.clock import parse_iso
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import AppContext, current_app_context
from syncer.emulator.resources import ResourceType

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState


def require(roles: Iterable[str], delegated: Iterable[str] = ()) -> AppContext:
    """The caller if its token holds one of *roles* (an app) or of *delegated* (a signed-in user); else Teams' 403,
    which names what it wanted [OBS wording]. No *delegated* = application permissions only (a user is refused
    unless *roles* is empty too); personal Microsoft accounts have no Teams."""
    ctx = current_app_context()
    if ctx.delegated:
        scopes = frozenset(delegated)
        if ctx.personal or (roles and not ctx.scopes & scopes):
            raise GraphHTTPError(403, "Forbidden",
                                 f"Missing scope permissions on the request. API requires one of "
                                 f"'{', '.join(sorted(scopes))}'. Scopes on the request '{', '.join(sorted(ctx.scopes))}'.")
        return ctx
    wanted = frozenset(roles)
    if wanted and not ctx.roles & wanted:  # no roles = any authenticated caller
        raise GraphHTTPError(403, "Forbidden",
                             f"Missing role permissions on the request. API requires one of '{', '.join(sorted(wanted))}'. "
                             f"Roles on the request '{', '.join(sorted(ctx.roles))}'.")
    return ctx


def reject_options(allowed: set[str]) -> None:
    """400 for an OData option the call does not support."""
    for name in request.args:
        if name.startswith("$") and name not in allowed:
            raise GraphHTTPError(400, "BadRequest", f"Query option '{name}' is not supported for this request.")


def page_size(default: int, maximum: int) -> int:
    """``$top`` (1..maximum) or *default*; over the maximum is a 400 [code UNCONFIRMED]."""
    top = request.args.get("$top")
    if top is None:
        return default
    if not top.isdigit() or not 1 <= int(top) <= maximum:
        raise GraphHTTPError(400, "BadRequest",
                             f"Invalid page size specified: '{top}'. Must be between 1 and {maximum} inclusive.")
    return int(top)


def paged(state: EmulatorState, rtype: ResourceType, build: Callable[[dict[str, Any]], list[dict[str, Any]]], *,
          context: str, default: int, maximum: int, options: dict[str, Any] | None = None,
          count: bool = False, final: bool = False) -> Response:
    """One page of the list *build(options)* returns (already filtered and ordered), ``$skiptoken`` paging.

    The first call's *options* travel in the token and come back to *build* on later pages.
    """
    key = request.path.lower()
    skip = request.args.get("$skiptoken")
    if skip is not None:
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != key or cursor.filter is None:
            raise GraphHTTPError(400, "BadRequest", "Invalid skip token.")
        offset, size, select = cursor.pos or 0, cursor.page, cursor.select
        options = orjson.loads(cursor.filter)
    else:
        offset, size = 0, page_size(default, maximum)
        select = delta_mod.parse_select(rtype, request.args.get("$select"))
        options = options or {}
    with state.lock:
        values = build(options)
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#{context}"}
    if count:
        body["@odata.count"] = len(values)
    chunk = values[offset:offset + size]
    if offset + size < len(values):
        cursor = Cursor(key, 0, 0, offset + size, 0, state.clock.time(), select, size, None, True, False,
                        filter=orjson.dumps(options).decode())
        extra = "".join(f"{k}={v}&" for k, v in request.args.items() if k in ("$filter", "model"))
        body["@odata.nextLink"] = f"{base_url()}{request.path}?{extra}$skiptoken={encode_token(state, cursor)}"
    # *final* values are already rendered (e.g. a chat with its $expand); the others are projected here.
    body["value"] = evolvable_enums(chunk if final else [delta_mod.project(rtype, v, select) for v in chunk])
    return json_response(body)


def continuation(state: EmulatorState, path: str, *, offset: int, size: int) -> str:
    """A nextLink to the list at *path* (under ``/v1.0``, ids %-encoded) from *offset* on, as :func:`paged` reads it."""
    key = f"/v1.0/{unquote(path)}".lower()
    cursor = Cursor(key, 0, 0, offset, 0, state.clock.time(), None, size, None, True, False, filter="{}")
    return f"{base_url()}/v1.0/{path}?$skiptoken={encode_token(state, cursor)}"


_DATE_CLAUSE = re.compile(r"^\s*(lastModifiedDateTime|createdDateTime)\s+(gt|lt|ge|le)\s+(\S+)\s*$", re.IGNORECASE)


def date_clauses(text: str | None, *, allowed: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``prop op value`` clauses joined by ``and`` (each (prop, op) in *allowed*), or 400."""
    if text is None:
        return []
    out = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _DATE_CLAUSE.match(part)
        if m is None:
            raise GraphHTTPError(400, "BadRequest", f"Unsupported $filter '{text}'.")
        prop = "lastModifiedDateTime" if m.group(1).lower() == "lastmodifieddatetime" else "createdDateTime"
        op = m.group(2).lower()
        if (prop, op) not in allowed:
            raise GraphHTTPError(400, "BadRequest", f"Unsupported $filter '{text}': '{prop} {op}' is not supported.")
        try:
            parse_iso(m.group(3))
        except ValueError:
            raise GraphHTTPError(400, "BadRequest", f"Invalid date in $filter: '{m.group(3)}'.") from None
        out.append((prop, op, m.group(3)))
    return out


def matches(item: dict[str, Any], clauses: list[Any]) -> bool:
    """Whether *item* passes every (prop, op, iso value) clause."""
    for prop, op, raw in clauses:
        value: datetime = parse_iso(str(item.get(prop)))
        bound = parse_iso(raw)
        if not {"gt": value > bound, "lt": value < bound, "ge": value >= bound, "le": value <= bound}[op]:
            return False
    return True


def evolvable_enums(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messageType: systemEventMessage`` is an evolvable enum member: without ``Prefer: include-unknown-enum-members``
    Graph shows ``unknownFutureValue`` (https://learn.microsoft.com/graph/system-messages,
    https://learn.microsoft.com/graph/best-practices-concept#handling-future-members-in-evolvable-enumerations)."""
    if "include-unknown-enum-members" in request.headers.get("Prefer", "").lower():
        return values
    out = []
    for value in values:
        if value.get("messageType") == "systemEventMessage":
            value = {**value, "messageType": "unknownFutureValue"}
        replies = value.get("replies")
        if isinstance(replies, list):
            value = {**value, "replies": evolvable_enums(replies)}
        out.append(value)
    return out
