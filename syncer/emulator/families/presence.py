"""Teams presence: ``/communications/presences/{id}``, ``/users/{id}/presence``, ``getPresencesByUserId``.

Read (https://learn.microsoft.com/graph/api/presence-get): application Presence.Read.All (or ReadWrite.All); a
signed-in user Presence.Read (their own) or Presence.Read.All (anyone's). ``POST /communications/getPresencesByUserId``
takes at most 650 ids (https://learn.microsoft.com/graph/api/cloudcommunications-getpresencesbyuserid). Graph's write
is ``POST /users/{id}/presence/setPresence`` (application Presence.ReadWrite.All; the session id is the app's id,
https://learn.microsoft.com/graph/api/presence-setpresence); tests and demos set any availability and activity
with ``POST /_emulator/users/{id}/presence``.

Subscriptions (https://learn.microsoft.com/graph/changenotifications-for-presence): ``communications/presences/{id}``
or ``communications/presences?$filter=id in ('a','b')`` with at most 650 ids; ``updated`` only; 60 minutes at most;
**delegated only** (Presence.Read.All), so an app-only token is refused; one subscription per app per signed-in user.
Notifications name ``communications/presences/{id}`` with ``resourceData`` ``@odata.id`` = ``users/{id}/presence``;
rich ones carry the presence (availability, activity).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from syncer.emulator.api import base_url, emulator_state, json_body, json_response
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.identity import AppContext, current_app_context
from syncer.emulator.resources import Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import ChangeEvent
    from syncer.emulator.subscription_model import Subscription

bp = Blueprint("presence", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("presence_admin", __name__, url_prefix="/_emulator")

MAX_IDS = 650
APP_READ = frozenset({"Presence.Read.All", "Presence.ReadWrite.All"})
APP_WRITE = frozenset({"Presence.ReadWrite.All"})
#: https://learn.microsoft.com/graph/api/resources/presence: the enum members of availability and activity.
AVAILABILITY = frozenset({"Available", "AvailableIdle", "Away", "BeRightBack", "Busy", "BusyIdle", "DoNotDisturb",
                          "Offline", "PresenceUnknown"})
ACTIVITY = frozenset({"Available", "Away", "BeRightBack", "Busy", "DoNotDisturb", "InACall", "InAConferenceCall",
                      "Inactive", "InAMeeting", "Offline", "OffWork", "OutOfOffice", "PresenceUnknown", "Presenting",
                      "UrgentInterruptionsOnly"})
#: setPresence accepts only these pairs (https://learn.microsoft.com/graph/api/presence-setpresence).
SET_PRESENCE_PAIRS = frozenset({("Available", "Available"), ("Busy", "InACall"), ("Busy", "InAConferenceCall"),
                                ("Away", "Away"), ("DoNotDisturb", "Presenting")})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

PRESENCE = ResourceType(
    name="presence",
    odata_type="#microsoft.graph.presence",
    notification_type="#microsoft.graph.presence",
    collection="communications/presences",
    family="presence",
    read_roles=APP_READ,
    write_roles=APP_WRITE,
    properties=("id", "availability", "activity", "statusMessage", "outOfOfficeSettings"),
    delegated_read=frozenset({"Presence.Read", "Presence.Read.All"}),
    notification_resource="communications/presences/{id}",
    item_collection="communications/presences/{id}",
    index_by_id=False,
)


def _forbidden() -> GraphHTTPError:
    return GraphHTTPError(403, "Forbidden", "Insufficient privileges to complete the operation.")


def presences_of(ts: TenantStore) -> Collection:
    """The tenant's presences (a user appears once someone sets theirs)."""
    return ts.collection(PRESENCE)


def _require_read(user_id: str | None = None) -> AppContext:
    """The caller if it may read presence (a user with Presence.Read only their own)."""
    ctx = current_app_context()
    if ctx.delegated:
        if ctx.personal or not ctx.scopes & PRESENCE.delegated_read:
            raise _forbidden()
        if "Presence.Read.All" not in ctx.scopes and (user_id is None or user_id.lower() != str(ctx.user_id).lower()):
            raise _forbidden()
    elif not ctx.roles & APP_READ:
        raise _forbidden()
    return ctx


def _user_id(state: EmulatorState, ts: TenantStore, key: str) -> str:
    with state.lock:
        user = find_user(ts, key)
    if user is None:
        raise GraphHTTPError(404, "NotFound", f"User '{key}' was not found.")
    return str(user["id"])


def presence_of(state: EmulatorState, ts: TenantStore, user_id: str) -> dict[str, Any]:
    """The user's presence as Graph renders it (the configured default when nobody set it)."""
    with state.lock:
        stored = presences_of(ts).get(user_id)
    if stored is not None:
        return dict(stored)
    availability, activity = state.config.presence_default
    return {"id": user_id, "availability": availability, "activity": activity,
            "statusMessage": None, "outOfOfficeSettings": {"message": None, "isOutOfOffice": False}}


def set_presence(state: EmulatorState, ts: TenantStore, user_id: str, availability: str, activity: str) -> dict[str, Any]:
    """Record a presence change and notify ``updated`` (nothing when it did not change)."""
    with state.lock:
        current = presence_of(state, ts, user_id)
        if current["availability"] == availability and current["activity"] == activity:
            return current
        item = {**current, "availability": availability, "activity": activity}
        col = presences_of(ts)
        state.store.put(col, user_id, item, change_type="updated", notify=False)
        event = state.store.event_for(col, user_id, "updated", item)
    # Graph names the presence by its user path in resourceData (https://learn.microsoft.com/graph/changenotifications-for-presence).
    data = {"@odata.type": PRESENCE.notification_type, "@odata.id": f"users/{user_id}/presence", "id": user_id}
    state.store.notify([dataclasses.replace(event, resource_data=data)])
    return item


def _rendered(presence: dict[str, Any], context: str) -> dict[str, Any]:
    return {"@odata.context": f"{base_url()}/v1.0/$metadata#{context}", **presence}


@bp.get("/communications/presences/<user_id>")
def get_presence(user_id: str) -> Response:
    """GET /communications/presences/{id}: by object id only."""
    state = emulator_state()
    ctx = _require_read(user_id)
    ts = state.store.tenant(ctx.tenant_id)
    if not _GUID.match(user_id):
        raise GraphHTTPError(400, "BadRequest", f"'{user_id}' is not a valid user object id.")
    uid = _user_id(state, ts, user_id)
    return json_response(_rendered(presence_of(state, ts, uid), "communications/presences/$entity"))


@bp.get("/users/<user>/presence")
def get_user_presence(user: str) -> Response:
    """GET /users/{id | userPrincipalName}/presence (``/me/presence`` arrives here with the user's id)."""
    state = emulator_state()
    ctx = current_app_context()
    ts = state.store.tenant(ctx.tenant_id)
    uid = _user_id(state, ts, user)
    _require_read(uid)
    return json_response(_rendered(presence_of(state, ts, uid), f"users('{uid}')/presence/$entity"))


@bp.post("/communications/getPresencesByUserId")
def get_presences_by_user_id() -> Response:
    """POST /communications/getPresencesByUserId ``{"ids": [...]}``: at most 650 object ids."""
    state = emulator_state()
    ctx = _require_read()
    body = json_body()
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise GraphHTTPError(400, "BadRequest", "The request body must contain 'ids', a non-empty list of user ids.")
    if len(ids) > MAX_IDS:
        raise GraphHTTPError(400, "BadRequest", f"A maximum of {MAX_IDS} user ids is supported per request; got {len(ids)}.")
    bad = next((i for i in ids if not _GUID.match(i)), None)
    if bad is not None:
        raise GraphHTTPError(400, "BadRequest", f"'{bad}' is not a valid user object id.")
    ts = state.store.tenant(ctx.tenant_id)
    values = []
    for uid in dict.fromkeys(i.lower() for i in ids):
        with state.lock:
            user = find_user(ts, uid)
        if user is not None:  # unknown ids are left out [UNCONFIRMED]
            values.append(presence_of(state, ts, str(user["id"])))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#Collection(microsoft.graph.presence)",
                          "value": values})


@bp.post("/users/<user>/presence/setPresence")
def post_set_presence(user: str) -> Response:
    """POST /users/{id}/presence/setPresence: an application's presence session (app-only ReadWrite.All)."""
    state = emulator_state()
    ctx = current_app_context()
    if ctx.delegated or not ctx.roles & APP_WRITE:
        raise _forbidden()
    body = json_body()
    session = body.get("sessionId")
    if not isinstance(session, str) or session.lower() != ctx.client_id.lower():
        raise GraphHTTPError(400, "BadRequest", "sessionId must be the application (client) id of the caller.")
    pair = (body.get("availability"), body.get("activity"))
    if pair not in SET_PRESENCE_PAIRS:
        raise GraphHTTPError(400, "BadRequest", f"Unsupported availability/activity combination {pair}.")
    ts = state.store.tenant(ctx.tenant_id)
    set_presence(state, ts, _user_id(state, ts, user), str(pair[0]), str(pair[1]))
    return Response(status=200)


@admin_bp.post("/users/<user>/presence")
def admin_set_presence(user: str) -> Response:
    """Set a user's presence as Teams would: ``{"availability", "activity", "tenantId"?}`` -> the presence."""
    state = emulator_state()
    body = json_body()
    ts = state.store.tenant(str(body.get("tenantId") or state.config.tenant_id))
    availability, activity = body.get("availability"), body.get("activity")
    if availability not in AVAILABILITY or activity not in ACTIVITY:
        raise GraphHTTPError(400, "BadRequest", f"availability must be one of {sorted(AVAILABILITY)} and activity "
                             f"one of {sorted(ACTIVITY)}; got {availability!r}, {activity!r}.")
    return json_response(set_presence(state, ts, _user_id(state, ts, user), str(availability), str(activity)))


# --- subscriptions -------------------------------------------------------------------------------------------

_ID_IN = re.compile(r"^\s*id\s+in\s+\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"\s*'([^']*)'\s*(?:,|$)")


def filter_ids(text: str) -> list[str]:
    """The ids of ``id in ('a','b')`` (400 for any other filter)."""
    match = _ID_IN.match(text)
    if match is None:
        raise GraphHTTPError(400, "InvalidRequest", f"Unsupported filter '{text}': presence subscriptions take "
                             "$filter=id in ('{id}', ...).")
    inner = match.group(1).strip()
    ids: list[str] = []
    pos = 0
    while pos < len(inner):
        quoted = _QUOTED.match(inner, pos)
        if quoted is None:
            raise GraphHTTPError(400, "InvalidRequest", f"Malformed id list in filter '{text}'.")
        ids.append(quoted.group(1))
        pos = quoted.end()
    return ids


def admit_presence(state: EmulatorState, ts: TenantStore, parsed: ParsedResource, body: dict[str, Any]) -> ParsedResource:
    """At most 650 object ids, a signed-in user with Presence.Read.All, one subscription per app and user."""
    ctx = current_app_context()
    if not ctx.delegated or "Presence.Read.All" not in ctx.scopes:
        raise GraphHTTPError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                             "presence subscriptions need the delegated permission Presence.Read.All]")
    if state.config.presence_rich_required and not body.get("includeResourceData"):
        raise GraphHTTPError(400, "InvalidRequest", "Presence subscriptions require includeResourceData.")
    if parsed.ids:
        ids = list(parsed.ids)
    else:
        text = parsed.query.get("$filter")
        if text is None:
            raise GraphHTTPError(400, "InvalidRequest", "A subscription on communications/presences needs "
                                 "$filter=id in ('{id}', ...).")
        ids = filter_ids(text)
    if not ids:
        raise GraphHTTPError(400, "InvalidRequest", "The presence subscription names no user id.")
    if len(ids) > MAX_IDS:
        raise GraphHTTPError(400, "InvalidRequest", f"A presence subscription takes at most {MAX_IDS} user ids; got {len(ids)}.")
    bad = next((i for i in ids if not _GUID.match(i)), None)
    if bad is not None:
        raise GraphHTTPError(400, "InvalidRequest", f"'{bad}' is not a valid user object id.")
    mine = [s for s in state.subscriptions.all() if s.tenant_id == ts.tenant_id and s.resource_type == "presence"
            and s.application_id == ctx.client_id and s.creator_id.lower() == str(ctx.user_id).lower()]
    if mine:
        status = state.config.presence_subscription_per_user_status
        raise GraphHTTPError(status, "ExtensionError", f"Operation: Create; Exception: [Status Code: {status}; Reason: "
                             "this application already has a presence subscription for the signed-in user]")
    key = parsed.key if parsed.ids else "communications/presences"
    return dataclasses.replace(parsed, key=key.lower())


def deliver_presence(state: EmulatorState, subscription: Subscription, event: ChangeEvent) -> bool:
    """A ``$filter`` subscription hears only the users it names."""
    text = subscription.parsed.query.get("$filter")
    if subscription.parsed.ids or text is None:
        return True
    return event.item_id.lower() in {i.lower() for i in filter_ids(text)}


SUBSCRIBABLE_PRESENCE = SubscribableResource(
    resource_type="presence",
    shapes=(("communications", "presences"),),
    item_shapes=(("communications", "presences", "*"),),
    change_types=frozenset({"updated"}),
    max_minutes=60,
    max_minutes_rich=60,
    # No application permission subscribes: an app-only token is refused (check_permission matches none).
    permissions=(),
    rich_refusal="",
    quota="none",
    admit=admit_presence,
    deliver=deliver_presence,
)

FAMILY = Family(
    name="presence",
    resource_types=(PRESENCE,),
    blueprints=(bp, admin_bp),
    subscribable=(SUBSCRIBABLE_PRESENCE,),
)
