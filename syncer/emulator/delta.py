"""Delta query: paging, ``@removed``, ``$select``, expiry and resets (https://learn.microsoft.com/graph/delta-query-overview).

A delta round walks a collection's change log (:mod:`syncer.emulator.changelog`). The state of a round travels in
its links as a signed token (:mod:`syncer.emulator.delta_token`), so links can be replayed and survive nothing else.

Expiry: a token older than the family's lifetime (config) answers ``410 Gone`` ``SyncStateNotFound``;
an admin "evict" or a ``deltaReset`` fault answers 410 too (with ``Location`` restarting the round for a
reset). driveItem uses its own 410 code and a Location that starts a fresh enumeration.
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import orjson
from flask import Response, request

from syncer.emulator.changelog import Collection, Emitted
from syncer.emulator.clock import parse_iso
from syncer.emulator.delta_token import Cursor, decode_token, encode_token, is_foreign_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.resources import ResourceType

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_PAGE_RE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)


def requested_page_size(rtype: ResourceType, *, honour_prefer: bool = True) -> tuple[int, int | None]:
    """(page size, applied maxpagesize or None) from Prefer / $top, capped at Graph's limit."""
    assert rtype.delta is not None
    spec = rtype.delta
    size = spec.default_page
    applied = None
    prefer = request.headers.get("Prefer", "")
    match = _PAGE_RE.search(prefer)
    if match and honour_prefer:
        wanted = int(match.group(1))
        if wanted > 0:
            size = min(wanted, spec.max_page)
            applied = size
    top = request.args.get("$top")
    if top is not None:
        if not spec.accepts_top:
            raise GraphHTTPError(400, "Request_UnsupportedQuery" if rtype.family == "directory" else "ErrorInvalidUrlQuery",
                                 "Unsupported query option: $top." if rtype.family == "directory"
                                 else "The query parameter '$top' is not supported with delta.")
        if not top.isdigit() or int(top) <= 0:
            raise GraphHTTPError(400, "BadRequest", f"Invalid value '{top}' for $top query option.")
        size = min(int(top), spec.max_page)
    return size, applied


def parse_select(rtype: ResourceType, raw: str | None) -> list[str] | None:
    """Canonical property names of a $select (400 on unknown ones); None when absent."""
    if raw is None:
        return None
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canonical = rtype.canonical(name)
        if canonical is None or canonical in rtype.write_only:
            if rtype.family == "directory":
                raise GraphHTTPError(400, "Request_BadRequest",
                                     f"Could not find a property named '{name}' on type 'microsoft.graph.{rtype.name}'.")
            raise GraphHTTPError(400, "RequestBroker--ParseUri",
                                 f"Could not find a property named '{name}' on type 'microsoft.graph.{rtype.name}'.")
        if canonical not in names:
            names.append(canonical)
    return names or None


def project(rtype: ResourceType, item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """The JSON Graph returns for *item* under *select* (id always; unset selected properties null)."""
    if select is None:
        if rtype.default_select is not None:
            out = {name: item.get(name) for name in rtype.default_select}
        else:
            out = {k: v for k, v in item.items() if k not in rtype.write_only}
    else:
        out = {"id": item["id"]}
        for name in select:
            if name in rtype.delta_links:
                continue
            out[name] = item.get(name)
    if rtype.etag and "@odata.etag" in item:
        out = {"@odata.etag": item["@odata.etag"], **out}
    out["id"] = item["id"]
    return out


def _removed(rtype: ResourceType, e: Emitted, select: list[str] | None) -> dict[str, Any]:
    if rtype.family == "drive":
        last = project(rtype, e.item or {"id": e.item_id}, select)
        last["deleted"] = {"state": "deleted"}
        return last
    out: dict[str, Any] = {}
    if rtype.delta is not None and rtype.delta.removed_has_type:
        out["@odata.type"] = rtype.odata_type
    out["id"] = e.item_id
    out["@removed"] = {"reason": e.removed}
    return out


def members_delta(col: Collection, group_id: str, *, since: int, hwm: int, initial: bool) -> list[dict[str, Any]]:
    """`members@delta` for one group: membership changes in (since, hwm], newest per member."""
    log = col.member_log.get(group_id, [])
    latest: dict[str, tuple[int, bool]] = {}
    for seq, member, removed in log:
        if since < seq <= hwm:
            latest[member] = (seq, removed)
    out = []
    for member, (_seq, removed) in latest.items():
        if removed and initial:
            continue
        entry: dict[str, Any] = {"@odata.type": "#microsoft.graph.user", "id": member}
        if removed:
            entry["@removed"] = {"reason": "deleted"}
        out.append(entry)
    return out


def _context(base: str, rtype: ResourceType, col: Collection, select: list[str] | None) -> str:
    name = col.key.split("/")[-1] if rtype.family == "directory" else f"Collection({rtype.name})"
    if rtype.family == "directory" and select:
        name = f"{name}({','.join(select)})"
    return f"{base}/v1.0/$metadata#{name}"


def _gone(state: EmulatorState, rtype: ResourceType, *, location: str | None, message: str) -> GraphHTTPError:
    headers = {"Location": location} if location else {}
    if rtype.family == "drive":
        return GraphHTTPError(410, state.config.drive_resync_code,
                              "Resync required. Replace any local items with the server's version (including deletes) "
                              "if you're sure that the service was up to date with your local changes when you last sync'd. "
                              "Upload any local changes that the server doesn't know about.", headers=headers)
    return GraphHTTPError(410, "SyncStateNotFound", message, headers=headers)


def _lifetime(state: EmulatorState, rtype: ResourceType) -> float | None:
    cfg = state.config
    if rtype.family == "directory":
        return cfg.directory_delta_token_lifetime_s
    if rtype.family == "drive":
        return cfg.drive_delta_token_lifetime_s
    return cfg.outlook_delta_token_lifetime_s


def run_delta(
    state: EmulatorState,
    col: Collection,
    *,
    link_path: str,
    token: str | None,
    token_kind: str,
    latest: bool = False,
    window: list[str] | None = None,
    in_window: Callable[[dict[str, Any]], bool] | None = None,
    extra_link_args: str = "",
) -> Response:
    """Serve one delta page of *col*.

    *link_path* is the path after /v1.0/ that links point at (e.g. "users/delta"); *token* is the
    token the caller sent (None = start a round); *token_kind* says how links carry tokens: "odata"
    (`$skiptoken` / `$deltatoken`) or "drive" (`token=` for both).
    """
    rtype = col.rtype
    base = request.host_url.rstrip("/")
    honour = state.config.directory_honours_maxpagesize or rtype.family != "directory"
    page, applied = requested_page_size(rtype, honour_prefer=honour)
    now = state.clock.time()
    restart = f"{base}/v1.0/{link_path}"
    if token is not None:
        cursor = decode_token(state, token)
        if cursor is None and is_foreign_token(token):
            # Signed by another emulator instance (a restart): the sync state is gone, as after Graph
            # loses one -> 410, so clients resync instead of failing.
            raise _gone(state, rtype, location=None,
                        message="The sync state generation is not found; the token was issued by another instance.")
        if cursor is None or cursor.key != col.key:
            if rtype.family == "directory":
                raise GraphHTTPError(400, "Request_BadRequest", "Invalid delta token or skip token.")
            if rtype.family == "drive":
                raise GraphHTTPError(400, "invalidRequest", "Invalid token.")
            raise GraphHTTPError(400, "ErrorInvalidSyncStateData", "The sync state data is corrupt or otherwise invalid.")
        if request.args.get("$filter") is not None:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 "$filter is not supported together with a delta or skip token; the token carries it.")
        if request.args.get("$select") is not None and not cursor.is_delta_link:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 "$select is not supported together with $skiptoken.")
        # Graph lets a deltaLink call change the tracked properties (directory, https://learn.microsoft.com/graph/api/user-delta).
        if request.args.get("$select") is not None and rtype.family == "directory":
            cursor.select = parse_select(rtype, request.args.get("$select"))
        fault = state.faults.take_delta_reset(col.key, delta_link=cursor.is_delta_link)
        reset = fault["kind"] if fault else None
        if reset == "replay" and fault is not None:
            # re-send the `back` changes logged just before the token's position
            idx = bisect.bisect_right(col.log_seq, cursor.since)
            start = max(0, idx - int(fault["back"]))
            cursor.since = col.log_seq[start] - 1 if idx > 0 else cursor.since
            reset = None
        if reset == "reset":
            location = _restart_url(restart, rtype, cursor)
            raise _gone(state, rtype, location=location, message="Resync required: the tenant was reset; restart the round at the Location.")
        lifetime = state.config.skiptoken_lifetime_s if not cursor.is_delta_link and state.config.skiptoken_lifetime_s is not None \
            else _lifetime(state, rtype)
        evicted = cursor.is_delta_link and state.config.outlook_delta_token_cache_size is not None \
            and 0 < cursor.serial <= col.evicted_serial
        expired = (reset == "expired" or evicted or cursor.issued < col.tokens_valid_after
                   or (lifetime is not None and now - cursor.issued > lifetime))
        if expired:
            expired_location: str | None = None
            if state.config.delta_expiry_sends_location or rtype.family == "drive":
                expired_location = _restart_url(restart, rtype, cursor)
            raise _gone(state, rtype, location=expired_location,
                        message=f"The sync state generation is not found; generation={cursor.since};[highest={state.store.seq}]")
        if applied is None and request.args.get("$top") is None:
            page = cursor.page  # the round keeps the page size it started with unless the call asks again
        if cursor.is_delta_link:
            # A deltaLink starts a new round over (since, now].
            hwm = _visible_hwm(state, col)
            # Prefer: return=minimal on a deltaLink call: only changed properties (directory) [DOC: https://learn.microsoft.com/graph/api/user-delta].
            minimal = rtype.family == "directory" and "return=minimal" in request.headers.get("Prefer", "").lower()
            cursor = Cursor(col.key, cursor.since, hwm, None, 0, now, cursor.select, page, cursor.window,
                            False, False, cursor.members, filter=cursor.filter, minimal=minimal)
        window = cursor.window
    else:
        select = parse_select(rtype, request.args.get("$select"))
        members = False
        expand = request.args.get("$expand")
        if "members" in rtype.delta_links:
            if select and "members" in select:
                members = True
            if expand is not None:
                if expand.strip().lower() != "members":
                    raise GraphHTTPError(400, "Request_BadRequest", f"Unsupported expand: '{expand}'.")
                members = True
        elif expand is not None and rtype.family == "directory":
            raise GraphHTTPError(400, "Request_BadRequest", "Unsupported query option: $expand.")
        filter_text = request.args.get("$filter")
        if filter_text is not None:
            delta_filter(rtype, filter_text)  # 400 now, not on a later page
        hwm = _visible_hwm(state, col)
        if latest:
            cursor = Cursor(col.key, hwm, hwm, None, 0, now, select, page, window, False, True, members,
                            filter=filter_text)
            return _page(state, col, [], cursor, base=base, link_path=link_path, token_kind=token_kind,
                         applied=applied, done=True, extra=extra_link_args)
        cursor = Cursor(col.key, 0, hwm, None, 0, now, select, page, window, True, False, members,
                        filter=filter_text)
    item_filter = delta_filter(rtype, cursor.filter) if cursor.filter else None
    with state.lock:
        emitted, pos, sub, done = col.walk(since=cursor.since, hwm=cursor.hwm, pos=cursor.pos, sub=cursor.sub,
                                           limit=page, include_removed=not cursor.initial)
        values = _render(rtype, col, emitted, cursor, in_window, item_filter,
                         chunk=state.config.group_members_delta_chunk)
    cursor.pos, cursor.sub, cursor.issued = pos, sub, now
    return _page(state, col, values, cursor, base=base, link_path=link_path, token_kind=token_kind,
                 applied=applied, done=done, extra=extra_link_args)


def _render(rtype: ResourceType, col: Collection, emitted: list[Emitted], cursor: Cursor,
            in_window: Callable[[dict[str, Any]], bool] | None,
            item_filter: Callable[[dict[str, Any]], bool] | None = None, *,
            chunk: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    select = cursor.select
    for e in emitted:
        if item_filter is not None and not item_filter(e.item or {"id": e.item_id}):
            continue
        if e.removed is not None:
            out.append(_removed(rtype, e, select))
            continue
        assert e.item is not None
        if in_window is not None and not in_window(e.item):
            if not cursor.initial:
                # calendarView delta reports events changed outside the window as deleted (https://learn.microsoft.com/graph/api/event-delta)
                out.append(_removed(rtype, Emitted(e.item_id, e.item, "deleted", e.seq), select))
            continue
        value = project(rtype, e.item, select)
        if cursor.minimal and not cursor.initial:
            changed = col.changed_since(e.item_id, cursor.since)
            if changed is not None:
                value = {k: v for k, v in value.items() if k == "id" or k.startswith("@") or k in changed}
        if cursor.members:
            links = members_delta(col, e.item_id, since=cursor.since, hwm=cursor.hwm, initial=cursor.initial)
            if chunk and len(links) > chunk:
                # Large groups come back in pieces: the same group repeats, each with part of its
                # members@delta; clients merge them (https://learn.microsoft.com/graph/delta-query-groups).
                for start in range(0, len(links), chunk):
                    out.append({**value, "members@delta": links[start:start + chunk]})
                continue
            value["members@delta"] = links
        out.append(value)
    return out


_ID_EQ = re.compile(r"\s*id\s+eq\s+'([^']+)'\s*", re.IGNORECASE)


def delta_filter(rtype: ResourceType, text: str) -> Callable[[dict[str, Any]], bool]:
    """The $filter forms delta accepts (https://learn.microsoft.com/graph/delta-query-overview); anything else is a 400.

    users/groups: ``id eq '..' or id eq '..'`` (at most 50 ids); messages: ``receivedDateTime ge|gt X``.
    """
    if rtype.family == "directory":
        parts = re.split(r"\s+or\s+", text.strip(), flags=re.IGNORECASE)
        ids = []
        for part in parts:
            m = _ID_EQ.fullmatch(part)
            if m is None:
                raise GraphHTTPError(400, "Request_UnsupportedQuery",
                                     f"Unsupported query filter for delta: '{text}'. Only 'id eq' clauses joined by 'or' are supported.")
            ids.append(m.group(1).lower())
        if len(ids) > 50:
            raise GraphHTTPError(400, "Request_UnsupportedQuery", "Too many ids in the delta $filter (at most 50).")
        wanted = frozenset(ids)
        return lambda item: str(item.get("id", "")).lower() in wanted
    date_property = rtype.delta.date_filter if rtype.delta is not None else None
    if date_property is not None:
        m = re.fullmatch(rf"\s*{date_property}\s+(ge|gt)\s+(\S+)\s*", text, re.IGNORECASE)
        if m is not None:
            try:
                bound = parse_iso(m.group(2))
            except ValueError:
                raise GraphHTTPError(400, "BadRequest", f"Invalid date in $filter: '{m.group(2)}'.") from None
            op = m.group(1).lower()

            def check(item: dict[str, Any]) -> bool:
                raw = item.get(date_property)
                if not isinstance(raw, str):
                    return True  # removed items: no date left to compare, report them
                value = parse_iso(raw)
                return value >= bound if op == "ge" else value > bound
            return check
    raise GraphHTTPError(400, "ErrorInvalidUrlQueryFilter" if rtype.family != "directory" else "Request_UnsupportedQuery",
                         f"The filter '{text}' is not supported with delta on {rtype.name}.")


def _page(state: EmulatorState, col: Collection, values: list[dict[str, Any]], cursor: Cursor, *, base: str,
          link_path: str, token_kind: str, applied: int | None, done: bool, extra: str) -> Response:
    rtype = col.rtype
    body: dict[str, Any] = {"@odata.context": _context(base, rtype, col, cursor.select)}
    if done:
        final = Cursor(col.key, cursor.hwm, cursor.hwm, None, 0, state.clock.time(), cursor.select, cursor.page,
                       cursor.window, False, True, cursor.members, filter=cursor.filter)
        _remember_for_eviction(state, col, final)
        tok = encode_token(state, final)
        if token_kind == "drive":
            body["@odata.deltaLink"] = f"{base}/v1.0/{link_path}?token={tok}"
        else:
            body["@odata.deltaLink"] = f"{base}/v1.0/{link_path}?{extra}$deltatoken={tok}"
    else:
        tok = encode_token(state, cursor)
        if token_kind == "drive":
            body["@odata.nextLink"] = f"{base}/v1.0/{link_path}?token={tok}"
        else:
            body["@odata.nextLink"] = f"{base}/v1.0/{link_path}?{extra}$skiptoken={tok}"
    body["value"] = values
    response = Response(orjson.dumps(body), status=200, content_type=ODATA_JSON)
    preferences = [f"odata.maxpagesize={applied}"] if applied is not None else []
    if cursor.minimal:
        preferences.append("return=minimal")
    if preferences:
        response.headers["Preference-Applied"] = ", ".join(preferences)
    return response


def drive_token_from_path(path_tail: str) -> str | None:
    """The token in a `delta(token='...')` path segment, or None."""
    match = re.fullmatch(r"delta\(token='?([^')]*)'?\)", path_tail, re.IGNORECASE)
    if match is None:
        return None
    return unquote(match.group(1))


__all__ = ["parse_select", "project", "quote", "run_delta"]


def _remember_for_eviction(state: EmulatorState, col: Collection, final: Cursor) -> None:
    """Oldest-first eviction of Outlook sync states (config.outlook_delta_token_cache_size)."""
    size = state.config.outlook_delta_token_cache_size
    if size is None or col.rtype.family not in ("outlook", "todo"):
        return
    with state.lock:
        col.link_serial += 1
        final.serial = col.link_serial
        col.issued_links.append(final.serial)
        while len(col.issued_links) > size:
            col.evicted_serial = max(col.evicted_serial, col.issued_links.pop(0))


def _visible_hwm(state: EmulatorState, col: Collection) -> int:
    """The round's high-water mark: now, or earlier under a replication-lag fault (changes not yet visible)."""
    lag = state.faults.delta_lag(col.key)
    with state.lock:
        if not lag:
            return state.store.seq
        return state.store.seq_visible_at(state.clock.time() - lag)


def _restart_url(restart: str, rtype: ResourceType, cursor: Cursor) -> str:
    """Where a 410 sends the client: the initial query with an empty $deltatoken (drive: a fresh
    enumeration); calendarView keeps its window, the one query option a fresh round cannot do without."""
    if rtype.family == "drive":
        return restart
    if cursor.window:
        start, end = (quote(v, safe="") for v in cursor.window)
        return f"{restart}?startDateTime={start}&endDateTime={end}&$deltatoken="
    return f"{restart}?$deltatoken="
