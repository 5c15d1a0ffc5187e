"""Delta for Teams messages, on the shared delta machinery (:func:`syncer.emulator.delta.run_delta`).

* ``GET /teams/{t}/channels/{c}/messages/delta`` (https://learn.microsoft.com/graph/api/chatmessage-delta): roots only,
  messages created in the last 8 months, ``$top`` <= 50, ``$filter=lastModifiedDateTime gt <ts>`` only,
  ``$expand=replies``; the first call's options are frozen into the links. A reply is not a change of its root unless
  ``config.teams_reply_resurfaces_root`` [UNCONFIRMED]; a soft-deleted root comes back with ``deletedDateTime`` set
  (no ``@removed``) [UNCONFIRMED].
* ``GET /users/{id|upn}/chats/getAllMessages/delta``: every message of the user's chats, same options.

Token lifetime and 410s are the shared ones (``outlook_delta_token_lifetime_s``, ``POST /_emulator/delta/expire``,
``deltaReset`` faults) [UNCONFIRMED for Teams].
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import orjson
from flask import Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import emulator_state
from syncer.emulator.changelog import Collection
from syncer.emulator.clock import parse_iso
from syncer.emulator.delta_token import decode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import delegated, kinds, model, operations
from syncer.emulator.families.teams.kinds import MAX_TOP
from syncer.emulator.families.teams.listing import (
    date_clauses,
    evolvable_enums,
    page_size,
    reject_options,
    require,
)
from syncer.emulator.families.teams.messages import with_replies
from syncer.emulator.families.teams.views import bp

#: "Messages from the last eight months" [DOC]; 8 x 30 days.
WINDOW = timedelta(days=240)


def _run(col: Collection, link_path: str, *, replies: bool = False) -> Response:
    state = emulator_state()
    reject_options({"$top", "$filter", "$skiptoken", "$deltatoken", "$select", *(["$expand"] if replies else [])})
    expand = request.args.get("$expand")
    if expand is not None and expand.strip().lower() != "replies":
        raise GraphHTTPError(400, "BadRequest", f"Unsupported $expand '{expand}': only 'replies'.")
    page_size(20, MAX_TOP)  # 400 above 50; run_delta applies the size
    date_clauses(request.args.get("$filter"), allowed={("lastModifiedDateTime", "gt")})
    token = request.args.get("$skiptoken") or request.args.get("$deltatoken") or None
    cursor = decode_token(state, token) if token else None
    first_round = token is None or (cursor is not None and cursor.initial)
    horizon = state.clock.now() - WINDOW

    def recent(item: dict[str, Any]) -> bool:
        return parse_iso(str(item["createdDateTime"])) >= horizon
    # The window bounds the first round; later rounds report every change (an old message's edit included).
    response = delta_mod.run_delta(state, col, link_path=link_path, token=token, token_kind="odata",
                                   in_window=recent if first_round else None,
                                   extra_link_args="$expand=replies&" if expand is not None else "")
    if response.status_code != 200:
        return response
    body = orjson.loads(response.get_data())
    if expand is not None:
        # the links carry $expand=replies, so every page of the round (and later rounds) expands
        ts = state.store.tenant(col.tenant_id)
        with state.lock:
            for item in body["value"]:
                root = col.get(str(item["id"])) if "@removed" not in item else None
                if root is not None:
                    expanded = with_replies(ts, col, root)
                    item["replies"] = expanded["replies"]
                    if "replies@odata.nextLink" in expanded:
                        item["replies@odata.nextLink"] = expanded["replies@odata.nextLink"]
    body["value"] = evolvable_enums(body["value"])
    response.set_data(orjson.dumps(body))
    return response


@bp.get("/teams/<team_id>/channels/<channel_id>/messages/delta")
def channel_messages_delta(team_id: str, channel_id: str) -> Response:
    ctx, ts = _require_tenant(kinds.CHANNEL_MESSAGE_READ, delegated.CHANNEL_MESSAGE_READ)
    delegated.require_member(ctx, ts, team=team_id, channel=channel_id)
    col = model.roots_col(ts, team_id, channel_id)
    return _run(col, f"teams/{team_id}/channels/{quote(channel_id, safe='')}/messages/delta", replies=True)


@bp.get("/users/<user_key>/chats/getAllMessages/delta")
def user_chat_messages_delta(user_key: str) -> Response:
    ctx, ts = _require_tenant(frozenset({"Chat.Read.All", "Chat.ReadWrite.All"}), delegated.CHAT_MESSAGE_READ)
    delegated.refuse_delegated(ctx)
    user = model.user_or_404(ts, user_key)
    col = ts.collection(kinds.USER_CHAT_MESSAGES, {"user": str(user["id"]).lower()})
    return _run(col, f"users/{user_key}/chats/getAllMessages/delta")


def _require_tenant(roles: frozenset[str], scopes: frozenset[str] = frozenset()) -> tuple[Any, Any]:
    ctx = require(roles, scopes)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    operations.settle(state, ts)
    return ctx, ts
