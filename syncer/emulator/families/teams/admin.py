"""Admin API: post, edit and soft-delete messages as a given user, with exactly the effects of that user's own call
(change log, delta, notifications, rich payloads), for seeding and for app-only tests.

    POST   /_emulator/teams/{team}/channels/{channel}/messages                  {"from": "<user id or UPN>", "body": {...}}
    POST   /_emulator/teams/{team}/channels/{channel}/messages/{id}/replies
    PATCH  /_emulator/teams/{team}/channels/{channel}/messages/{id}[/replies/{r}]   {"body": {...}, ...}
    DELETE /_emulator/teams/{team}/channels/{channel}/messages/{id}[/replies/{r}]   soft delete
    POST   /_emulator/teams/{team}/channels/{channel}/messages/{id}[/replies/{r}]/undoSoftDelete
    POST|PATCH|DELETE /_emulator/chats/{chat}/messages[/{id}] and POST .../{id}/undoSoftDelete

``?tenantId=`` picks another tenant than the default. POST answers 201 with the chatMessage, PATCH 200 with it, DELETE 204.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from syncer.emulator.api import emulator_state, json_body, json_response, no_content
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import model, operations
from syncer.emulator.store import TenantStore

bp = Blueprint("teams_admin", __name__, url_prefix="/_emulator")


def _tenant() -> TenantStore:
    state = emulator_state()
    tenant_id = request.args.get("tenantId", state.config.tenant_id)
    if tenant_id not in state.tenants:
        raise GraphHTTPError(404, "ResourceNotFound", f"Unknown tenant '{tenant_id}'.")
    ts = state.store.tenant(tenant_id)
    operations.settle(state, ts)  # a team whose creation finished exists for the admin API too
    return ts


def _post(col: Collection, ts: TenantStore) -> Response:
    body = json_body()
    sender = body.pop("from", None)
    if isinstance(sender, dict):
        sender = ((sender.get("user") or {}).get("id"))
    if not isinstance(sender, str) or not sender:
        raise model.bad("'from' (a user id or UPN) is required.")
    user = model.user_or_404(ts, sender)
    unknown = set(body) - {"body", "subject", "summary", "importance", "attachments", "mentions", "@odata.type"}
    if unknown:
        raise model.bad(f"The property '{sorted(unknown)[0]}' cannot be set on a new chatMessage.")
    return json_response(model.post_message(emulator_state(), ts, col, body, user), 201)


def _change(col: Collection, ts: TenantStore, message_id: str, action: str | None) -> Response:
    state = emulator_state()
    if action is not None:
        if action not in ("undoSoftDelete", "softDelete"):
            raise model.bad(f"Unknown action '{action}'.")
        model.soft_delete(state, ts, col, message_id, undo=action == "undoSoftDelete")
        return no_content()
    if request.method == "DELETE":
        model.soft_delete(state, ts, col, message_id)
        return no_content()
    changes: dict[str, Any] = json_body()
    changes.pop("from", None)  # the editor is the author; accepted for symmetry with POST
    return json_response(model.edit_message(state, ts, col, message_id, changes))


@bp.post("/teams/<team_id>/channels/<channel_id>/messages")
def post_root(team_id: str, channel_id: str) -> Response:
    ts = _tenant()
    return _post(model.roots_col(ts, team_id, channel_id), ts)


@bp.post("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies")
def post_reply(team_id: str, channel_id: str, message_id: str) -> Response:
    ts = _tenant()
    return _post(model.replies_col(ts, team_id, channel_id, message_id), ts)


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>", methods=["PATCH", "DELETE"])
@bp.post("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/<action>")
def change_root(team_id: str, channel_id: str, message_id: str, action: str | None = None) -> Response:
    ts = _tenant()
    return _change(model.roots_col(ts, team_id, channel_id), ts, message_id, action)


@bp.route("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies/<reply_id>",
          methods=["PATCH", "DELETE"])
@bp.post("/teams/<team_id>/channels/<channel_id>/messages/<message_id>/replies/<reply_id>/<action>")
def change_reply(team_id: str, channel_id: str, message_id: str, reply_id: str, action: str | None = None) -> Response:
    ts = _tenant()
    return _change(model.replies_col(ts, team_id, channel_id, message_id), ts, reply_id, action)


@bp.post("/chats/<chat_id>/messages")
def post_chat(chat_id: str) -> Response:
    ts = _tenant()
    return _post(model.chat_messages_col(ts, chat_id), ts)


@bp.route("/chats/<chat_id>/messages/<message_id>", methods=["PATCH", "DELETE"])
@bp.post("/chats/<chat_id>/messages/<message_id>/<action>")
def change_chat(chat_id: str, message_id: str, action: str | None = None) -> Response:
    ts = _tenant()
    return _change(model.chat_messages_col(ts, chat_id), ts, message_id, action)
