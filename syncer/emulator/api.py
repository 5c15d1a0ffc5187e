"""What every Graph resource view shares: JSON bodies and responses, property validation, listing.

The views (:mod:`directory`, :mod:`mailbox`, :mod:`drive`) are thin: they resolve the URL to a
collection, check permissions from the :mod:`resources` entry, validate bodies against the entry's
property table (unknown or read-only properties are a 400, as in Graph) with the helpers here, and call
the store. Per-type behaviour a table cannot say is written out in those modules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from flask import Response, current_app, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.changelog import Collection
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.resources import ResourceType

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def emulator_state() -> EmulatorState:
    """The state of the emulator serving this request (every view's way in; nothing lives in module globals)."""
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    return state


def base_url() -> str:
    """This emulator's scheme, host and port as the client addressed it (no trailing slash)."""
    return request.host_url.rstrip("/")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(body), status=status, content_type=JSON)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def no_content() -> Response:
    return Response(b"", status=204)


def error_code(rtype: ResourceType, kind: str) -> str:
    directory = rtype.family == "directory"
    return {
        "bad": "Request_BadRequest" if directory else ("invalidRequest" if rtype.family == "drive" else "RequestBodyRead"),
        "notfound": "Request_ResourceNotFound" if directory else ("itemNotFound" if rtype.family == "drive" else "ErrorItemNotFound"),
    }[kind]


def not_found_error(rtype: ResourceType, item_id: str) -> GraphHTTPError:
    if rtype.family == "directory":
        return GraphHTTPError(404, "Request_ResourceNotFound",
                              f"Resource '{item_id}' does not exist or one of its queried reference-property objects are not present.")
    if rtype.family == "drive":
        return GraphHTTPError(404, "itemNotFound", "The resource could not be found.")
    return GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def json_body() -> dict[str, Any]:
    """The request's JSON object body, or Graph's 400."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise GraphHTTPError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GraphHTTPError(400, "BadRequest",
                             "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from None
    if not isinstance(body, dict):
        raise GraphHTTPError(400, "BadRequest", "Unable to read JSON request payload: a JSON object is expected.")
    return body


def validate_props(rtype: ResourceType, body: dict[str, Any], *, creating: bool,
              allow: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Canonicalise property names; 400 on unknown or read-only properties or missing required ones."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata.") or name in allow:
            if name in allow:
                out[name] = value
            continue
        canonical = rtype.canonical(name)
        if canonical is None or canonical in rtype.delta_links:
            raise GraphHTTPError(400, error_code(rtype, "bad"),
                                 f"The property '{name}' does not exist on type 'microsoft.graph.{rtype.name}'. "
                                 "Make sure to only use property names that are defined by the type or mark the type as open type.")
        if canonical in rtype.read_only:
            raise GraphHTTPError(400, error_code(rtype, "bad"),
                                 f"Property '{canonical}' is read-only and cannot be set.")
        out[canonical] = value
    if creating:
        for name in rtype.required_on_create:
            if out.get(name) in (None, ""):
                raise GraphHTTPError(400, error_code(rtype, "bad"),
                                     f"Invalid value specified for property '{name}' of resource '{rtype.name[0].upper()}{rtype.name[1:]}'.")
    return out


def reject_query(rtype: ResourceType, allowed: set[str]) -> None:
    for name in request.args:
        if name.startswith("$") and name not in allowed:
            raise GraphHTTPError(400, "Request_UnsupportedQuery" if rtype.family == "directory" else "BadRequest",
                                 f"Unsupported query option '{name}' for this request.")


def entity_response(rtype: ResourceType, item: dict[str, Any], context: str, status: int = 200) -> Response:
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    body = {"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity", **delta_mod.project(rtype, item, select)}
    return json_response(body, status)


def list_response(state: EmulatorState, col: Collection, context: str, *, allow_filter: bool = False) -> Response:
    """A plain (non-delta) collection GET with $top / $skiptoken paging (and $filter where Graph has it)."""
    rtype = col.rtype
    allowed = {"$select", "$top", "$skiptoken"} | ({"$filter"} if allow_filter else set())
    reject_query(rtype, allowed)
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    top = request.args.get("$top")
    size = rtype.list_default_page
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= rtype.list_max_page:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 f"Invalid page size specified: '{top}'. Must be between 1 and {rtype.list_max_page} inclusive.")
        size = int(top)
    skip = request.args.get("$skiptoken")
    now = state.clock.time()
    if skip is not None:
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != col.key or cursor.is_delta_link:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 "Invalid skip token.")
        select = cursor.select
        size = cursor.page
    else:
        with state.lock:
            hwm = state.store.seq
        cursor = Cursor(col.key, 0, hwm, None, 0, now, select, size, None, True, False,
                                  filter=request.args.get("$filter"))
    predicate = compile_filter(rtype, cursor.filter) if cursor.filter else None
    values: list[dict[str, Any]] = []
    pos, sub, done = cursor.pos, cursor.sub, False
    with state.lock:
        while len(values) < size and not done:
            emitted, pos, sub, done = col.walk(since=0, hwm=cursor.hwm, pos=pos, sub=sub,
                                               limit=size - len(values), include_removed=False)
            values.extend(delta_mod.project(rtype, e.item, select) for e in emitted
                          if e.item is not None and (predicate is None or predicate(e.item)))
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#{context}"}
    if not done:
        cursor.pos, cursor.sub = pos, sub
        body["@odata.nextLink"] = f"{base_url()}{request.path}?$skiptoken={encode_token(state, cursor)}"
    body["value"] = values
    return json_response(body)


_CLAUSE = re.compile(
    r"\s*(?:(?P<prop>[A-Za-z]+)\s+eq\s+(?P<value>'(?:[^']|'')*'|true|false|null|-?\d+)"
    r"|startswith\(\s*(?P<sprop>[A-Za-z]+)\s*,\s*(?P<svalue>'(?:[^']|'')*')\s*\))\s*",
    re.IGNORECASE,
)


def compile_filter(rtype: ResourceType, text: str) -> Any:
    """A predicate for the small $filter subset the emulator supports on lists.

    Supported: ``prop eq 'x'`` / ``eq true|false|null|N``, ``startswith(prop,'x')``, joined by ``and``
    or by ``or`` (not mixed). Anything else is Graph's 400 Request_UnsupportedQuery.
    """
    def unsupported() -> GraphHTTPError:
        return GraphHTTPError(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified"
                              f" for property '{text}' of resource '{rtype.name[0].upper()}{rtype.name[1:]}'.")

    lowered = f" {text} ".lower()
    joiner = " and " if " and " in lowered else " or "
    if " and " in lowered and " or " in lowered:
        raise unsupported()
    parts = re.split(r"\s+(?:and|or)\s+", text.strip(), flags=re.IGNORECASE)
    checks = []
    for part in parts:
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise unsupported()
        prop = rtype.canonical(m.group("prop") or m.group("sprop"))
        if prop is None:
            raise GraphHTTPError(400, "Request_BadRequest",
                                 f"Could not find a property named '{m.group('prop') or m.group('sprop')}' on type 'microsoft.graph.{rtype.name}'.")
        if m.group("sprop"):
            needle = m.group("svalue")[1:-1].replace("''", "'").lower()
            checks.append(lambda item, p=prop, n=needle: str(item.get(p) or "").lower().startswith(n))
            continue
        raw = m.group("value")
        value: Any
        if raw.startswith("'"):
            value = raw[1:-1].replace("''", "'")
            checks.append(lambda item, p=prop, v=value.lower(): isinstance(item.get(p), str) and item[p].lower() == v)
            continue
        value = {"true": True, "false": False, "null": None}.get(raw.lower(), None if raw.lower() == "null" else raw)
        if isinstance(value, str):
            value = int(value)
        checks.append(lambda item, p=prop, v=value: item.get(p) == v)
    if joiner == " and ":
        return lambda item: all(check(item) for check in checks)
    return lambda item: any(check(item) for check in checks)


def check_types(rtype: ResourceType, props: dict[str, Any]) -> None:
    bools = {"accountEnabled", "mailEnabled", "securityEnabled", "isRead", "isAllDay", "isReminderOn", "isHidden"}
    for name, value in props.items():
        if name in bools and not isinstance(value, bool):
            raise GraphHTTPError(400, error_code(rtype, "bad"),
                                 f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'.")
        if name in ("displayName", "mailNickname", "subject", "title", "name") and value is not None \
                and not isinstance(value, str):
            raise GraphHTTPError(400, error_code(rtype, "bad"),
                                 f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
