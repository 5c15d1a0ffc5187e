"""Chats: create (a second oneOnOne returns the first), get, rename, delete, and a user's chats with their messages
(https://learn.microsoft.com/graph/api/chat-post, .../chat-list, .../chats-getallmessages)."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, compile_filter, emulator_state, json_body, json_response, no_content
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import kinds, metering, model
from syncer.emulator.families.teams.kinds import MAX_TOP
from syncer.emulator.families.teams.listing import (
    date_clauses,
    matches,
    paged,
    reject_options,
    require,
)
from syncer.emulator.families.teams.members import add_member_view, list_members, remove_member_view
from syncer.emulator.families.teams.messages import list_chat_messages
from syncer.emulator.families.teams.model import bad, not_found
from syncer.emulator.families.teams.views import (
    bp,
    entity,
    live,
    members_from_body,
    metered,
    newest_first,
    tenant,
)
from syncer.emulator.store import TenantStore

# --- chats -----------------------------------------------------------------------------------------------------


@bp.route("/chats", methods=["GET", "POST"])
def chats() -> Response:
    state = emulator_state()
    if request.method == "GET":
        # GET /chats lists the signed-in user's chats: delegated only; apps use /users/{id}/chats [DOC].
        require(frozenset())
        raise GraphHTTPError(403, "Forbidden", "Requested API is not supported in application-only context")
    _, ts = tenant(kinds.CHAT_WRITE)
    body = json_body()
    chat_type = body.get("chatType")
    if chat_type not in ("oneOnOne", "group"):
        raise bad("chatType must be 'oneOnOne' or 'group'.")
    members = members_from_body(ts, body.get("members"))
    if chat_type == "oneOnOne" and len(members) != 2:
        raise bad("A oneOnOne chat has exactly two members.")
    if chat_type == "group" and len(members) < 2:
        raise bad("A group chat needs at least two members.")
    unknown = set(body) - {"chatType", "topic", "members", "@odata.type"}
    if unknown:
        raise bad(f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.chat'.")
    chat, created = model.create_chat(state, ts, chat_type=chat_type, topic=body.get("topic"), members=members)
    status = 201 if created else state.config.teams_existing_chat_status
    return entity(kinds.CHAT, chat, "chats", status)


def chat_view(ts: TenantStore, chat: dict[str, Any]) -> dict[str, Any]:
    expand = (request.args.get("$expand") or "").lower()
    out = delta_mod.project(kinds.CHAT, chat, None)
    if "members" in expand:
        out["members"] = chat.get("members", [])[:25]  # Graph expands at most 25 members [OBS]
    if "lastmessagepreview" in expand:
        col = ts.collections.get(f"chats/{chat['id']}/messages".lower())
        newest = newest_first(live(col), "createdDateTime")[:1] if col is not None else []
        out["lastMessagePreview"] = ({"id": newest[0]["id"], "createdDateTime": newest[0]["createdDateTime"],
                                      "body": newest[0]["body"], "from": newest[0]["from"],
                                      "isDeleted": bool(newest[0]["deletedDateTime"]), "messageType": "message"}
                                     if newest else None)
    return out


@bp.route("/chats/<chat_id>", methods=["GET", "PATCH", "DELETE"])
def chat(chat_id: str) -> Response:
    state = emulator_state()
    if request.method == "GET":
        _, ts = tenant(kinds.CHAT_READ_BASIC)
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#chats/$entity",
                              **chat_view(ts, model.chat_or_404(ts, chat_id))})
    if request.method == "DELETE":
        # https://learn.microsoft.com/graph/api/chat-delete: Chat.ManageDeletion.All, 204; the chat is gone for everyone.
        _, ts = tenant(kinds.CHAT_DELETE)
        found = model.chat_or_404(ts, chat_id)
        state.store.remove(model.chat_col(ts), str(found["id"]), reason="deleted")
        return no_content()
    _, ts = tenant(frozenset({"Chat.ReadWrite.All", "ChatSettings.ReadWrite.Chat"}))
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
    return entity(kinds.CHAT, updated, "chats")


@bp.route("/chats/<chat_id>/members", methods=["GET", "POST"])
def chat_members(chat_id: str) -> Response:
    if request.method == "GET":
        _, ts = tenant(kinds.CHAT_MEMBER_READ)
        return list_members(model.member_col(ts, chat=chat_id), kinds.CHAT_MEMBER, f"chats('{chat_id}')/members")
    _, ts = tenant(kinds.CHAT_MEMBER_WRITE)
    if model.chat_or_404(ts, chat_id)["chatType"] == "oneOnOne":
        raise bad("Members cannot be added to a oneOnOne chat.")
    return add_member_view(ts, model.member_col(ts, chat=chat_id), kinds.CHAT_MEMBER, f"chats('{chat_id}')/members")


@bp.route("/chats/<chat_id>/members/<membership>", methods=["GET", "DELETE"])
def chat_member(chat_id: str, membership: str) -> Response:
    if request.method == "GET":
        _, ts = tenant(kinds.CHAT_MEMBER_READ)
        item = model.member_col(ts, chat=chat_id).get(membership)
        if item is None:
            raise not_found(f"Member '{membership}' not found.")
        return entity(kinds.CHAT_MEMBER, item, f"chats('{chat_id}')/members")
    _, ts = tenant(kinds.CHAT_MEMBER_WRITE)
    remove_member_view(ts, model.member_col(ts, chat=chat_id), membership)
    return no_content()


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
    _, ts = tenant(kinds.CHAT_READ_BASIC)
    reject_options({"$top", "$expand", "$filter", "$orderby", "$skiptoken", "$select"})
    user = model.user_or_404(ts, user_key)
    uid = str(user["id"]).lower()
    predicate = compile_filter(kinds.CHAT, request.args["$filter"]) if "$filter" in request.args else None
    by_preview = (request.args.get("$orderby") or "").replace(" ", "").lower() == "lastmessagepreview/createddatetimedesc"

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        mine = [c for c in live(model.chat_col(ts))
                if uid in {u.lower() for u in kinds.chat_member_ids(ts, str(c["id"]))}
                and (predicate is None or predicate(c))]
        views = [chat_view(ts, c) for c in mine]
        if by_preview:
            views.sort(key=lambda v: str((v.get("lastMessagePreview") or {}).get("createdDateTime") or ""), reverse=True)
        return views
    return paged(state, kinds.CHAT, build, context=f"users('{user_key}')/chats", default=MAX_TOP, maximum=MAX_TOP,
                 final=True)


@bp.get("/users/<user_key>/chats/<chat_id>")
def user_chat(user_key: str, chat_id: str) -> Response:
    _, ts = tenant(kinds.CHAT_READ_BASIC)
    _, found = _user_chat(ts, user_key, chat_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#users('{user_key}')/chats/$entity",
                          **chat_view(ts, found)})


@bp.get("/users/<user_key>/chats/<chat_id>/messages")
def user_chat_messages(user_key: str, chat_id: str) -> Response:
    _, ts = tenant(kinds.CHAT_MESSAGE_READ)
    _, found = _user_chat(ts, user_key, chat_id)
    return list_chat_messages(ts, model.chat_messages_col(ts, str(found["id"])),
                               f"users('{user_key}')/chats('{chat_id}')/messages")


@bp.get("/users/<user_key>/chats/getAllMessages")
def user_all_chat_messages(user_key: str) -> Response:
    """Every message of the user's 1:1, group and meeting chats (https://learn.microsoft.com/graph/api/chats-getallmessages)."""
    state = emulator_state()
    ctx, ts = tenant(frozenset({"Chat.Read.All", "Chat.ReadWrite.All"}))
    reject_options({"$top", "$filter", "$skiptoken", "$count", "$select"})
    metering.check_model(request.args.get("model"))
    user = model.user_or_404(ts, user_key)
    clauses = date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt"),
                                                                  ("lastModifiedDateTime", "lt")})
    col = ts.collection(kinds.USER_CHAT_MESSAGES, {"user": str(user["id"]).lower()})
    return metered(ctx, paged(state, kinds.USER_CHAT_MESSAGES,
                               lambda o: [m for m in live(col) if matches(m, o.get("clauses", []))],
                               context="Collection(chatMessage)", default=MAX_TOP, maximum=MAX_TOP,
                               options={"clauses": clauses}, count=True))
