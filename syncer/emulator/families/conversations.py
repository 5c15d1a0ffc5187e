"""Microsoft 365 group conversations: ``/groups/{id}/conversations``, their threads and posts.

A conversation holds threads, a thread holds posts (https://learn.microsoft.com/graph/api/resources/conversation,
https://learn.microsoft.com/graph/api/resources/conversationthread, https://learn.microsoft.com/graph/api/resources/post).
Only Microsoft 365 (``Unified``) groups have them. Read: Group-Conversation.Read.All (or ReadWrite.All, Group.Read.All,
Group.ReadWrite.All), application or delegated, never personal accounts
(https://learn.microsoft.com/graph/api/group-list-conversations). Write with Graph's API: ``POST
/groups/{id}/conversations`` (a topic and a first thread with its post), ``POST /groups/{id}/threads``, ``POST
.../threads/{id}/reply`` (202), ``DELETE /groups/{id}/conversations/{id}``; tests seed with ``POST
/_emulator/groups/{id}/conversations`` and ``POST /_emulator/groups/{id}/threads/{id}/reply`` (a sender given).

Subscriptions on ``groups/{id}/conversations`` (https://learn.microsoft.com/graph/change-notifications-overview):
**delegated only** (Group.Read.All), no personal accounts, 4,230 minutes, one per group. Graph documents neither the
change types nor the notification ``resource`` [UNCONFIRMED]: the emulator sends ``created`` (a new conversation),
``updated`` (a reply, a new post) and ``deleted``, naming ``Groups/{group}/Conversations/{id}``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, emulator_state, json_body, json_response, no_content
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import groups_of
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.families.teams.listing import paged, reject_options
from syncer.emulator.identity import AppContext, current_app_context
from syncer.emulator.resources import Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("conversations", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("conversations_admin", __name__, url_prefix="/_emulator")

READ = frozenset({"Group-Conversation.Read.All", "Group-Conversation.ReadWrite.All", "Group.Read.All",
                  "Group.ReadWrite.All"})
WRITE = frozenset({"Group-Conversation.ReadWrite.All", "Group.ReadWrite.All"})
#: What a delegated subscription needs (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions).
SUBSCRIBE = frozenset({"Group.Read.All", "Group.ReadWrite.All"})


def _kind(name: str, collection: str, properties: tuple[str, ...], **extra: Any) -> ResourceType:
    return ResourceType(
        name=name, odata_type=f"#microsoft.graph.{name}", notification_type=f"#Microsoft.Graph.{name[0].upper()}{name[1:]}",
        collection=collection, family="conversations", read_roles=READ, write_roles=WRITE, properties=properties,
        delegated_read=READ, delegated_write=WRITE, index_by_id=False, **extra)


CONVERSATION = _kind("conversation", "groups/{group}/conversations",
                     ("id", "topic", "hasAttachments", "lastDeliveredDateTime", "uniqueSenders", "preview"),
                     notification_resource="Groups/{group}/Conversations/{id}")
THREAD = _kind("conversationThread", "groups/{group}/threads",
               ("id", "topic", "toRecipients", "ccRecipients", "hasAttachments", "lastDeliveredDateTime",
                "uniqueSenders", "preview", "isLocked"),
               # the conversation a thread belongs to: kept, never rendered (Graph has no such property)
               write_only=frozenset({"conversationId"}))
POST = _kind("post", "groups/{group}/threads/{thread}/posts",
             ("id", "body", "receivedDateTime", "hasAttachments", "from", "sender", "conversationThreadId",
              "conversationId", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "newParticipants"))


def _forbidden() -> GraphHTTPError:
    return GraphHTTPError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def _not_found(what: str, item_id: str) -> GraphHTTPError:
    return GraphHTTPError(404, "ErrorItemNotFound", f"The {what} '{item_id}' was not found.")


def _require(*, write: bool = False) -> AppContext:
    ctx = current_app_context()
    wanted = WRITE if write else READ
    held = ctx.scopes if ctx.delegated else ctx.roles
    if ctx.personal or not held & wanted:
        raise _forbidden()
    return ctx


def unified_group(state: EmulatorState, ts: TenantStore, group_id: str) -> str:
    """The group's id if it is a Microsoft 365 group; 404 otherwise (security groups have no conversations [UNCONFIRMED status])."""
    with state.lock:
        group = groups_of(ts).get(group_id.lower())
    if group is None:
        raise GraphHTTPError(404, "Request_ResourceNotFound", f"Resource '{group_id}' does not exist or one of its "
                             "queried reference-property objects are not present.")
    if "Unified" not in (group.get("groupTypes") or []):
        raise _not_found("group mailbox of", group_id)
    return str(group["id"])


def conversations_of(ts: TenantStore, gid: str) -> Collection:
    """One group's conversations."""
    return ts.collection(CONVERSATION, {"group": gid})


def threads_of(ts: TenantStore, gid: str) -> Collection:
    """One group's threads (each knows its conversation)."""
    return ts.collection(THREAD, {"group": gid})


def posts_of(ts: TenantStore, gid: str, tid: str) -> Collection:
    """One thread's posts."""
    return ts.collection(POST, {"group": gid, "thread": tid})


def _recipient(state: EmulatorState, ts: TenantStore, sender: str | None) -> dict[str, Any] | None:
    if sender is None:
        return None
    with state.lock:
        user = find_user(ts, sender)
    if user is None:
        raise GraphHTTPError(400, "ErrorInvalidRecipients", f"Unknown sender '{sender}'.")
    address = user.get("mail") or user.get("userPrincipalName")
    return {"emailAddress": {"name": user.get("displayName"), "address": address}}


def _content(post: Any) -> tuple[str, str]:
    if not isinstance(post, dict):
        raise GraphHTTPError(400, "ErrorInvalidRequest", "A post must be a JSON object.")
    body = post.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("content"), str):
        raise GraphHTTPError(400, "ErrorInvalidRequest", "A post needs body.content.")
    return str(body.get("contentType") or "html"), str(body["content"])


def _add_post(state: EmulatorState, ts: TenantStore, gid: str, conversation: dict[str, Any], thread: dict[str, Any],
              post: Any, sender: dict[str, Any] | None) -> dict[str, Any]:
    """Store one post and refresh its thread and conversation (caller holds the lock; nothing notified)."""
    content_type, content = _content(post)
    now = state.store.now_iso()
    pid = state.store.new_outlook_id()
    item = {"id": pid, "body": {"contentType": content_type, "content": content}, "receivedDateTime": now,
            "hasAttachments": False, "from": sender, "sender": sender, "conversationThreadId": thread["id"],
            "conversationId": conversation["id"], "createdDateTime": now, "lastModifiedDateTime": now,
            "changeKey": state.store.new_change_key(), "categories": [], "newParticipants": []}
    state.store.put(posts_of(ts, gid, thread["id"]), pid, item, change_type="created", notify=False)
    preview = content[:255]
    senders = [s for s in [sender and sender["emailAddress"]["name"]] if s]
    for record, col in ((thread, threads_of(ts, gid)), (conversation, conversations_of(ts, gid))):
        record.update({"lastDeliveredDateTime": now, "preview": preview,
                       "uniqueSenders": list(dict.fromkeys([*record.get("uniqueSenders", []), *senders]))})
        state.store.put(col, record["id"], dict(record), change_type="updated", notify=False)
    return item


def start_conversation(state: EmulatorState, ts: TenantStore, gid: str, topic: str, posts: list[Any],
                       sender: dict[str, Any] | None) -> dict[str, Any]:
    """A new conversation with one thread and its posts (``created``)."""
    if not topic.strip():
        raise GraphHTTPError(400, "ErrorInvalidRequest", "A conversation needs a topic.")
    if not posts:
        raise GraphHTTPError(400, "ErrorInvalidRequest", "A new conversation needs a thread with at least one post.")
    with state.lock:
        cid, tid = state.store.new_outlook_id(), state.store.new_outlook_id()
        conversation: dict[str, Any] = {"id": cid, "topic": topic, "hasAttachments": False,
                                        "lastDeliveredDateTime": None, "uniqueSenders": [], "preview": ""}
        thread: dict[str, Any] = {"id": tid, "topic": topic, "toRecipients": [], "ccRecipients": [],
                                  "hasAttachments": False, "lastDeliveredDateTime": None, "uniqueSenders": [],
                                  "preview": "", "isLocked": False, "conversationId": cid}
        for post in posts:
            _add_post(state, ts, gid, conversation, thread, post, sender)
        col = conversations_of(ts, gid)
        event = state.store.event_for(col, cid, "created", conversation)
    state.store.notify([event])
    return {**conversation, "threads": [{k: v for k, v in thread.items() if k != "conversationId"}]}


def reply(state: EmulatorState, ts: TenantStore, gid: str, tid: str, post: Any, sender: dict[str, Any] | None,
          conversation_id: str | None = None) -> dict[str, Any]:
    """A reply to a thread: a new post; the conversation changes (``updated``)."""
    with state.lock:
        thread = threads_of(ts, gid).get(tid)
        if thread is None or (conversation_id is not None and thread["conversationId"] != conversation_id):
            raise _not_found("thread", tid)
        if thread.get("isLocked"):
            raise GraphHTTPError(403, "ErrorAccessDenied", "The thread is locked.")
        col = conversations_of(ts, gid)
        conversation = dict(col.get(thread["conversationId"]) or {})
        item = _add_post(state, ts, gid, conversation, dict(thread), post, sender)
        event = state.store.event_for(col, conversation["id"], "updated", conversation)
    state.store.notify([event])
    return item


def delete_conversation(state: EmulatorState, ts: TenantStore, gid: str, cid: str) -> None:
    """Remove a conversation with its threads and posts (``deleted``)."""
    with state.lock:
        col = conversations_of(ts, gid)
        if col.get(cid) is None:
            raise _not_found("conversation", cid)
        threads = threads_of(ts, gid)
        for tid, thread in list(threads.iter_live()):
            if thread["conversationId"] == cid:
                posts = posts_of(ts, gid, tid)
                for pid, _ in list(posts.iter_live()):
                    state.store.remove(posts, pid, reason="deleted", notify=False)
                state.store.remove(threads, tid, reason="deleted", notify=False)
    state.store.remove(col, cid, reason="deleted")


def _sender(ctx: AppContext, state: EmulatorState, ts: TenantStore) -> dict[str, Any] | None:
    return _recipient(state, ts, ctx.user_id) if ctx.delegated else None


# --- Graph's views -----------------------------------------------------------------------------------------------

def _tenant(ctx: AppContext) -> tuple[EmulatorState, TenantStore]:
    state = emulator_state()
    return state, state.store.tenant(ctx.tenant_id)


def _list(rtype: ResourceType, col: Collection, context: str, keep: Any = None) -> Response:
    state = emulator_state()
    reject_options({"$top", "$select", "$skiptoken"})

    def build(_options: dict[str, Any]) -> list[dict[str, Any]]:
        items = [dict(v) for _, v in col.iter_live() if keep is None or keep(v)]
        # newest delivery first [UNCONFIRMED order]
        return sorted(items, key=lambda v: (str(v.get("lastDeliveredDateTime") or v.get("receivedDateTime") or ""),
                                            v["id"]), reverse=rtype is not POST)

    return paged(state, rtype, build, context=context, default=state.config.conversation_page_size,
                 maximum=state.config.conversation_max_page_size)


def _entity(rtype: ResourceType, item: dict[str, Any] | None, item_id: str, context: str, what: str) -> Response:
    if item is None:
        raise _not_found(what, item_id)
    reject_options({"$select"})
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                          **delta_mod.project(rtype, item, select)})


@bp.get("/groups/<group_id>/conversations")
def list_conversations(group_id: str) -> Response:
    """GET /groups/{id}/conversations."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    return _list(CONVERSATION, conversations_of(ts, gid), f"groups('{gid}')/conversations")


@bp.get("/groups/<group_id>/conversations/<cid>")
def get_conversation(group_id: str, cid: str) -> Response:
    """GET /groups/{id}/conversations/{id}."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    with state.lock:
        item = conversations_of(ts, gid).get(cid)
    return _entity(CONVERSATION, item, cid, f"groups('{gid}')/conversations", "conversation")


@bp.post("/groups/<group_id>/conversations")
def create_conversation(group_id: str) -> Response:
    """POST /groups/{id}/conversations ``{"topic", "threads": [{"posts": [{"body": ...}]}]}`` -> 201."""
    ctx = _require(write=True)
    state, ts = _tenant(ctx)
    gid = unified_group(state, ts, group_id)
    body = json_body()
    threads = body.get("threads")
    if not isinstance(threads, list) or len(threads) != 1 or not isinstance(threads[0], dict):
        raise GraphHTTPError(400, "ErrorInvalidRequest", "A new conversation takes exactly one thread.")
    made = start_conversation(state, ts, gid, str(body.get("topic") or ""), list(threads[0].get("posts") or []),
                              _sender(ctx, state, ts))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#groups('{gid}')/conversations/$entity",
                          **made}, 201)


@bp.delete("/groups/<group_id>/conversations/<cid>")
def remove_conversation(group_id: str, cid: str) -> Response:
    """DELETE /groups/{id}/conversations/{id} -> 204."""
    state, ts = _tenant(_require(write=True))
    delete_conversation(state, ts, unified_group(state, ts, group_id), cid)
    return no_content()


@bp.post("/groups/<group_id>/threads")
def create_thread(group_id: str) -> Response:
    """POST /groups/{id}/threads ``{"topic", "posts": [...]}``: a thread in a new conversation -> 201."""
    ctx = _require(write=True)
    state, ts = _tenant(ctx)
    gid = unified_group(state, ts, group_id)
    body = json_body()
    made = start_conversation(state, ts, gid, str(body.get("topic") or ""), list(body.get("posts") or []),
                              _sender(ctx, state, ts))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#groups('{gid}')/threads/$entity",
                          **made["threads"][0]}, 201)


@bp.get("/groups/<group_id>/threads")
@bp.get("/groups/<group_id>/conversations/<cid>/threads")
def list_threads(group_id: str, cid: str | None = None) -> Response:
    """GET /groups/{id}/threads, /groups/{id}/conversations/{id}/threads."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    if cid is not None and conversations_of(ts, gid).get(cid) is None:
        raise _not_found("conversation", cid)
    keep = (lambda t: t["conversationId"] == cid) if cid is not None else None
    return _list(THREAD, threads_of(ts, gid), f"groups('{gid}')/threads", keep)


def _thread(ts: TenantStore, gid: str, tid: str, cid: str | None) -> dict[str, Any] | None:
    thread = threads_of(ts, gid).get(tid)
    return None if thread is None or (cid is not None and thread["conversationId"] != cid) else thread


@bp.get("/groups/<group_id>/threads/<tid>")
@bp.get("/groups/<group_id>/conversations/<cid>/threads/<tid>")
def get_thread(group_id: str, tid: str, cid: str | None = None) -> Response:
    """GET a thread."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    with state.lock:
        item = _thread(ts, gid, tid, cid)
    return _entity(THREAD, item, tid, f"groups('{gid}')/threads", "thread")


@bp.get("/groups/<group_id>/threads/<tid>/posts")
@bp.get("/groups/<group_id>/conversations/<cid>/threads/<tid>/posts")
def list_posts(group_id: str, tid: str, cid: str | None = None) -> Response:
    """GET a thread's posts, oldest first."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    if _thread(ts, gid, tid, cid) is None:
        raise _not_found("thread", tid)
    return _list(POST, posts_of(ts, gid, tid), f"groups('{gid}')/threads('{tid}')/posts")


@bp.get("/groups/<group_id>/threads/<tid>/posts/<pid>")
@bp.get("/groups/<group_id>/conversations/<cid>/threads/<tid>/posts/<pid>")
def get_post(group_id: str, tid: str, pid: str, cid: str | None = None) -> Response:
    """GET one post."""
    state, ts = _tenant(_require())
    gid = unified_group(state, ts, group_id)
    with state.lock:
        item = posts_of(ts, gid, tid).get(pid) if _thread(ts, gid, tid, cid) is not None else None
    return _entity(POST, item, pid, f"groups('{gid}')/threads('{tid}')/posts", "post")


@bp.post("/groups/<group_id>/threads/<tid>/reply")
@bp.post("/groups/<group_id>/conversations/<cid>/threads/<tid>/reply")
def post_reply(group_id: str, tid: str, cid: str | None = None) -> Response:
    """POST .../threads/{id}/reply ``{"post": {"body": ...}}`` -> 202, no body."""
    ctx = _require(write=True)
    state, ts = _tenant(ctx)
    gid = unified_group(state, ts, group_id)
    reply(state, ts, gid, tid, json_body().get("post"), _sender(ctx, state, ts), cid)
    return Response(status=202)


# --- admin API (seeding as a user) ---------------------------------------------------------------------------

def _admin_tenant(body: dict[str, Any]) -> tuple[EmulatorState, TenantStore]:
    state = emulator_state()
    return state, state.store.tenant(str(body.get("tenantId") or state.config.tenant_id))


@admin_bp.post("/groups/<group_id>/conversations")
def admin_start(group_id: str) -> Response:
    """``{"topic", "from": user id or UPN, "content", "tenantId"?}`` -> the conversation with its thread (notified)."""
    body = json_body()
    state, ts = _admin_tenant(body)
    gid = unified_group(state, ts, group_id)
    sender = _recipient(state, ts, body.get("from"))
    post = {"body": {"contentType": "html", "content": str(body.get("content") or "")}}
    return json_response(start_conversation(state, ts, gid, str(body.get("topic") or ""), [post], sender), 201)


@admin_bp.post("/groups/<group_id>/threads/<tid>/reply")
def admin_reply(group_id: str, tid: str) -> Response:
    """``{"from", "content", "tenantId"?}`` -> the new post (notified as the conversation's ``updated``)."""
    body = json_body()
    state, ts = _admin_tenant(body)
    gid = unified_group(state, ts, group_id)
    post = {"body": {"contentType": "html", "content": str(body.get("content") or "")}}
    return json_response(reply(state, ts, gid, tid, post, _recipient(state, ts, body.get("from"))), 201)


# --- subscriptions -------------------------------------------------------------------------------------------

def admit_conversations(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                        body: dict[str, Any]) -> ParsedResource:
    """A signed-in user with Group.Read.All, a Microsoft 365 group, one subscription per group."""
    ctx = current_app_context()
    if not ctx.delegated or ctx.personal or not ctx.scopes & SUBSCRIBE:
        raise GraphHTTPError(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                             "group conversation subscriptions need the delegated permission Group.Read.All]")
    try:
        gid = unified_group(state, ts, parsed.ids[0])
    except GraphHTTPError as exc:
        raise GraphHTTPError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; Reason: "
                             f"{exc.message}]") from None
    key = f"groups/{gid}/conversations".lower()
    if any(s.tenant_id == ts.tenant_id and s.parsed.key == key for s in state.subscriptions.all()):
        status = state.config.conversation_subscription_per_group_status
        raise GraphHTTPError(status, "ExtensionError", f"Operation: Create; Exception: [Status Code: {status}; Reason: "
                             "the group already has a conversation subscription]")
    return dataclasses.replace(parsed, key=key)


SUBSCRIBABLE_CONVERSATIONS = SubscribableResource(
    resource_type="conversation",
    shapes=(("groups", "*", "conversations"),),
    change_types=frozenset({"created", "updated", "deleted"}),
    max_minutes=4_230,
    max_minutes_rich=None,
    permissions=(),  # delegated only: an app-only token matches none
    rich_refusal="Rich notifications are not supported for group conversations.",
    quota="none",
    admit=admit_conversations,
)

FAMILY = Family(
    name="conversations",
    resource_types=(CONVERSATION, THREAD, POST),
    blueprints=(bp, admin_bp),
    subscribable=(SUBSCRIBABLE_CONVERSATIONS,),
)
