"""Team, channel and chat memberships (aadUserConversationMember): list with Graph's member filters, add (one or
in bulk), get and remove (https://learn.microsoft.com/graph/api/team-list-members, .../conversationmembers-add,
.../chat-post-members), with the system messages Teams posts for them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Response, request

from syncer.emulator.api import base_url, compile_filter, emulator_state, json_body, json_response, no_content
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import kinds, model
from syncer.emulator.families.teams.listing import (
    paged,
    reject_options,
)
from syncer.emulator.families.teams.model import bad, not_found
from syncer.emulator.families.teams.views import (
    bp,
    entity,
    live,
    members_from_body,
    tenant,
)
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

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


def list_members(col: Collection, rtype: ResourceType, context: str) -> Response:
    reject_options({"$filter", "$select", "$top", "$skiptoken"})
    predicate = _member_filter(rtype, request.args["$filter"]) if "$filter" in request.args else None
    return paged(emulator_state(), rtype, lambda _o: [m for m in live(col) if predicate is None or predicate(m)],
                 context=context, default=100, maximum=999)


def add_member_view(ts: TenantStore, col: Collection, rtype: ResourceType, context: str) -> Response:
    body = json_body()
    members = members_from_body(ts, [body])
    user, roles = members[0]
    item = model.add_member(emulator_state(), ts, col, user, roles)
    membership_event(ts, col, "membersAdded", [str(user["id"])])
    return entity(rtype, item, context, 201)


def membership_event(ts: TenantStore, col: Collection, kind: str, user_ids: list[str]) -> None:
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


def remove_member_view(ts: TenantStore, col: Collection, membership: str) -> None:
    found = col.get(membership)
    model.remove_member(emulator_state(), ts, col, membership)
    membership_event(ts, col, "membersDeleted", [str(found["userId"])] if found else [])


@bp.route("/teams/<team_id>/members", methods=["GET", "POST"])
def team_members(team_id: str) -> Response:
    if request.method == "GET":
        _, ts = tenant(kinds.TEAM_MEMBER_READ)
        return list_members(model.member_col(ts, team=team_id), kinds.TEAM_MEMBER, f"teams('{team_id}')/members")
    _, ts = tenant(kinds.TEAM_MEMBER_WRITE)
    return add_member_view(ts, model.member_col(ts, team=team_id), kinds.TEAM_MEMBER, f"teams('{team_id}')/members")


@bp.post("/teams/<team_id>/members/add")
def team_members_add(team_id: str) -> Response:
    """Bulk add with per-item results (https://learn.microsoft.com/graph/api/conversationmembers-add)."""
    state = emulator_state()
    _, ts = tenant(kinds.TEAM_MEMBER_WRITE)
    col = model.member_col(ts, team=team_id)
    values = json_body().get("values")
    if not isinstance(values, list):
        raise bad("'values' must be an array.")
    results = []
    added: list[str] = []
    for entry in values:
        try:
            (user, roles), = members_from_body(ts, [entry])
            model.add_member(state, ts, col, user, roles)
            added.append(str(user["id"]))
            results.append({"@odata.type": "#microsoft.graph.aadUserConversationMemberResult",
                            "userId": user["id"], "error": None})
        except GraphHTTPError as exc:
            results.append({"@odata.type": "#microsoft.graph.aadUserConversationMemberResult",
                            "userId": None, "error": {"code": exc.code, "message": exc.message}})
    membership_event(ts, col, "membersAdded", added)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#Collection(microsoft.graph.actionResultPart)",
                          "value": results})


@bp.route("/teams/<team_id>/members/<membership>", methods=["GET", "PATCH", "DELETE"])
def team_member(team_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = tenant(kinds.TEAM_MEMBER_READ)
        item = model.member_col(ts, team=team_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return entity(kinds.TEAM_MEMBER, item, f"teams('{team_id}')/members")
    _, ts = tenant(kinds.TEAM_MEMBER_WRITE)
    if request.method == "PATCH":
        # A member's role: 200 with the membership (https://learn.microsoft.com/graph/api/team-update-members).
        col = model.member_col(ts, team=team_id)
        found = col.get(membership)
        if found is None:
            raise not_found(f"Member '{membership}' not found.")
        body = json_body()
        roles = body.get("roles")
        if set(body) - {"@odata.type", "roles"} or not isinstance(roles, list) or any(r not in ("owner",) for r in roles):
            raise bad("Only 'roles' can be updated: [] (member) or ['owner'].")
        item = model.add_member(emulator_state(), ts, col, model.user_or_404(ts, str(found["userId"])), list(roles))
        return entity(kinds.TEAM_MEMBER, item, f"teams('{team_id}')/members")
    remove_member_view(ts, model.member_col(ts, team=team_id), membership)
    return no_content()


@bp.route("/teams/<team_id>/channels/<channel_id>/members", methods=["GET", "POST"])
def channel_members(team_id: str, channel_id: str) -> Response:
    context = f"teams('{team_id}')/channels('{channel_id}')/members"
    if request.method == "GET":
        _, ts = tenant(kinds.CHANNEL_MEMBER_READ)
        found = model.channel_or_404(ts, team_id, channel_id)
        if found["membershipType"] == "standard":
            # A standard channel's members are the team's (https://learn.microsoft.com/graph/api/channel-list-members).
            return list_members(model.member_col(ts, team=team_id), kinds.CHANNEL_MEMBER, context)
        return list_members(model.member_col(ts, team=team_id, channel=channel_id), kinds.CHANNEL_MEMBER, context)
    _, ts = tenant(kinds.CHANNEL_MEMBER_WRITE)
    if model.channel_or_404(ts, team_id, channel_id)["membershipType"] == "standard":
        raise bad("Members can only be added to private and shared channels.")
    return add_member_view(ts, model.member_col(ts, team=team_id, channel=channel_id), kinds.CHANNEL_MEMBER, context)


@bp.route("/teams/<team_id>/channels/<channel_id>/members/<membership>", methods=["GET", "DELETE"])
def channel_member(team_id: str, channel_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = tenant(kinds.CHANNEL_MEMBER_READ)
        item = model.member_col(ts, team=team_id, channel=channel_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return entity(kinds.CHANNEL_MEMBER, item, f"teams('{team_id}')/channels('{channel_id}')/members")
    _, ts = tenant(kinds.CHANNEL_MEMBER_WRITE)
    model.remove_member(emulator_state(), ts, model.member_col(ts, team=team_id, channel=channel_id), membership)
    return no_content()
