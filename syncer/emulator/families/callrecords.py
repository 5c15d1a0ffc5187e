"""Teams call records: ``/communications/callRecords`` (https://learn.microsoft.com/graph/api/resources/callrecords-callrecord).

Read (application CallRecords.Read.All only):
* ``GET /communications/callRecords/{id}`` with ``$select`` and ``$expand=sessions($expand=segments)`` (sessions paged
  at 60, ``sessions@odata.nextLink``; ``Prefer: odata.maxpagesize`` honoured) or ``$expand=participants_v2``; a record
  older than 30 days is 404 (https://learn.microsoft.com/graph/api/callrecords-callrecord-get).
* ``GET /communications/callRecords/{id}/sessions`` (same paging, ``$expand=segments``).
* ``GET /communications/callRecords``: the last 30 days, no ``$expand``, ``$filter`` only on ``startDateTime``
  (``lt le gt ge``) or ``participants_v2/any(p:p/id eq '...')`` (https://learn.microsoft.com/graph/api/callrecords-cloudcommunications-list-callrecords).

Records appear when a call ends; tests end calls with ``POST /_emulator/communications/calls`` and add late client
data with ``POST /_emulator/communications/callRecords/{id}/update`` (``version`` + 1). Subscriptions on
``communications/callRecords``: ``created``/``updated``, basic only, 4,230 minutes, at most 100 per organisation
(https://learn.microsoft.com/graph/changenotifications-for-callrecords); creation also fires ``updated``
(``call_record_created_also_updated``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, emulator_state, json_body, json_response, reject_query
from syncer.emulator.changelog import Collection
from syncer.emulator.clock import iso_ts, parse_iso
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import require_app
from syncer.emulator.resources import Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("callrecords", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("callrecords_admin", __name__, url_prefix="/_emulator")

READ = frozenset({"CallRecords.Read.All"})
SESSIONS_PAGE = 60
_PAGE_RE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)

CALL_RECORD = ResourceType(
    name="callRecord",
    odata_type="#microsoft.graph.callRecords.callRecord",
    notification_type="#Microsoft.Graph.callRecord",
    collection="communications/callRecords",
    family="callrecords",
    read_roles=READ,
    write_roles=frozenset(),
    properties=("id", "version", "type", "modalities", "startDateTime", "endDateTime", "lastModifiedDateTime",
                "joinWebUrl", "organizer_v2", "sessions", "participants_v2"),
    read_only=frozenset({"id"}),
    notification_resource="communications/callRecords/{id}",
    index_by_id=False,
)
_TOP_LEVEL = tuple(p for p in CALL_RECORD.properties if p not in ("sessions", "participants_v2"))


def _forbidden() -> GraphHTTPError:
    return GraphHTTPError(403, "Forbidden", "Insufficient privileges to complete the operation.")


def _require() -> str:
    ctx = require_app()
    if not ctx.roles & READ:
        raise _forbidden()
    return ctx.tenant_id


def _not_found(record_id: str) -> GraphHTTPError:
    return GraphHTTPError(404, "NotFound", f"Call record '{record_id}' was not found.")


def records_of(ts: TenantStore) -> Collection:
    """The tenant's call records."""
    return ts.collection(CALL_RECORD)


def _participant(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "identity": {"user": {"id": user_id, "displayName": None, "tenantId": None}}}


def _sessions(state: EmulatorState, participants: list[str], count: int, segments: int, start: str, end: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(count):
        caller = participants[i % len(participants)]
        callee = participants[(i + 1) % len(participants)]
        endpoint = {"@odata.type": "#microsoft.graph.callRecords.participantEndpoint",
                    "identity": {"user": {"id": caller}}}
        target = {"@odata.type": "#microsoft.graph.callRecords.participantEndpoint",
                  "identity": {"user": {"id": callee}}}
        sid = state.store.new_guid()
        out.append({"id": sid, "modalities": ["audio"], "startDateTime": start, "endDateTime": end,
                    "caller": endpoint, "callee": target, "failureInfo": None,
                    "segments": [{"id": state.store.new_guid(), "startDateTime": start, "endDateTime": end,
                                  "caller": endpoint, "callee": target, "failureInfo": None, "media": []}
                                 for _ in range(segments)]})
    return out


def end_call(state: EmulatorState, ts: TenantStore, body: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    """A call ended: its record appears (``created``, and ``updated`` too when configured)."""
    participants = [str(p) for p in body.get("participants") or []]
    organizer = str(body.get("organizerId") or (participants[0] if participants else state.store.new_guid()))
    participants = participants or [organizer]
    now = state.clock.now()
    end = str(body.get("endDateTime") or iso_ts(now.timestamp()))
    start = str(body.get("startDateTime") or iso_ts((parse_iso(end) - timedelta(minutes=30)).timestamp()))
    record_id = state.store.new_guid()
    sessions = int(body.get("sessions", 1))
    segments = int(body.get("segmentsPerSession", 1))
    record = {
        "id": record_id, "version": 1, "type": body.get("type", "groupCall" if len(participants) > 2 else "peerToPeer"),
        "modalities": body.get("modalities", ["audio"]), "startDateTime": start, "endDateTime": end,
        "lastModifiedDateTime": state.store.now_iso(), "joinWebUrl": body.get("joinWebUrl"),
        "organizer_v2": _participant(organizer),
        "participants_v2": [_participant(p) for p in participants],
        "sessions": _sessions(state, participants, sessions, segments, start, end),
    }
    col = records_of(ts)
    state.store.put(col, record_id, record, change_type="created", notify=notify)
    if notify and state.config.call_record_created_also_updated:
        state.store.put(col, record_id, record, change_type="updated")
    return record


def seed_call_records(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* ended calls organised by the user, each with two sessions (no notifications)."""
    for _ in range(count):
        end_call(state, ts, {"participants": [uid, state.store.new_guid()], "sessions": 2}, notify=False)


def update_record(state: EmulatorState, ts: TenantStore, record_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Late client data: more sessions, ``version`` + 1 (``updated``)."""
    col = records_of(ts)
    with state.lock:
        record = col.get(record_id)
        if record is None:
            raise _not_found(record_id)
        participants = [p["id"] for p in record["participants_v2"]]
        more = _sessions(state, participants, int(body.get("sessions", 1)), int(body.get("segmentsPerSession", 1)),
                         record["startDateTime"], record["endDateTime"])
        updated = {**record, "version": int(record["version"]) + 1, "sessions": [*record["sessions"], *more],
                   "lastModifiedDateTime": state.store.now_iso()}
    state.store.put(col, record_id, updated, change_type="updated")
    return updated


def _visible(state: EmulatorState, record: dict[str, Any]) -> bool:
    """Records older than the retention (30 days) are gone from the API."""
    age = state.clock.now() - parse_iso(str(record["startDateTime"]))
    return age <= timedelta(days=state.config.call_record_retention_days)


def _record(state: EmulatorState, ts: TenantStore, record_id: str) -> dict[str, Any]:
    with state.lock:
        record = records_of(ts).get(record_id)
    if record is None or not _visible(state, record):
        raise _not_found(record_id)
    return record


def _page_size() -> int:
    match = _PAGE_RE.search(request.headers.get("Prefer", ""))
    if match and int(match.group(1)) > 0:
        return min(int(match.group(1)), SESSIONS_PAGE)
    return SESSIONS_PAGE


def _session_json(session: dict[str, Any], segments: bool) -> dict[str, Any]:
    return {k: v for k, v in session.items() if k != "segments" or segments}


def _sessions_page(state: EmulatorState, record: dict[str, Any], *, segments: bool, offset: int, size: int
                   ) -> tuple[list[dict[str, Any]], str | None]:
    sessions = record["sessions"]
    values = [_session_json(s, segments) for s in sessions[offset:offset + size]]
    if offset + size >= len(sessions):
        return values, None
    cursor = Cursor(f"sessions:{record['id']}", 0, 0, offset + size, 0, state.clock.time(),
                    ["segments"] if segments else None, size, None, True, False)
    expand = "$expand=segments&" if segments else ""
    return values, (f"{base_url()}/v1.0/communications/callRecords/{record['id']}/sessions?"
                    f"{expand}$skiptoken={encode_token(state, cursor)}")


_EXPAND_SESSIONS = re.compile(r"^sessions(\(\s*\$expand\s*=\s*segments\s*\))?$", re.IGNORECASE)


@bp.get("/communications/callRecords/<record_id>")
def get_record(record_id: str) -> Response:
    """GET /communications/callRecords/{id}."""
    state = emulator_state()
    ts = state.store.tenant(_require())
    reject_query(CALL_RECORD, {"$select", "$expand"})
    record = _record(state, ts, record_id)
    select = delta_mod.parse_select(CALL_RECORD, request.args.get("$select"))
    out: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#communications/callRecords/$entity"}
    out.update({k: record.get(k) for k in (select or _TOP_LEVEL) if k not in ("sessions", "participants_v2")})
    out["id"] = record["id"]
    for part in [p.strip() for p in (request.args.get("$expand") or "").split(",") if p.strip()]:
        match = _EXPAND_SESSIONS.match(part)
        if match is not None:
            values, link = _sessions_page(state, record, segments=match.group(1) is not None, offset=0, size=_page_size())
            out["sessions"] = values
            if link is not None:
                out["sessions@odata.nextLink"] = link
        elif part.lower() == "participants_v2":
            out["participants_v2"] = record["participants_v2"]
        else:
            raise GraphHTTPError(400, "BadRequest", f"Unsupported $expand value '{part}'.")
    return json_response(out)


@bp.get("/communications/callRecords/<record_id>/sessions")
def list_sessions(record_id: str) -> Response:
    """GET /communications/callRecords/{id}/sessions (60 per page)."""
    state = emulator_state()
    ts = state.store.tenant(_require())
    reject_query(CALL_RECORD, {"$expand", "$skiptoken", "$select"})
    record = _record(state, ts, record_id)
    expand = (request.args.get("$expand") or "").strip().lower()
    if expand not in ("", "segments"):
        raise GraphHTTPError(400, "BadRequest", f"Unsupported $expand value '{expand}'.")
    offset, size, segments = 0, _page_size(), expand == "segments"
    skip = request.args.get("$skiptoken")
    if skip is not None:
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != f"sessions:{record['id']}":
            raise GraphHTTPError(400, "BadRequest", "Invalid skip token.")
        offset, size, segments = cursor.pos or 0, cursor.page, bool(cursor.select)
    values, link = _sessions_page(state, record, segments=segments, offset=offset, size=size)
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#communications/callRecords('{record['id']}')/sessions"}
    if link is not None:
        body["@odata.nextLink"] = link
    body["value"] = values
    return json_response(body)


_START_FILTER = re.compile(r"^\s*startDateTime\s+(lt|le|gt|ge)\s+(\S+)\s*$", re.IGNORECASE)
_PARTICIPANT_FILTER = re.compile(r"^\s*participants_v2/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'([^']+)'\s*\)\s*$", re.IGNORECASE)


_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _started(compare: Callable[[datetime, datetime], bool], bound: datetime) -> Callable[[dict[str, Any]], bool]:
    return lambda record: compare(parse_iso(str(record["startDateTime"])), bound)


def _joined(user_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: any(str(p["id"]).lower() == user_id for p in record["participants_v2"])


def _list_filter(text: str | None) -> Any:
    if text is None:
        return lambda record: True
    clauses = re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for clause in clauses:
        start = _START_FILTER.match(clause)
        if start is not None:
            compare = _COMPARE[start.group(1).lower()]
            bound = parse_iso(start.group(2))
            checks.append(_started(compare, bound))
            continue
        participant = _PARTICIPANT_FILTER.match(clause)
        if participant is not None:
            wanted = participant.group(2).lower()
            checks.append(_joined(wanted))
            continue
        # The list supports no other filter [DOC]; the code is a guess.
        raise GraphHTTPError(400, "BadRequest", f"Unsupported filter clause '{clause}': only startDateTime and "
                             "participants_v2/any(p:p/id eq '...') can be filtered.")
    return lambda record: all(check(record) for check in checks)


@bp.get("/communications/callRecords")
def list_records() -> Response:
    """GET /communications/callRecords: the last 30 days, no expansions."""
    state = emulator_state()
    ts = state.store.tenant(_require())
    if request.args.get("$expand") is not None:
        raise GraphHTTPError(400, "BadRequest", "$expand is not supported when listing call records.")
    reject_query(CALL_RECORD, {"$filter", "$select"})
    predicate = _list_filter(request.args.get("$filter"))
    with state.lock:
        records = [r for _, r in records_of(ts).iter_live() if _visible(state, r)]
    values = [{k: r.get(k) for k in _TOP_LEVEL} for r in records if predicate(r)]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#communications/callRecords", "value": values})


@admin_bp.post("/communications/calls")
def admin_end_call() -> Response:
    """End a call: ``{"participants": [user ids], "organizerId"?, "sessions"?, "segmentsPerSession"?,
    "startDateTime"?, "endDateTime"?, "type"?, "tenantId"?}`` -> the record."""
    state = emulator_state()
    body = json_body()
    ts = state.store.tenant(str(body.pop("tenantId", None) or state.config.tenant_id))
    return json_response(end_call(state, ts, body), 201)


@admin_bp.post("/communications/callRecords/<record_id>/update")
def admin_update_record(record_id: str) -> Response:
    """Late client data: ``{"sessions"?: N, "segmentsPerSession"?: M, "tenantId"?}`` -> the record (version + 1)."""
    state = emulator_state()
    body = json_body() if request.get_data().strip() else {}
    ts = state.store.tenant(str(body.pop("tenantId", None) or state.config.tenant_id))
    return json_response(update_record(state, ts, record_id, body))


def admit_call_record_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                                   body: dict[str, Any]) -> ParsedResource:
    """At most N callRecord subscriptions per organisation, whichever app made them (403 beyond)."""
    if body.get("notificationQueryOptions"):
        raise GraphHTTPError(400, "InvalidRequest", "notificationQueryOptions is not supported for this resource.")
    limit = state.config.call_record_subscriptions_per_organization
    live = sum(1 for s in state.subscriptions.all() if s.tenant_id == ts.tenant_id and s.resource_type == "callRecord")
    if live >= limit:
        raise GraphHTTPError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                             f"Maximum number of subscriptions has been reached ({limit} callRecord subscriptions per organization)]")
    return parsed


SUBSCRIBABLE_CALL_RECORDS = SubscribableResource(
    resource_type="callRecord",
    # A ?$filter in the resource is accepted; the emulator notifies every record (a superset) [UNCONFIRMED which
    # filters Graph evaluates].
    shapes=(("communications", "callrecords"),),
    change_types=frozenset({"created", "updated"}),
    max_minutes=4_230,
    max_minutes_rich=None,
    permissions=("CallRecords.Read.All",),
    rich_refusal="Rich notifications are not supported for call records.",
    quota="none",
    admit=admit_call_record_subscription,
)

FAMILY = Family(
    name="callrecords",
    resource_types=(CALL_RECORD,),
    blueprints=(bp, admin_bp),
    subscribable=(SUBSCRIBABLE_CALL_RECORDS,),
    seeders={"callRecordsPerUser": seed_call_records},
)
