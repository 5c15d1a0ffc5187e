"""Graph's Teams paths: teams, channels, members, channel messages and replies, chats and chat messages.

Reads follow https://learn.microsoft.com/graph/api/teams-list, .../channel-list, .../team-list-members,
.../channel-list-messages (roots only, ``$top`` <= 50, ``$expand=replies``), .../chatmessage-list-replies,
.../chat-list (per user, app-only), .../chat-list-messages (``$orderby``/``$filter`` rules) and
.../channel-getallmessages. Writes an app may make: create team (202 + ``teamsAsyncOperation``,
https://learn.microsoft.com/graph/api/team-post), channels, members, chats. Posting messages with an app token works only
for teams created in migration mode (https://learn.microsoft.com/microsoftteams/platform/graph-api/import-messages/import-external-messages-to-teams);
softDelete is delegated-only (https://learn.microsoft.com/graph/api/chatmessage-softdelete).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    compile_filter,
    emulator_state,
    json_body,
    json_response,
    no_content,
    validate_props,
)
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import groups_of
from syncer.emulator.families.teams import kinds, metering, model, operations
from syncer.emulator.families.teams.kinds import MAX_TOP
from syncer.emulator.families.teams.listing import (
    date_clauses,
    evolvable_enums,
    matches,
    paged,
    reject_options,
    require,
)
from syncer.emulator.families.teams.model import bad, not_found
from syncer.emulator.identity import AppContext
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("teams", __name__, url_prefix="/v1.0")


@bp.record_once
def _follow_groups(setup: BlueprintSetupState) -> None:
    """Teams hear of group deletions and restores through the store's listeners (see :func:`model.on_change`)."""
    state: EmulatorState = setup.app.config["EMULATOR_STATE"]
    state.store.add_listener(partial(model.on_change, state))


def _tenant(roles: frozenset[str]) -> tuple[AppContext, TenantStore]:
    ctx = require(roles)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    operations.settle(state, ts)
    return ctx, ts


def _entity(rtype: ResourceType, item: dict[str, Any], context: str, status: int = 200) -> Response:
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    rendered, = evolvable_enums([delta_mod.project(rtype, item, select)])
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity", **rendered}, status)


def _live(col: Collection) -> list[dict[str, Any]]:
    return [item for _, item in col.iter_live()]


def _newest_first(items: list[dict[str, Any]], prop: str = "lastModifiedDateTime") -> list[dict[str, Any]]:
    return sorted(items, key=lambda m: (str(m.get(prop)), str(m["id"])), reverse=True)


# --- teams -----------------------------------------------------------------------------------------------------


@bp.get("/teams")
def list_teams() -> Response:
    """Every team; only id, displayName, description and visibility are filled, the rest null [DOC]."""
    state = emulator_state()
    _, ts = _tenant(kinds.TEAM_READ)
    reject_options({"$filter", "$select", "$top", "$skiptoken", "$count"})
    predicate = compile_filter(kinds.TEAM, request.args["$filter"]) if "$filter" in request.args else None
    filled = ("id", "displayName", "description", "visibility")

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for item in _live(model.team_col(ts)):
            if predicate is None or predicate(item):
                out.append({p: (item.get(p) if p in filled else None) for p in kinds.TEAM.properties})
        return out
    return paged(state, kinds.TEAM, build, context="teams", default=100, maximum=999,
                 count=request.args.get("$count", "").lower() == "true")


@bp.post("/teams")
def create_team() -> Response:
    """202, empty body, ``Location: /teams('{id}')/operations('{op}')`` [DOC]; the team exists once the operation succeeded."""
    state = emulator_state()
    _, ts = _tenant(frozenset({"Team.Create", "Directory.ReadWrite.All", "Group.ReadWrite.All"}))
    body = json_body()
    bind = body.pop("template@odata.bind", None)
    group_bind = body.pop("group@odata.bind", None)
    migration = body.pop("@microsoft.graph.teamCreationMode", None) == "migration"
    members_raw = body.pop("members", None)
    if bind is None and group_bind is None:
        raise bad("A team needs 'template@odata.bind' (or 'group@odata.bind').")
    members = _members_from_body(ts, members_raw or [])
    group_id = None
    if group_bind is not None:
        group_id = str(group_bind).rstrip("')").rsplit("'", 1)[-1].rsplit("/", 1)[-1]
        if set(body) & {"displayName", "visibility"} or members:
            raise bad("displayName, visibility and members cannot be set when creating a team from a group.")
        group = groups_of(ts).get(group_id)
        if group is None:
            raise not_found(f"Group '{group_id}' not found.")
        body.setdefault("displayName", group.get("displayName"))
        body.setdefault("description", group.get("description"))
        if model.team_col(ts).get(group_id) is not None:
            raise GraphHTTPError(409, "Conflict", f"The group '{group_id}' already has a team.")
    else:
        # An app token must name one owner (https://learn.microsoft.com/graph/api/team-post).
        if not any("owner" in roles for _, roles in members):
            raise bad("An application-created team must have one owner in 'members'.")
    props = validate_props(kinds.TEAM, body, creating=False)
    if not isinstance(props.get("displayName"), str) or not props["displayName"]:
        raise bad("displayName is required.")
    op, team_id = operations.start(state, ts, display_name=props["displayName"],
                                   description=props.get("description"),
                                   visibility=str(props.get("visibility") or "private"), group_id=group_id,
                                   members=[(str(u["id"]), r) for u, r in members], migration=migration)
    response = Response(b"", status=202)
    response.headers["Location"] = f"/teams('{team_id}')/operations('{op}')"
    response.headers["Content-Location"] = f"/teams('{team_id}')"
    return response


def _members_from_body(ts: TenantStore, raw: Any) -> list[tuple[dict[str, Any], list[str]]]:
    """``[{"@odata.type": "#microsoft.graph.aadUserConversationMember", "user@odata.bind": ".../users('id')", "roles": [...]}]``."""
    if not isinstance(raw, list):
        raise bad("'members' must be an array.")
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise bad("Each member must be an object.")
        ref = entry.get("user@odata.bind") or entry.get("userId")
        if not isinstance(ref, str):
            raise bad("A member needs 'user@odata.bind'.")
        key = ref.rstrip("')").rsplit("'", 1)[-1].rsplit("/", 1)[-1]
        roles = entry.get("roles") or []
        if not isinstance(roles, list) or any(r not in ("owner", "guest") for r in roles):
            raise bad("roles must be [], ['owner'] or ['guest'].")
        out.append((model.user_or_404(ts, key), list(roles)))
    return out


@bp.get("/users/<user_key>/joinedTeams")
def joined_teams(user_key: str) -> Response:
    """The teams a user is a member of (https://learn.microsoft.com/graph/api/user-list-joinedteams; app tokens may ask
    for any user)."""
    state = emulator_state()
    _, ts = _tenant(kinds.TEAM_READ)
    reject_options(set())
    uid = str(model.user_or_404(ts, user_key)["id"]).lower()
    with state.lock:
        mine = [t for t in _live(model.team_col(ts))
                if any(str(m.get("userId")).lower() == uid for m in _live(model.member_col(ts, team=str(t["id"]))))]
    filled = ("id", "displayName", "description", "visibility", "isArchived", "tenantId")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams", "@odata.count": len(mine),
                          "value": [{p: t.get(p) for p in filled} for t in mine]})


@bp.get("/teams/<team_id>/allChannels")
@bp.get("/teams/<team_id>/incomingChannels")
def all_channels(team_id: str) -> Response:
    """allChannels: the team's channels, shared ones included; incomingChannels: channels shared into the team from
    other teams, which the emulator does not model (always empty) (https://learn.microsoft.com/graph/api/team-list-allchannels)."""
    _, ts = _tenant(kinds.CHANNEL_READ)
    reject_options({"$filter", "$select"})
    col = model.channel_col(ts, team_id)
    incoming = request.path.rstrip("/").endswith("incomingChannels")
    predicate = compile_filter(kinds.CHANNEL, request.args["$filter"]) if "$filter" in request.args else None
    values = [] if incoming else [c for c in _live(col) if predicate is None or predicate(c)]
    select = delta_mod.parse_select(kinds.CHANNEL, request.args.get("$select"))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#channels", "@odata.count": len(values),
                          "value": [delta_mod.project(kinds.CHANNEL, c, select) for c in values]})


@bp.get("/teams/<team_id>")
def get_team(team_id: str) -> Response:
    _, ts = _tenant(kinds.TEAM_READ)
    return _entity(kinds.TEAM, model.team_or_404(ts, team_id), "teams")


@bp.patch("/teams/<team_id>")
def update_team(team_id: str) -> Response:
    state = emulator_state()
    _, ts = _tenant(kinds.TEAM_WRITE)
    props = validate_props(kinds.TEAM, json_body(), creating=False)
    with state.lock:
        team = {**model.team_or_404(ts, team_id), **props}
        state.store.put(model.team_col(ts), str(team["id"]), team, change_type="updated")
    return no_content()


@bp.get("/teams/<team_id>/operations/<op_id>")
def get_operation(team_id: str, op_id: str) -> Response:
    """``teamsAsyncOperation``: notStarted, inProgress, then succeeded (https://learn.microsoft.com/graph/api/resources/teamsasyncoperation)."""
    state = emulator_state()
    _, ts = _tenant(kinds.TEAM_READ | kinds.TEAM_WRITE)
    op = operations.get(state, ts, team_id, op_id)
    if op is None:
        raise not_found(f"Operation '{op_id}' not found.")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams('{team_id}')/operations/$entity", **op})


# --- channels --------------------------------------------------------------------------------------------------


@bp.route("/teams/<team_id>/channels", methods=["GET", "POST"])
def channels(team_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        _, ts = _tenant(kinds.CHANNEL_READ)
        reject_options({"$filter", "$select"})
        col = model.channel_col(ts, team_id)
        predicate = compile_filter(kinds.CHANNEL, request.args["$filter"]) if "$filter" in request.args else None
        values = [c for c in _live(col) if predicate is None or predicate(c)]
        select = delta_mod.parse_select(kinds.CHANNEL, request.args.get("$select"))
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams('{team_id}')/channels",
                              "@odata.count": len(values),
                              "value": [delta_mod.project(kinds.CHANNEL, c, select) for c in values]})
    _, ts = _tenant(kinds.CHANNEL_WRITE)
    body = json_body()
    members = _members_from_body(ts, body.pop("members", None) or [])
    props = validate_props(kinds.CHANNEL, body, creating=True)
    name = props["displayName"]
    membership = props.get("membershipType") or "standard"
    if not isinstance(name, str) or len(name) > 50:
        raise bad("Channel displayName must be a string of at most 50 characters.")
    if membership not in ("standard", "private", "shared"):
        raise bad(f"Invalid membershipType '{membership}'.")
    owners = [u for u, roles in members if "owner" in roles]
    if membership == "shared" and len(owners) > 1:
        raise bad("A shared channel can have only one owner at creation.")
    if membership == "private" and len(members) > 200:
        raise bad("A private channel can have at most 200 members at creation.")
    with state.lock:
        col = model.channel_col(ts, team_id)
        if any(str(c["displayName"]).lower() == name.lower() for c in _live(col)):
            raise GraphHTTPError(400, "NameAlreadyExists", f"Channel name already existed, please use other name: {name}")
    channel = model.new_channel(state, ts, team_id, display_name=name, description=props.get("description"),
                                membership_type=membership)
    if membership != "standard":
        mcol = model.member_col(ts, team=team_id, channel=str(channel["id"]))
        for user, roles in members:
            model.add_member(state, ts, mcol, user, roles)
    model.system_event(state, ts, model.general_channel(ts, team_id), {
        "@odata.type": "#microsoft.graph.channelAddedEventMessageDetail", "channelId": channel["id"],
        "channelDisplayName": channel["displayName"]})
    return _entity(kinds.CHANNEL, channel, f"teams('{team_id}')/channels", 201)


@bp.route("/teams/<team_id>/channels/<channel_id>", methods=["GET", "PATCH", "DELETE"])
def channel(team_id: str, channel_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        _, ts = _tenant(kinds.CHANNEL_READ)
        return _entity(kinds.CHANNEL, model.channel_or_404(ts, team_id, channel_id), f"teams('{team_id}')/channels")
    _, ts = _tenant(kinds.CHANNEL_WRITE)
    col = model.channel_col(ts, team_id)
    found = model.channel_or_404(ts, team_id, channel_id)
    if request.method == "PATCH":
        props = validate_props(kinds.CHANNEL, json_body(), creating=False)
        if "membershipType" in props:
            raise bad("membershipType cannot be changed.")
        state.store.put(col, str(found["id"]), {**found, **props}, change_type="updated")
        return no_content()
    if found["displayName"] == "General":
        raise bad("The General channel cannot be deleted.")
    state.store.remove(col, str(found["id"]), reason="deleted")
    return no_content()


@bp.get("/teams/<team_id>/channels/getAllMessages")
def channel_all_messages(team_id: str) -> Response:
    """Roots and replies of every channel of the team (https://learn.microsoft.com/graph/api/channel-getallmessages)."""
    state = emulator_state()
    ctx, ts = _tenant(frozenset({"ChannelMessage.Read.All"}))
    reject_options({"$top", "$filter", "$skiptoken", "$count", "$select"})
    metering.check_model(request.args.get("model"))
    clauses = date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt"),
                                                                  ("lastModifiedDateTime", "lt")})
    channels = _live(model.channel_col(ts, team_id))

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ch in channels:
            roots = model.roots_col(ts, team_id, str(ch["id"]))
            for root in _live(roots):
                out.append(root)
                replies = ts.collections.get(f"{roots.key}/{root['id']}/replies")
                out.extend(_live(replies) if replies is not None else [])
        return [m for m in out if matches(m, options.get("clauses", []))]
    return _metered(ctx, paged(state, kinds.CHANNEL_MESSAGE, build, context="Collection(chatMessage)",
                               default=MAX_TOP, maximum=MAX_TOP, options={"clauses": clauses}, count=True))


def _metered(ctx: AppContext, response: Response) -> Response:
    """Evaluation mode (no ``model``): each exported message counts, an empty page counts as one; 402 once the month's
    capacity is spent (see :mod:`.metering`)."""
    if request.args.get("model") is not None or response.status_code != 200:
        return response
    spent = len(orjson.loads(response.get_data())["value"]) or 1
    if not metering.use(emulator_state(), ctx.tenant_id, ctx.client_id, spent):
        raise metering.payment_required()
    return response


# --- members ---------------------------------------------------------------------------------------------------


_ROLE_FILTER = re.compile(r"^\s*roles/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'(owner|guest)'\s*\)\s*$", re.IGNORECASE)
_USER_FILTER = re.compile(r"^\s*\(?\s*microsoft\.graph\.aadUserConversationMember/(userId|email)\s+eq\s+'([^']*)'\s*\)?\s*$",
                          re.IGNORECASE)


def _member_filter(rtype: ResourceType, text: str) -> Callable[[dict[str, Any]], bool]:
    """The member filters of https://learn.microsoft.com/graph/api/team-list-members: ``roles/any(r:r eq 'owner')``,
    ``(microsoft.graph.aadUserConversationMember/userId eq '..')`` (or ``/email``), else the shared subset."""
    role = _ROLE_FILTER.match(text)
    if role is not None:
        wanted = role.group(2).lower()
        return lambda m: wanted in [str(r).lower() for r in m.get("roles") or []]
    user = _USER_FILTER.match(text)
    if user is not None:
        prop, value = ("userId" if user.group(1).lower() == "userid" else "email"), user.group(2).lower()
        return lambda m: str(m.get(prop) or "").lower() == value
    predicate: Callable[[dict[str, Any]], bool] = compile_filter(rtype, text)
    return predicate


def _list_members(col: Collection, rtype: ResourceType, context: str) -> Response:
    reject_options({"$filter", "$select", "$top", "$skiptoken"})
    predicate = _member_filter(rtype, request.args["$filter"]) if "$filter" in request.args else None
    return paged(emulator_state(), rtype, lambda _o: [m for m in _live(col) if predicate is None or predicate(m)],
                 context=context, default=100, maximum=999)


def _add_member(ts: TenantStore, col: Collection, rtype: ResourceType, context: str) -> Response:
    body = json_body()
    members = _members_from_body(ts, [body])
    user, roles = members[0]
    item = model.add_member(emulator_state(), ts, col, user, roles)
    _membership_event(ts, col, "membersAdded", [str(user["id"])])
    return _entity(rtype, item, context, 201)


def _membership_event(ts: TenantStore, col: Collection, kind: str, user_ids: list[str]) -> None:
    """Teams announces team and chat membership changes in the General channel or the chat itself."""
    if not user_ids:
        return
    if col.rtype is kinds.TEAM_MEMBER:
        conversation = model.general_channel(ts, col.parents["team"])
    elif col.rtype is kinds.CHAT_MEMBER:
        conversation = model.chat_messages_col(ts, col.parents["chat"])
    else:
        return
    model.system_event(emulator_state(), ts, conversation, model.member_detail(kind, ts, user_ids))


def _remove_member(ts: TenantStore, col: Collection, membership: str) -> None:
    found = col.get(membership)
    model.remove_member(emulator_state(), ts, col, membership)
    _membership_event(ts, col, "membersDeleted", [str(found["userId"])] if found else [])


@bp.route("/teams/<team_id>/members", methods=["GET", "POST"])
def team_members(team_id: str) -> Response:
    if request.method == "GET":
        _, ts = _tenant(kinds.TEAM_MEMBER_READ)
        return _list_members(model.member_col(ts, team=team_id), kinds.TEAM_MEMBER, f"teams('{team_id}')/members")
    _, ts = _tenant(kinds.TEAM_MEMBER_WRITE)
    return _add_member(ts, model.member_col(ts, team=team_id), kinds.TEAM_MEMBER, f"teams('{team_id}')/members")


@bp.post("/teams/<team_id>/members/add")
def team_members_add(team_id: str) -> Response:
    """Bulk add with per-item results (https://learn.microsoft.com/graph/api/conversationmembers-add)."""
    state = emulator_state()
    _, ts = _tenant(kinds.TEAM_MEMBER_WRITE)
    col = model.member_col(ts, team=team_id)
    values = json_body().get("values")
    if not isinstance(values, list):
        raise bad("'values' must be an array.")
    results = []
    added: list[str] = []
    for entry in values:
        try:
            (user, roles), = _members_from_body(ts, [entry])
            model.add_member(state, ts, col, user, roles)
            added.append(str(user["id"]))
            results.append({"@odata.type": "#microsoft.graph.aadUserConversationMemberResult",
                            "userId": user["id"], "error": None})
        except GraphHTTPError as exc:
            results.append({"@odata.type": "#microsoft.graph.aadUserConversationMemberResult",
                            "userId": None, "error": {"code": exc.code, "message": exc.message}})
    _membership_event(ts, col, "membersAdded", added)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#Collection(microsoft.graph.actionResultPart)",
                          "value": results})


@bp.route("/teams/<team_id>/members/<membership>", methods=["GET", "DELETE"])
def team_member(team_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = _tenant(kinds.TEAM_MEMBER_READ)
        item = model.member_col(ts, team=team_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return _entity(kinds.TEAM_MEMBER, item, f"teams('{team_id}')/members")
    _, ts = _tenant(kinds.TEAM_MEMBER_WRITE)
    _remove_member(ts, model.member_col(ts, team=team_id), membership)
    return no_content()


@bp.route("/teams/<team_id>/channels/<channel_id>/members", methods=["GET", "POST"])
def channel_members(team_id: str, channel_id: str) -> Response:
    context = f"teams('{team_id}')/channels('{channel_id}')/members"
    if request.method == "GET":
        _, ts = _tenant(kinds.CHANNEL_MEMBER_READ)
        found = model.channel_or_404(ts, team_id, channel_id)
        if found["membershipType"] == "standard":
            # A standard channel's members are the team's (https://learn.microsoft.com/graph/api/channel-list-members).
            return _list_members(model.member_col(ts, team=team_id), kinds.CHANNEL_MEMBER, context)
        return _list_members(model.member_col(ts, team=team_id, channel=channel_id), kinds.CHANNEL_MEMBER, context)
    _, ts = _tenant(kinds.CHANNEL_MEMBER_WRITE)
    if model.channel_or_404(ts, team_id, channel_id)["membershipType"] == "standard":
        raise bad("Members can only be added to private and shared channels.")
    return _add_member(ts, model.member_col(ts, team=team_id, channel=channel_id), kinds.CHANNEL_MEMBER, context)


@bp.route("/teams/<team_id>/channels/<channel_id>/members/<membership>", methods=["GET", "DELETE"])
def channel_member(team_id: str, channel_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = _tenant(kinds.CHANNEL_MEMBER_READ)
        item = model.member_col(ts, team=team_id, channel=channel_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return _entity(kinds.CHANNEL_MEMBER, item, f"teams('{team_id}')/channels('{channel_id}')/members")
    _, ts = _tenant(kinds.CHANNEL_MEMBER_WRITE)
    model.remove_member(emulator_state(), ts, model.member_col(ts, team=team_id, channel=channel_id), membership)
    return no_content()


# --- channel messages ------------------------------------------------------------------------------------------


def _with_replies(ts: TenantStore, roots: Collection, root: dict[str, Any]) -> dict[str, Any]:
    """``$expand=replies``: up to 1,000 inline, then ``replies@odata.nextLink`` [DOC]."""
    col = ts.collections.get(f"{roots.key}/{root['id']}/replies")
    replies = _newest_first(_live(col), "createdDateTime") if col is not None else []
    out = {**delta_mod.project(kinds.CHANNEL_MESSAGE, root, None),
           "replies": [delta_mod.project(kinds.CHANNEL_REPLY, r, None) for r in replies[:1000]]}
    if len(replies) > 1000:
        team, channel = roots.parents["team"], roots.parents["channel"]
        out["replies@odata.nextLink"] = f"{base_url()}/v1.0/teams/{team}/channels/{channel}/messages/{root['id']}/replies?$skiptoken="
    return out


def _post_as_app(ctx: AppContext, ts: TenantStore, col: Collection, team_id: str | None) -> Response:
    """Sending with an app token: only importing into a team in migration mode (Teamwork.Migrate.All) [DOC]."""
    state = emulator_state()
    team = model.team_col(ts).get(team_id) if team_id is not None else None
    if not (ctx.roles & kinds.MIGRATE) or team is None or not team.get("@emulator.migration"):
        raise GraphHTTPError(state.config.teams_app_send_status, "Forbidden",
                             "Requested API is not supported in application-only context")
    body = json_body()
    sender_ref = (((body.get("from") or {}).get("user") or {}).get("id"))
    if not isinstance(sender_ref, str):
        raise bad("An imported message needs 'from.user.id'.")
    item = model.post_message(state, ts, col, body, model.user_or_404(ts, sender_ref))
    return json_response(item, 201)


@bp.route("/teams/<team_id>/channels/<channel_id>/messages", methods=["GET", "POST"])
def channel_messages(team_id: str, channel_id: str) -> Response:
    """Roots only, newest first, ``$top`` <= 50, ``$expand=replies`` and nothing else [DOC]."""
    state = emulator_state()
    if request.method == "POST":
        ctx, ts = _tenant(kinds.MIGRATE | kinds.CHANNEL_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.roots_col(ts, team_id, channel_id), team_id)
    _, ts = _tenant(kinds.CHANNEL_MESSAGE_READ)
    reject_options({"$top", "$expand", "$skiptoken"})
    expand = request.args.get("$expand")
    if expand is not None and expand.strip().lower() != "replies":
        raise bad(f"Unsupported $expand '{expand}': only 'replies'.")
    roots = model.roots_col(ts, team_id, channel_id)

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        items = _newest_first(_live(roots))
        if options.get("expand"):
            return [_with_replies(ts, roots, m) for m in items]
        return items
    return paged(state, kinds.CHANNEL_MESSAGE, build, context=f"teams('{team_id}')/channels('{channel_id}')/messages",
                 default=20, maximum=MAX_TOP, options={"expand": expand is not None}, final=expand is not None)


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>", methods=["GET", "PATCH"])
def channel_message(team_id: str, channel_id: str, message_id: str) -> Response:
    state = emulator_state()
    if request.method == "PATCH":
        # Graph documents PATCH for policyViolation only (app) [DOC]; content edits are a user's (admin API).
        _, ts = _tenant(frozenset({"ChannelMessage.UpdatePolicyViolation.All"}))
        col = model.roots_col(ts, team_id, channel_id)
        body = json_body()
        if set(body) - {"policyViolation"}:
            raise bad("An application may only update 'policyViolation'.")
        model.edit_message(state, ts, col, message_id, body)
        return no_content()
    _, ts = _tenant(kinds.CHANNEL_MESSAGE_READ)
    roots = model.roots_col(ts, team_id, channel_id)
    item = model.message_or_404(roots, message_id)
    if (request.args.get("$expand") or "").lower() == "replies":
        return json_response(evolvable_enums([_with_replies(ts, roots, item)])[0])
    return _entity(kinds.CHANNEL_MESSAGE, item, f"teams('{team_id}')/channels('{channel_id}')/messages")


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies", methods=["GET", "POST"])
def channel_replies(team_id: str, channel_id: str, message_id: str) -> Response:
    state = emulator_state()
    if request.method == "POST":
        ctx, ts = _tenant(kinds.MIGRATE | kinds.CHANNEL_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.replies_col(ts, team_id, channel_id, message_id), team_id)
    _, ts = _tenant(kinds.CHANNEL_MESSAGE_READ)
    reject_options({"$top", "$skiptoken"})
    col = model.replies_col(ts, team_id, channel_id, message_id)
    return paged(state, kinds.CHANNEL_REPLY, lambda _o: _newest_first(_live(col), "createdDateTime"),
                 context=f"teams('{team_id}')/channels('{channel_id}')/messages('{message_id}')/replies",
                 default=MAX_TOP, maximum=MAX_TOP)


@bp.get("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies/<reply_id>")
def channel_reply(team_id: str, channel_id: str, message_id: str, reply_id: str) -> Response:
    _, ts = _tenant(kinds.CHANNEL_MESSAGE_READ)
    col = model.replies_col(ts, team_id, channel_id, message_id)
    return _entity(kinds.CHANNEL_REPLY, model.message_or_404(col, reply_id),
                   f"teams('{team_id}')/channels('{channel_id}')/messages('{message_id}')/replies")


@bp.post("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/<action>")
@bp.post("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies/<reply_id>/<action>")
@bp.post("/chats/<chat_id>/messages/<message_id>/<action>")
def soft_delete_as_app(action: str, **_ids: str) -> Response:
    """softDelete / undoSoftDelete are delegated-only: an app token gets 403 [DOC]."""
    if action not in ("softDelete", "undoSoftDelete"):
        raise GraphHTTPError(400, "BadRequest", f"Resource not found for the segment '{action}'.")
    require(frozenset())
    raise GraphHTTPError(403, "Forbidden", "Requested API is not supported in application-only context")


# --- chats -----------------------------------------------------------------------------------------------------


@bp.route("/chats", methods=["GET", "POST"])
def chats() -> Response:
    state = emulator_state()
    if request.method == "GET":
        # GET /chats lists the signed-in user's chats: delegated only; apps use /users/{id}/chats [DOC].
        require(frozenset())
        raise GraphHTTPError(403, "Forbidden", "Requested API is not supported in application-only context")
    _, ts = _tenant(kinds.CHAT_WRITE)
    body = json_body()
    chat_type = body.get("chatType")
    if chat_type not in ("oneOnOne", "group"):
        raise bad("chatType must be 'oneOnOne' or 'group'.")
    members = _members_from_body(ts, body.get("members"))
    if chat_type == "oneOnOne" and len(members) != 2:
        raise bad("A oneOnOne chat has exactly two members.")
    if chat_type == "group" and len(members) < 2:
        raise bad("A group chat needs at least two members.")
    unknown = set(body) - {"chatType", "topic", "members", "@odata.type"}
    if unknown:
        raise bad(f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.chat'.")
    chat, created = model.create_chat(state, ts, chat_type=chat_type, topic=body.get("topic"), members=members)
    status = 201 if created else state.config.teams_existing_chat_status
    return _entity(kinds.CHAT, chat, "chats", status)


def _chat_view(ts: TenantStore, chat: dict[str, Any]) -> dict[str, Any]:
    expand = (request.args.get("$expand") or "").lower()
    out = delta_mod.project(kinds.CHAT, chat, None)
    if "members" in expand:
        out["members"] = chat.get("members", [])[:25]  # Graph expands at most 25 members [OBS]
    if "lastmessagepreview" in expand:
        col = ts.collections.get(f"chats/{chat['id']}/messages".lower())
        newest = _newest_first(_live(col), "createdDateTime")[:1] if col is not None else []
        out["lastMessagePreview"] = ({"id": newest[0]["id"], "createdDateTime": newest[0]["createdDateTime"],
                                      "body": newest[0]["body"], "from": newest[0]["from"],
                                      "isDeleted": bool(newest[0]["deletedDateTime"]), "messageType": "message"}
                                     if newest else None)
    return out


@bp.route("/chats/<chat_id>", methods=["GET", "PATCH", "DELETE"])
def chat(chat_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        _, ts = _tenant(kinds.CHAT_READ_BASIC)
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#chats/$entity",
                              **_chat_view(ts, model.chat_or_404(ts, chat_id))})
    if request.method == "DELETE":
        # https://learn.microsoft.com/graph/api/chat-delete: Chat.ManageDeletion.All, 204; the chat is gone for everyone.
        _, ts = _tenant(kinds.CHAT_DELETE)
        found = model.chat_or_404(ts, chat_id)
        state.store.remove(model.chat_col(ts), str(found["id"]), reason="deleted")
        return no_content()
    _, ts = _tenant(frozenset({"Chat.ReadWrite.All", "ChatSettings.ReadWrite.Chat"}))
    body = json_body()
    if set(body) - {"topic"}:
        raise bad("Only 'topic' can be updated.")
    with state.lock:
        found = model.chat_or_404(ts, chat_id)
        if found["chatType"] != "group":
            raise bad("Only a group chat has a topic.")
        updated = {**found, "topic": body["topic"], "lastUpdatedDateTime": state.store.now_iso()}
        state.store.put(model.chat_col(ts), str(found["id"]), updated, change_type="updated")
    model.system_event(state, ts, model.chat_messages_col(ts, str(found["id"])), {
        "@odata.type": "#microsoft.graph.chatRenamedEventMessageDetail", "chatId": found["id"],
        "chatDisplayName": body["topic"]})
    return _entity(kinds.CHAT, updated, "chats")


@bp.route("/chats/<chat_id>/members", methods=["GET", "POST"])
def chat_members(chat_id: str) -> Response:
    if request.method == "GET":
        _, ts = _tenant(kinds.CHAT_MEMBER_READ)
        return _list_members(model.member_col(ts, chat=chat_id), kinds.CHAT_MEMBER, f"chats('{chat_id}')/members")
    _, ts = _tenant(kinds.CHAT_MEMBER_WRITE)
    if model.chat_or_404(ts, chat_id)["chatType"] == "oneOnOne":
        raise bad("Members cannot be added to a oneOnOne chat.")
    return _add_member(ts, model.member_col(ts, chat=chat_id), kinds.CHAT_MEMBER, f"chats('{chat_id}')/members")


@bp.route("/chats/<chat_id>/members/<membership>", methods=["GET", "DELETE"])
def chat_member(chat_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = _tenant(kinds.CHAT_MEMBER_READ)
        item = model.member_col(ts, chat=chat_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return _entity(kinds.CHAT_MEMBER, item, f"chats('{chat_id}')/members")
    _, ts = _tenant(kinds.CHAT_MEMBER_WRITE)
    _remove_member(ts, model.member_col(ts, chat=chat_id), membership)
    return no_content()


def _list_chat_messages(ts: TenantStore, col: Collection, context: str) -> Response:
    """``$orderby`` lastModifiedDateTime desc (default) or createdDateTime desc; ``$filter`` lastModifiedDateTime
    gt/lt or createdDateTime lt, ignored unless ``$orderby`` names the same property [DOC]."""
    reject_options({"$top", "$orderby", "$filter", "$skiptoken"})
    orderby = (request.args.get("$orderby") or "").strip()
    order_prop = "lastModifiedDateTime"
    if orderby:
        parts = orderby.split()
        if len(parts) != 2 or parts[1].lower() != "desc" or parts[0].lower() not in ("lastmodifieddatetime",
                                                                                        "createddatetime"):
            raise bad(f"$orderby '{orderby}' is not supported: use lastModifiedDateTime desc or createdDateTime desc.")
        order_prop = "createdDateTime" if parts[0].lower() == "createddatetime" else "lastModifiedDateTime"
    clauses = date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt"),
                                                                  ("lastModifiedDateTime", "lt"),
                                                                  ("createdDateTime", "lt")})
    if not orderby or any(prop != order_prop for prop, _, _ in clauses):
        clauses = []  # silently ignored [DOC]

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        items = _newest_first(_live(col), options["order"])
        return [m for m in items if matches(m, options["clauses"])]
    return paged(emulator_state(), kinds.CHAT_MESSAGE, build, context=context, default=MAX_TOP, maximum=MAX_TOP,
                 options={"order": order_prop, "clauses": clauses})


@bp.route("/chats/<chat_id>/messages", methods=["GET", "POST"])
def chat_messages(chat_id: str) -> Response:
    if request.method == "POST":
        ctx, ts = _tenant(kinds.MIGRATE | kinds.CHAT_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.chat_messages_col(ts, chat_id), None)
    _, ts = _tenant(kinds.CHAT_MESSAGE_READ)
    return _list_chat_messages(ts, model.chat_messages_col(ts, chat_id), f"chats('{chat_id}')/messages")


@bp.get("/chats/<chat_id>/messages/<message_id>")
def chat_message(chat_id: str, message_id: str) -> Response:
    _, ts = _tenant(kinds.CHAT_MESSAGE_READ)
    col = model.chat_messages_col(ts, chat_id)
    return _entity(kinds.CHAT_MESSAGE, model.message_or_404(col, message_id), f"chats('{chat_id}')/messages")


# --- a user's chats (app-only) ---------------------------------------------------------------------------------


def _user_chat(ts: TenantStore, user_key: str, chat_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    user = model.user_or_404(ts, user_key)
    found = model.chat_or_404(ts, chat_id)
    if str(user["id"]).lower() not in {u.lower() for u in kinds.chat_member_ids(ts, str(found["id"]))}:
        raise not_found(f"Chat '{chat_id}' not found for user '{user_key}'.")
    return user, found


@bp.get("/users/<user_key>/chats")
def user_chats(user_key: str) -> Response:
    """The user's chats, ``$top`` <= 50, ``$expand=members,lastMessagePreview``, ``$orderby`` only
    ``lastMessagePreview/createdDateTime desc`` (other sorts ignored [OBS])."""
    state = emulator_state()
    _, ts = _tenant(kinds.CHAT_READ_BASIC)
    reject_options({"$top", "$expand", "$filter", "$orderby", "$skiptoken", "$select"})
    user = model.user_or_404(ts, user_key)
    uid = str(user["id"]).lower()
    predicate = compile_filter(kinds.CHAT, request.args["$filter"]) if "$filter" in request.args else None
    by_preview = (request.args.get("$orderby") or "").replace(" ", "").lower() == "lastmessagepreview/createddatetimedesc"

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        mine = [c for c in _live(model.chat_col(ts))
                if uid in {u.lower() for u in kinds.chat_member_ids(ts, str(c["id"]))}
                and (predicate is None or predicate(c))]
        views = [_chat_view(ts, c) for c in mine]
        if by_preview:
            views.sort(key=lambda v: str((v.get("lastMessagePreview") or {}).get("createdDateTime") or ""), reverse=True)
        return views
    return paged(state, kinds.CHAT, build, context=f"users('{user_key}')/chats", default=MAX_TOP, maximum=MAX_TOP,
                 final=True)


@bp.get("/users/<user_key>/chats/<chat_id>")
def user_chat(user_key: str, chat_id: str) -> Response:
    _, ts = _tenant(kinds.CHAT_READ_BASIC)
    _, found = _user_chat(ts, user_key, chat_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#users('{user_key}')/chats/$entity",
                          **_chat_view(ts, found)})


@bp.get("/users/<user_key>/chats/<chat_id>/messages")
def user_chat_messages(user_key: str, chat_id: str) -> Response:
    _, ts = _tenant(kinds.CHAT_MESSAGE_READ)
    _, found = _user_chat(ts, user_key, chat_id)
    return _list_chat_messages(ts, model.chat_messages_col(ts, str(found["id"])),
                               f"users('{user_key}')/chats('{chat_id}')/messages")


@bp.get("/users/<user_key>/chats/getAllMessages")
def user_all_chat_messages(user_key: str) -> Response:
    """Every message of the user's 1:1, group and meeting chats (https://learn.microsoft.com/graph/api/chats-getallmessages)."""
    state = emulator_state()
    ctx, ts = _tenant(frozenset({"Chat.Read.All", "Chat.ReadWrite.All"}))
    reject_options({"$top", "$filter", "$skiptoken", "$count", "$select"})
    metering.check_model(request.args.get("model"))
    user = model.user_or_404(ts, user_key)
    clauses = date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt"),
                                                                  ("lastModifiedDateTime", "lt")})
    col = ts.collection(kinds.USER_CHAT_MESSAGES, {"user": str(user["id"]).lower()})
    return _metered(ctx, paged(state, kinds.USER_CHAT_MESSAGES,
                               lambda o: [m for m in _live(col) if matches(m, o.get("clauses", []))],
                               context="Collection(chatMessage)", default=MAX_TOP, maximum=MAX_TOP,
                               options={"clauses": clauses}, count=True))
