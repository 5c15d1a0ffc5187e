"""Microsoft Teams: teams (a group with the same id), channels, members, channel messages and replies, chats and
chat messages, with their subscriptions, delta and the admin API that posts as a user.

Modules: :mod:`.kinds` (resource types, ids), :mod:`.model` (every write), :mod:`.operations` (asynchronous team
creation), :mod:`.listing` (paging and query options), :mod:`.views` (teams and channels), :mod:`.members`, :mod:`.messages`,
:mod:`.chats` (Graph paths), :mod:`.metering` (legacy evaluation mode), :mod:`.delta` (channel and
per-user chat delta), :mod:`.admin` (``/_emulator/teams``, ``/_emulator/chats``), :mod:`.subscribable` (subscription
paths and Teams' subscription rules), :mod:`.seed`. Reference: docs/emulator-core.md and
https://learn.microsoft.com/graph/teams-concept-overview.
"""

from __future__ import annotations

from syncer.emulator.families.teams import (
    admin,
    chats,
    delta,
    kinds,
    members,
    messages,
    seed,
    subscribable,
    views,
)
from syncer.emulator.resources import Family

FAMILY = Family(
    name="teams",
    resource_types=kinds.RESOURCE_TYPES,
    blueprints=(views.bp, admin.bp),  # views.bp also carries the routes of .members, .messages, .chats, .delta
    subscribable=subscribable.SUBSCRIBABLE,
    # roles only some views ask for (the default app holds every role the families name)
    extra_roles=kinds.CHAT_DELETE | frozenset({"ChannelMessage.UpdatePolicyViolation.All"}),
    seeders={"teamsPerUser": seed.seed_teams, "chatsPerUser": seed.seed_chats,
             "channelMessagesPerUser": seed.seed_channel_messages, "channelRepliesPerMessage": seed.seed_channel_replies},
)

__all__ = ["FAMILY", "chats", "delta", "members", "messages"]
