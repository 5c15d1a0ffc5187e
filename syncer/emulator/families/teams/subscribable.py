"""Which Teams paths accept subscriptions, and the rules Graph adds for them.

Paths, change types and application permissions: https://learn.microsoft.com/graph/teams-changenotifications-chatmessage,
...-chat, ...-team-and-channel, ...-teammembership, ...-chatmembership, ...-channelmembership. Shared rules
(https://learn.microsoft.com/graph/api/subscription-post-subscriptions, https://learn.microsoft.com/graph/teams-licenses):

* at most 4,320 minutes, rich notifications included (the certificate pair is the shared check);
* ``lifecycleNotificationUrl`` is required when ``expirationDateTime`` is more than 1 hour away (400 [status UNCONFIRMED]);
* quotas: one pool of 10,000 Teams subscriptions per tenant (403), one subscription per app on one chat/channel/team
  path (403 [UNCONFIRMED: 403 or 409]), 10 per user on the per-user paths (403);
* ``model=A|B`` in the resource on the tenant-wide paths, ``B`` only on per-user and app-catalog paths; no model =
  evaluation mode (no cap by default: Teams APIs are no longer metered since 2025-08-25 [DOC]; see :mod:`.metering`).

Subscriptions on app-catalog paths are accepted but hear nothing: the emulator has no app installations.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.teams import delegated, kinds, metering, operations
from syncer.emulator.subscription_model import (
    ALL_CHANGE_TYPES,
    SubscribableResource,
    Subscription,
    SubscriptionDraft,
)

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import ChangeEvent, TenantStore

_MENTION = re.compile(r"^\s*mentions/any\(\s*(\w+)\s*:\s*\1/mentioned/user/id\s+eq\s+'([^']+)'\s*\)\s*$", re.IGNORECASE)

_LIFECYCLE = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
_CU = frozenset({"created", "updated"})
_CD = frozenset({"created", "deleted"})
LIFECYCLE_URL_MESSAGE = ("lifecycleNotificationUrl is a required property for subscription creation on this resource "
                         "when the expirationDateTime value is set to greater than 1 hour")

#: Per-path rules the shared record has no field for: allowed `model` values and the quota scope.
_MODELS: dict[tuple[str, ...], frozenset[str]] = {}
_PER_RESOURCE: set[tuple[str, ...]] = set()
_PER_USER: set[tuple[str, ...]] = set()


def _no_provision(state: EmulatorState, ts: TenantStore, user_id: str) -> None:
    """Per-user paths: the shared resolver checks the user and names it by id; nothing to create."""


def _mentioned(query: dict[str, str]) -> str | None:
    """The user id of a ``$filter=mentions/any(u: u/mentioned/user/id eq '<id>')`` option, or None; 400 on another filter."""
    text = query.get("$filter")
    if text is None:
        return None
    m = _MENTION.match(text)
    if m is None:
        raise GraphHTTPError(400, "InvalidRequest", f"Unsupported $filter '{text}': only mentions/any(u: u/mentioned/user/id eq '<id>').")
    return m.group(2).lower()


def narrow(state: EmulatorState, subscription: Subscription, event: ChangeEvent) -> bool:
    """``$search`` (text in the body) and the mention ``$filter`` of a message subscription (a message without content
    left, hard-deleted, still reaches it); then the evaluation-mode cap of a path that takes ``model`` but has none."""
    if not _matches_options(subscription, event):
        return False
    if _MODELS[subscription.parsed.spec.shapes[0]] and "model" not in subscription.parsed.query:
        return metering.use(state, subscription.tenant_id, subscription.application_id, 1)
    return True


def _matches_options(subscription: Subscription, event: ChangeEvent) -> bool:
    query = subscription.parsed.query
    item: dict[str, Any] | None = event.item
    if item is None or ("$search" not in query and "$filter" not in query):
        return True
    search = query.get("$search", "").strip().strip('"').lower()
    if search and search not in str((item.get("body") or {}).get("content", "")).lower():
        return False
    mentioned = _mentioned(query)
    if mentioned is not None:
        ids = {str(((m.get("mentioned") or {}).get("user") or {}).get("id", "")).lower() for m in item.get("mentions") or []}
        return mentioned in ids
    return True


#: Delegated scopes per subscribable path (least privileged first; empty = application-only, where a delegated token
#: is refused [403 UNCONFIRMED]), from the same pages; the broader ones Graph also accepts are added by :func:`_entry`.
DELEGATED_SCOPES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("teams", "*", "channels", "*", "messages"): ("ChannelMessage.Read.All",),
    ("teams", "getallmessages"): (),
    ("chats", "*", "messages"): ("Chat.Read",),
    ("chats", "getallmessages"): (),
    ("users", "*", "chats", "getallmessages"): ("Chat.Read",),
    ("appcatalogs", "teamsapps", "*", "installedtochats", "getallmessages"): (),
    ("chats",): (),
    ("chats", "*"): ("Chat.ReadBasic",),
    ("users", "*", "chats"): ("Chat.ReadBasic",),
    ("appcatalogs", "teamsapps", "*", "installedtochats"): (),
    ("teams", "getallchannels"): (),
    ("teams", "*", "channels"): ("Channel.ReadBasic.All",),
    ("teams",): (),
    ("teams", "*"): ("Team.ReadBasic.All",),
    ("teams", "*", "members"): ("TeamMember.Read.All",),
    ("teams", "getallmembers"): (),
    ("teams", "*", "channels", "getallmembers"): ("ChannelMember.Read.All",),
    ("teams", "getallchannels", "getallmembers"): (),
    ("chats", "*", "members"): ("ChatMember.Read",),
    ("chats", "getallmembers"): (),
    ("appcatalogs", "teamsapps", "*", "installedtochats", "getallmembers"): (),
}

#: What a broader delegated permission also grants (Graph accepts the higher-privileged ones of each table).
_BROADER = {
    "ChannelMessage.Read.All": ("Group.Read.All", "Group.ReadWrite.All"),
    "Chat.Read": ("Chat.ReadWrite",),
    "Chat.ReadBasic": ("Chat.Read", "Chat.ReadWrite"),
    "Channel.ReadBasic.All": ("ChannelSettings.Read.All", "ChannelSettings.ReadWrite.All", "Group.Read.All",
                              "Group.ReadWrite.All"),
    "Team.ReadBasic.All": ("TeamSettings.Read.All", "TeamSettings.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All"),
    "TeamMember.Read.All": ("TeamMember.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All"),
    "ChannelMember.Read.All": ("ChannelMember.ReadWrite.All",),
    "ChatMember.Read": ("ChatMember.ReadWrite", "Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"),
}


def _delegated(shape: tuple[str, ...]) -> frozenset[str]:
    least = DELEGATED_SCOPES[shape]
    return frozenset(least).union(*(_BROADER.get(p, ()) for p in least))


def _entry(resource_type: str, shape: tuple[str, ...], change_types: frozenset[str], permissions: tuple[str, ...], *,
           models: str = "", quota: str = "") -> SubscribableResource:
    _MODELS[shape] = frozenset(models)
    if quota == "resource":
        _PER_RESOURCE.add(shape)
    if quota == "user":
        _PER_USER.add(shape)
    return SubscribableResource(
        resource_type=resource_type,
        shapes=(shape,),
        change_types=change_types,
        max_minutes=4_320,
        max_minutes_rich=4_320,
        permissions=permissions,
        rich_refusal="",
        quota="none",
        lifecycle_events=_LIFECYCLE,
        provision=_no_provision if shape[0] == "users" else None,
        check=check,
        # $search and the mention $filter exist on channel, chat and per-user message paths [DOC]
        deliver=narrow,
        delegated_permissions=_delegated(shape),
    )


def _pool(state: EmulatorState, draft: SubscriptionDraft) -> None:
    live = [s for s in state.subscriptions.all() if s.id != draft.existing_id and s.tenant_id == draft.tenant_id
            and s.parsed.spec.check is check]
    limit = state.config.teams_subscription_pool
    if len(live) >= limit:
        raise _quota(403, f"{limit} Teams subscriptions per tenant")
    shape = draft.parsed.spec.shapes[0]
    if shape in _PER_RESOURCE and any(s.application_id == draft.application_id and s.parsed.key == draft.parsed.key
                                      for s in live):
        raise _quota(state.config.teams_per_resource_status, "1 subscription per app on one chat, channel or team")
    if shape in _PER_USER:
        user = draft.parsed.key.split("/")[1]
        per_user = state.config.teams_subscriptions_per_user
        if sum(1 for s in live if s.parsed.spec.shapes[0] in _PER_USER and s.parsed.key.split("/")[1] == user) >= per_user:
            raise _quota(403, f"{per_user} subscriptions per user")


def _quota(status: int, what: str) -> GraphHTTPError:
    phrase = {403: "Forbidden", 409: "Conflict"}.get(status, str(status))
    return GraphHTTPError(status, "ExtensionError", f"Operation: Create; Exception: [Status Code: {phrase}; Reason: "
                                                    f"Maximum number of subscriptions has been reached ({what})]")


def _exists(state: EmulatorState, draft: SubscriptionDraft) -> None:
    """The team, channel or chat a path names must exist (404 otherwise)."""
    ts = state.store.tenant(draft.tenant_id)
    operations.settle(state, ts)
    shape, ids = draft.parsed.spec.shapes[0], draft.parsed.ids
    found = True
    if shape[0] == "teams" and len(shape) > 1 and shape[1] == "*":
        team = ts.collection(kinds.TEAM).get(ids[0])
        found = team is not None
        if found and len(shape) > 3 and shape[3] == "*":
            found = ts.collection(kinds.CHANNEL, {"team": ids[0]}).get(ids[1]) is not None
    elif shape[0] == "chats" and len(shape) > 1 and shape[1] == "*":
        found = ts.collection(kinds.CHAT).get(ids[0]) is not None
    if not found:
        raise GraphHTTPError(404, "ExtensionError",
                             "Operation: Create; Exception: [Status Code: NotFound; Reason: The resource was not found.]")


def _member(state: EmulatorState, draft: SubscriptionDraft) -> None:
    """A signed-in user watches only the teams, channels and chats they are a member of (see :mod:`.delegated`)."""
    if draft.user_id is None:
        return
    ts = state.store.tenant(draft.tenant_id)
    shape, ids = draft.parsed.spec.shapes[0], draft.parsed.ids
    team = ids[0] if shape[0] == "teams" and len(shape) > 1 and shape[1] == "*" else None
    channel = ids[1] if team is not None and len(shape) > 3 and shape[3] == "*" else None
    chat = ids[0] if shape[0] == "chats" and len(shape) > 1 and shape[1] == "*" else None
    if (team is not None or chat is not None) and \
            not delegated.is_member(ts, draft.user_id, team=team, channel=channel, chat=chat):
        raise GraphHTTPError(state.config.teams_not_member_status, "ExtensionError",
                             "Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                             "The signed-in user is not a member of this team, channel or chat.]")


def check(state: EmulatorState, draft: SubscriptionDraft) -> None:
    """Teams' own subscription rules (see the module docstring)."""
    config = state.config
    query = draft.parsed.query
    shape = draft.parsed.spec.shapes[0]
    model = query.get("model")
    if model is not None and model not in _MODELS[shape]:
        allowed = " or ".join(sorted(_MODELS[shape])) or "no model"
        raise GraphHTTPError(400, "InvalidRequest", f"Invalid model '{model}' for this resource: use {allowed}.")
    if shape == ("chats", "*") and "created" in draft.change_types and \
            query.get("notifyonuserspecificproperties", "").lower() != "true":
        raise GraphHTTPError(400, "InvalidRequest",
                             "'created' is supported on a single chat only with notifyOnUserSpecificProperties=true.")
    if draft.parsed.spec.resource_type == "chatMessage" and "*" in shape:
        _mentioned(query)  # 400 now for an unsupported $filter
    elif "$filter" in query or "$search" in query:
        raise GraphHTTPError(400, "InvalidRequest", "$filter and $search are supported on message paths only.")
    limit = timedelta(minutes=config.teams_lifecycle_url_after_minutes)
    if draft.lifecycle_url is None and draft.expiration > state.clock.now() + limit:
        raise GraphHTTPError(config.teams_lifecycle_url_status, "InvalidRequest", LIFECYCLE_URL_MESSAGE)
    _exists(state, draft)
    _member(state, draft)
    _pool(state, draft)


_CHANNEL_MESSAGES = ("ChannelMessage.Read.Group", "ChannelMessage.Read.All", "Group.Read.All", "Group.ReadWrite.All")
_CHAT_READ = ("Chat.Read.All", "Chat.ReadWrite.All")
_CHAT_BASIC = ("Chat.ReadBasic.All", "Chat.Read.All", "Chat.ReadWrite.All")
_CHANNEL_BASIC = ("ChannelSettings.Read.Group", "Channel.ReadBasic.All", "ChannelSettings.Read.All",
                  "ChannelSettings.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All")
_TEAM_BASIC = ("TeamSettings.Read.Group", "Team.ReadBasic.All", "TeamSettings.Read.All", "TeamSettings.ReadWrite.All",
               "Group.Read.All", "Group.ReadWrite.All")
_TEAM_MEMBERS = ("TeamMember.Read.Group", "TeamMember.Read.All", "TeamMember.ReadWrite.All")
_CHAT_MEMBERS = ("ChatMember.Read.Chat", "ChatMember.Read.All", "ChatMember.ReadWrite.All", "Chat.ReadBasic.All",
                 "Chat.Read.All", "Chat.ReadWrite.All")

#: Tenant-wide (getAll*) paths come before the `*` shapes of the same length, which would otherwise take them.
SUBSCRIBABLE: tuple[SubscribableResource, ...] = (
    _entry("chatMessage", ("teams", "getallmessages"), ALL_CHANGE_TYPES, ("ChannelMessage.Read.All",), models="AB"),
    _entry("chatMessage", ("chats", "getallmessages"), ALL_CHANGE_TYPES, _CHAT_READ, models="AB"),
    _entry("chatMessage", ("teams", "*", "channels", "*", "messages"), ALL_CHANGE_TYPES, _CHANNEL_MESSAGES,
           quota="resource"),
    _entry("chatMessage", ("chats", "*", "messages"), ALL_CHANGE_TYPES, ("ChatMessage.Read.Chat", *_CHAT_READ),
           quota="resource"),
    _entry("chatMessage", ("users", "*", "chats", "getallmessages"), ALL_CHANGE_TYPES, _CHAT_READ, models="B",
           quota="user"),
    _entry("chatMessage", ("appcatalogs", "teamsapps", "*", "installedtochats", "getallmessages"), _CU,
           ("Chat.Read.WhereInstalled",), models="B"),
    _entry("chat", ("chats",), _CU, _CHAT_BASIC),
    _entry("conversationMember", ("chats", "getallmembers"), _CD, ("ChatMember.Read.All", "ChatMember.ReadWrite.All"),
           models="AB"),
    _entry("chat", ("chats", "*"), _CU, ("ChatSettings.Read.Chat", *_CHAT_BASIC), quota="resource"),
    _entry("chat", ("users", "*", "chats"), _CU, _CHAT_BASIC, quota="user"),
    _entry("chat", ("appcatalogs", "teamsapps", "*", "installedtochats"), _CU, ("Chat.ReadBasic.WhereInstalled",),
           models="B"),
    _entry("channel", ("teams", "getallchannels"), ALL_CHANGE_TYPES, _CHANNEL_BASIC[1:]),
    _entry("conversationMember", ("teams", "getallmembers"), ALL_CHANGE_TYPES, _TEAM_MEMBERS[1:], models="AB"),
    _entry("conversationMember", ("teams", "getallchannels", "getallmembers"), ALL_CHANGE_TYPES,
           ("ChannelMember.Read.All", "ChannelMember.ReadWrite.All")),
    _entry("channel", ("teams", "*", "channels"), ALL_CHANGE_TYPES, _CHANNEL_BASIC, quota="resource"),
    _entry("team", ("teams",), ALL_CHANGE_TYPES, _TEAM_BASIC[1:]),
    _entry("team", ("teams", "*"), frozenset({"updated", "deleted"}), _TEAM_BASIC, quota="resource"),
    _entry("conversationMember", ("teams", "*", "members"), ALL_CHANGE_TYPES, _TEAM_MEMBERS, quota="resource"),
    _entry("conversationMember", ("teams", "*", "channels", "getallmembers"), ALL_CHANGE_TYPES,
           ("ChannelMember.Read.All", "ChannelMember.ReadWrite.All"), quota="resource"),
    _entry("conversationMember", ("chats", "*", "members"), _CD, _CHAT_MEMBERS, quota="resource"),
    _entry("conversationMember", ("appcatalogs", "teamsapps", "*", "installedtochats", "getallmembers"), _CU,
           ("ChatMember.Read.WhereInstalled",), models="B"),
)
