"""What a signed-in user (a delegated token) may read and watch in Teams.

Graph's per-API permission tables name the delegated permissions of each read and subscription path
(https://learn.microsoft.com/graph/api/channel-list-messages, .../chat-list-messages, .../channel-list,
https://learn.microsoft.com/graph/teams-changenotifications-chatmessage and its siblings); personal Microsoft accounts
get none of them. Delegated permissions reach only what the user could open in Teams: the channels of the teams they
are a member of (a private channel: its own members), and their chats
(https://learn.microsoft.com/graph/permissions-overview#delegated-permissions). Outside those the answer is 403
[status UNCONFIRMED]. The user-chats delta answers a delegated token 412 "Requested API is not supported in delegated
context" (https://learn.microsoft.com/graph/api/chatmessage-delta names application permissions only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncer.emulator.api import emulator_state
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import kinds, model
from syncer.emulator.identity import AppContext

if TYPE_CHECKING:
    from syncer.emulator.store import TenantStore

# Delegated permissions per read (kept with the resource types in .kinds, which the app's consent lists read).
TEAM_READ = kinds.DELEGATED_TEAM_READ
CHANNEL_READ = kinds.DELEGATED_CHANNEL_READ
CHANNEL_MESSAGE_READ = kinds.DELEGATED_CHANNEL_MESSAGE_READ
CHAT_MESSAGE_READ = kinds.DELEGATED_CHAT_MESSAGE_READ


def forbidden() -> GraphHTTPError:
    """The refusal of a read by a non-member (``teams_not_member_status``)."""
    return GraphHTTPError(emulator_state().config.teams_not_member_status, "Forbidden",
                          "Forbidden: the signed-in user is not a member of this team, channel or chat.")


def is_member(ts: TenantStore, user_id: str, *, team: str | None = None, channel: str | None = None,
              chat: str | None = None) -> bool:
    """Whether *user_id* belongs to the team (and, for a private or shared *channel*, to the channel) or the chat."""
    uid = user_id.lower()

    def listed(col_owner: dict[str, str | None]) -> bool:
        col = model.member_col(ts, **col_owner)
        return any(str(m.get("userId", "")).lower() == uid for _, m in col.iter_live())

    if chat is not None:
        return listed({"chat": chat})
    assert team is not None
    if not listed({"team": team}):
        return False
    if channel is not None and model.channel_or_404(ts, team, channel).get("membershipType") != "standard":
        return listed({"team": team, "channel": channel})
    return True


def require_member(ctx: AppContext, ts: TenantStore, *, team: str | None = None, channel: str | None = None,
                   chat: str | None = None) -> None:
    """403 when a signed-in user reads a team, channel or chat they are not a member of (apps read every one)."""
    if ctx.delegated and not is_member(ts, str(ctx.user_id), team=team, channel=channel, chat=chat):
        raise forbidden()


def refuse_delegated(ctx: AppContext) -> None:
    """412 for an application-only API called with a user's token [OBS wording]."""
    if ctx.delegated:
        raise GraphHTTPError(412, "PreconditionFailed", "Requested API is not supported in delegated context")
