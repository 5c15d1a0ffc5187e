"""Graph's Teams paths for teams and channels, the blueprint every Teams view module adds its routes to, and the
helpers they share.

Reads: https://learn.microsoft.com/graph/api/teams-list (only four properties filled), .../team-get,
.../user-list-joinedteams, .../channel-list, .../team-list-allchannels, .../channel-getallmessages (metered in
evaluation mode, see :mod:`.metering`). Writes an app may make: create team (202 + ``teamsAsyncOperation``,
https://learn.microsoft.com/graph/api/team-post), update a team, create, update and delete channels
(https://learn.microsoft.com/graph/api/channel-post). Members, messages and chats: :mod:`.members`, :mod:`.messages`,
:mod:`.chats`; delta: :mod:`.delta`.
"""

from __future__ import annotations

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
from syncer.emulator.families.teams import delegated, kinds, metering, model, operations
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


def tenant(roles: frozenset[str], delegated: frozenset[str] = frozenset()) -> tuple[AppContext, TenantStore]:
    ctx = require(roles, delegated)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    operations.settle(state, ts)
    return ctx, ts


def entity(rtype: ResourceType, item: dict[str, Any], context: str, status: int = 200) -> Response:
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    rendered, = evolvable_enums([delta_mod.project(rtype, item, select)])
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity", **rendered}, status)


def live(col: Collection) -> list[dict[str, Any]]:
    return [item for _, item in col.iter_live()]


def newest_first(items: list[dict[str, Any]], prop: str = "lastModifiedDateTime") -> list[dict[str, Any]]:
    return sorted(items, key=lambda m: (str(m.get(prop)), str(m["id"])), reverse=True)


# --- teams -----------------------------------------------------------------------------------------------------


@bp.get("/teams")
def list_teams() -> Response:
    """Every team; only id, displayName, description and visibility are filled, the rest null [DOC]."""
    state = emulator_state()
    _, ts = tenant(kinds.TEAM_READ)
    reject_options({"$filter", "$select", "$top", "$skiptoken", "$count"})
    predicate = compile_filter(kinds.TEAM, request.args["$filter"]) if "$filter" in request.args else None
    filled = ("id", "displayName", "description", "visibility")

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for item in live(model.team_col(ts)):
            if predicate is None or predicate(item):
                out.append({p: (item.get(p) if p in filled else None) for p in kinds.TEAM.properties})
        return out
    return paged(state, kinds.TEAM, build, context="teams", default=100, maximum=999,
                 count=request.args.get("$count", "").lower() == "true")


@bp.post("/teams")
def create_team() -> Response:
    """202, empty body, ``Location: /teams('{id}')/operations('{op}')`` [DOC]; the team exists once the operation succeeded."""
    state = emulator_state()
    _, ts = tenant(frozenset({"Team.Create", "Directory.ReadWrite.All", "Group.ReadWrite.All"}))
    body = json_body()
    bind = body.pop("template@odata.bind", None)
    group_bind = body.pop("group@odata.bind", None)
    migration = body.pop("@microsoft.graph.teamCreationMode", None) == "migration"
    members_raw = body.pop("members", None)
    if bind is None and group_bind is None:
        raise bad("A team needs 'template@odata.bind' (or 'group@odata.bind').")
    members = members_from_body(ts, members_raw or [])
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


def members_from_body(ts: TenantStore, raw: Any) -> list[tuple[dict[str, Any], list[str]]]:
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
    _, ts = tenant(kinds.TEAM_READ)
    reject_options(set())
    uid = str(model.user_or_404(ts, user_key)["id"]).lower()
    with state.lock:
        mine = [t for t in live(model.team_col(ts))
                if any(str(m.get("userId")).lower() == uid for m in live(model.member_col(ts, team=str(t["id"]))))]
    filled = ("id", "displayName", "description", "visibility", "isArchived", "tenantId")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams", "@odata.count": len(mine),
                          "value": [{p: t.get(p) for p in filled} for t in mine]})


@bp.get("/teams/<team_id>/allChannels")
@bp.get("/teams/<team_id>/incomingChannels")
def all_channels(team_id: str) -> Response:
    """allChannels: the team's channels, shared ones included; incomingChannels: channels shared into the team from
    other teams, which the emulator does not model (always empty) (https://learn.microsoft.com/graph/api/team-list-allchannels)."""
    _, ts = tenant(kinds.CHANNEL_READ)
    reject_options({"$filter", "$select"})
    col = model.channel_col(ts, team_id)
    incoming = request.path.rstrip("/").endswith("incomingChannels")
    predicate = compile_filter(kinds.CHANNEL, request.args["$filter"]) if "$filter" in request.args else None
    values = [] if incoming else [c for c in live(col) if predicate is None or predicate(c)]
    select = delta_mod.parse_select(kinds.CHANNEL, request.args.get("$select"))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#channels", "@odata.count": len(values),
                          "value": [delta_mod.project(kinds.CHANNEL, c, select) for c in values]})


@bp.get("/teams/<team_id>")
def get_team(team_id: str) -> Response:
    _, ts = tenant(kinds.TEAM_READ)
    return entity(kinds.TEAM, model.team_or_404(ts, team_id), "teams")


@bp.patch("/teams/<team_id>")
def update_team(team_id: str) -> Response:
    state = emulator_state()
    _, ts = tenant(kinds.TEAM_WRITE)
    props = validate_props(kinds.TEAM, json_body(), creating=False)
    with state.lock:
        team = {**model.team_or_404(ts, team_id), **props}
        state.store.put(model.team_col(ts), str(team["id"]), team, change_type="updated")
    return no_content()


@bp.get("/teams/<team_id>/operations/<op_id>")
def get_operation(team_id: str, op_id: str) -> Response:
    """``teamsAsyncOperation``: notStarted, inProgress, then succeeded (https://learn.microsoft.com/graph/api/resources/teamsasyncoperation)."""
    state = emulator_state()
    _, ts = tenant(kinds.TEAM_READ | kinds.TEAM_WRITE)
    op = operations.get(state, ts, team_id, op_id)
    if op is None:
        raise not_found(f"Operation '{op_id}' not found.")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams('{team_id}')/operations/$entity", **op})


# --- channels --------------------------------------------------------------------------------------------------


@bp.route("/teams/<team_id>/channels", methods=["GET", "POST"])
def channels(team_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        ctx, ts = tenant(kinds.CHANNEL_READ, delegated.CHANNEL_READ)
        delegated.require_member(ctx, ts, team=team_id)
        reject_options({"$filter", "$select"})
        col = model.channel_col(ts, team_id)
        predicate = compile_filter(kinds.CHANNEL, request.args["$filter"]) if "$filter" in request.args else None
        values = [c for c in live(col) if predicate is None or predicate(c)]
        if ctx.delegated:  # a user sees the private and shared channels they belong to [DOC channel-list]
            values = [c for c in values if delegated.is_member(ts, str(ctx.user_id), team=team_id, channel=str(c["id"]))]
        select = delta_mod.parse_select(kinds.CHANNEL, request.args.get("$select"))
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#teams('{team_id}')/channels",
                              "@odata.count": len(values),
                              "value": [delta_mod.project(kinds.CHANNEL, c, select) for c in values]})
    _, ts = tenant(kinds.CHANNEL_WRITE)
    body = json_body()
    members = members_from_body(ts, body.pop("members", None) or [])
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
        if any(str(c["displayName"]).lower() == name.lower() for c in live(col)):
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
    return entity(kinds.CHANNEL, channel, f"teams('{team_id}')/channels", 201)


@bp.route("/teams/<team_id>/channels/<channel_id>", methods=["GET", "PATCH", "DELETE"])
def channel(team_id: str, channel_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        _, ts = tenant(kinds.CHANNEL_READ)
        return entity(kinds.CHANNEL, model.channel_or_404(ts, team_id, channel_id), f"teams('{team_id}')/channels")
    _, ts = tenant(kinds.CHANNEL_WRITE)
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
    ctx, ts = tenant(frozenset({"ChannelMessage.Read.All"}))
    reject_options({"$top", "$filter", "$skiptoken", "$count", "$select"})
    metering.check_model(request.args.get("model"))
    clauses = date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt"),
                                                                  ("lastModifiedDateTime", "lt")})
    channels = live(model.channel_col(ts, team_id))

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ch in channels:
            roots = model.roots_col(ts, team_id, str(ch["id"]))
            for root in live(roots):
                out.append(root)
                replies = ts.collections.get(f"{roots.key}/{root['id']}/replies")
                out.extend(live(replies) if replies is not None else [])
        return [m for m in out if matches(m, options.get("clauses", []))]
    return metered(ctx, paged(state, kinds.CHANNEL_MESSAGE, build, context="Collection(chatMessage)",
                               default=MAX_TOP, maximum=MAX_TOP, options={"clauses": clauses}, count=True))


def metered(ctx: AppContext, response: Response) -> Response:
    """Evaluation mode (no ``model``): each exported message counts, an empty page counts as one; 402 once the month's
    capacity is spent (see :mod:`.metering`)."""
    if request.args.get("model") is not None or response.status_code != 200:
        return response
    spent = len(orjson.loads(response.get_data())["value"]) or 1
    if not metering.use(emulator_state(), ctx.tenant_id, ctx.client_id, spent):
        raise metering.payment_required()
    return response
