"""Channel messages and replies, chat messages: reads with their paging, `$top`, `$expand` and `$orderby`/`$filter`
rules, and the writes an app token is refused (https://learn.microsoft.com/graph/api/channel-list-messages,
.../chatmessage-list-replies, .../chat-list-messages, .../chatmessage-post, .../chatmessage-softdelete)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import emulator_state, json_body, json_response, no_content
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import delegated, kinds, model
from syncer.emulator.families.teams.kinds import MAX_TOP
from syncer.emulator.families.teams.listing import (
    continuation,
    date_clauses,
    evolvable_enums,
    matches,
    paged,
    reject_options,
    require,
)
from syncer.emulator.families.teams.model import bad
from syncer.emulator.families.teams.views import (
    bp,
    entity,
    live,
    newest_first,
    tenant,
)
from syncer.emulator.identity import AppContext
from syncer.emulator.store import TenantStore

# --- channel messages ------------------------------------------------------------------------------------------


def with_replies(ts: TenantStore, roots: Collection, root: dict[str, Any]) -> dict[str, Any]:
    """``$expand=replies``: up to 1,000 inline, newest first, then ``replies@odata.nextLink``, the rest of the root's
    replies list [DOC] (``config.teams_inline_replies``)."""
    state = emulator_state()
    col = ts.collections.get(f"{roots.key}/{root['id']}/replies")
    replies = newest_first(live(col), "createdDateTime") if col is not None else []
    inline = max(1, state.config.teams_inline_replies)
    out = {**delta_mod.project(kinds.CHANNEL_MESSAGE, root, None),
           "replies": [delta_mod.project(kinds.CHANNEL_REPLY, r, None) for r in replies[:inline]]}
    if len(replies) > inline:
        team, channel = roots.parents["team"], quote(roots.parents["channel"], safe="")
        # The replies list's own paging (listing.paged), positioned after the inline ones.
        out["replies@odata.nextLink"] = continuation(
            state, f"teams/{team}/channels/{channel}/messages/{root['id']}/replies", offset=inline, size=MAX_TOP)
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
        ctx, ts = tenant(kinds.MIGRATE | kinds.CHANNEL_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.roots_col(ts, team_id, channel_id), team_id)
    ctx, ts = tenant(kinds.CHANNEL_MESSAGE_READ, delegated.CHANNEL_MESSAGE_READ)
    delegated.require_member(ctx, ts, team=team_id, channel=channel_id)
    reject_options({"$top", "$expand", "$skiptoken"})
    expand = request.args.get("$expand")
    if expand is not None and expand.strip().lower() != "replies":
        raise bad(f"Unsupported $expand '{expand}': only 'replies'.")
    roots = model.roots_col(ts, team_id, channel_id)

    def build(options: dict[str, Any]) -> list[dict[str, Any]]:
        items = newest_first(live(roots))
        if options.get("expand"):
            return [with_replies(ts, roots, m) for m in items]
        return items
    return paged(state, kinds.CHANNEL_MESSAGE, build, context=f"teams('{team_id}')/channels('{channel_id}')/messages",
                 default=20, maximum=MAX_TOP, options={"expand": expand is not None}, final=expand is not None)


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>", methods=["GET", "PATCH"])
def channel_message(team_id: str, channel_id: str, message_id: str) -> Response:
    state = emulator_state()
    if request.method == "PATCH":
        # Graph documents PATCH for policyViolation only (app) [DOC]; content edits are a user's (admin API).
        _, ts = tenant(frozenset({"ChannelMessage.UpdatePolicyViolation.All"}))
        col = model.roots_col(ts, team_id, channel_id)
        body = json_body()
        if set(body) - {"policyViolation"}:
            raise bad("An application may only update 'policyViolation'.")
        model.edit_message(state, ts, col, message_id, body)
        return no_content()
    ctx, ts = tenant(kinds.CHANNEL_MESSAGE_READ, delegated.CHANNEL_MESSAGE_READ)
    delegated.require_member(ctx, ts, team=team_id, channel=channel_id)
    roots = model.roots_col(ts, team_id, channel_id)
    item = model.message_or_404(roots, message_id)
    if (request.args.get("$expand") or "").lower() == "replies":
        return json_response(evolvable_enums([with_replies(ts, roots, item)])[0])
    return entity(kinds.CHANNEL_MESSAGE, item, f"teams('{team_id}')/channels('{channel_id}')/messages")


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies", methods=["GET", "POST"])
def channel_replies(team_id: str, channel_id: str, message_id: str) -> Response:
    state = emulator_state()
    if request.method == "POST":
        ctx, ts = tenant(kinds.MIGRATE | kinds.CHANNEL_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.replies_col(ts, team_id, channel_id, message_id), team_id)
    ctx, ts = tenant(kinds.CHANNEL_MESSAGE_READ, delegated.CHANNEL_MESSAGE_READ)
    delegated.require_member(ctx, ts, team=team_id, channel=channel_id)
    reject_options({"$top", "$skiptoken"})
    col = model.replies_col(ts, team_id, channel_id, message_id)
    return paged(state, kinds.CHANNEL_REPLY, lambda _o: newest_first(live(col), "createdDateTime"),
                 context=f"teams('{team_id}')/channels('{channel_id}')/messages('{message_id}')/replies",
                 default=MAX_TOP, maximum=MAX_TOP)


@bp.get("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies/<reply_id>")
def channel_reply(team_id: str, channel_id: str, message_id: str, reply_id: str) -> Response:
    ctx, ts = tenant(kinds.CHANNEL_MESSAGE_READ, delegated.CHANNEL_MESSAGE_READ)
    delegated.require_member(ctx, ts, team=team_id, channel=channel_id)
    col = model.replies_col(ts, team_id, channel_id, message_id)
    return entity(kinds.CHANNEL_REPLY, model.message_or_404(col, reply_id),
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


# --- chat messages ---------------------------------------------------------------------------------------------


def list_chat_messages(ts: TenantStore, col: Collection, context: str) -> Response:
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
        items = newest_first(live(col), options["order"])
        return [m for m in items if matches(m, options["clauses"])]
    return paged(emulator_state(), kinds.CHAT_MESSAGE, build, context=context, default=MAX_TOP, maximum=MAX_TOP,
                 options={"order": order_prop, "clauses": clauses})


@bp.route("/chats/<chat_id>/messages", methods=["GET", "POST"])
def chat_messages(chat_id: str) -> Response:
    if request.method == "POST":
        ctx, ts = tenant(kinds.MIGRATE | kinds.CHAT_MESSAGE_READ)
        return _post_as_app(ctx, ts, model.chat_messages_col(ts, chat_id), None)
    ctx, ts = tenant(kinds.CHAT_MESSAGE_READ, delegated.CHAT_MESSAGE_READ)
    delegated.require_member(ctx, ts, chat=chat_id)
    return list_chat_messages(ts, model.chat_messages_col(ts, chat_id), f"chats('{chat_id}')/messages")


@bp.get("/chats/<chat_id>/messages/<message_id>")
def chat_message(chat_id: str, message_id: str) -> Response:
    ctx, ts = tenant(kinds.CHAT_MESSAGE_READ, delegated.CHAT_MESSAGE_READ)
    delegated.require_member(ctx, ts, chat=chat_id)
    col = model.chat_messages_col(ts, chat_id)
    return entity(kinds.CHAT_MESSAGE, model.message_or_404(col, message_id), f"chats('{chat_id}')/messages")
