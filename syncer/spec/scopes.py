"""What a subscription's sync passes cover: the users of a fan-out, a calendar window, mail folders.

Apart from :mod:`syncer.spec.subscriptions` because it is the spec's side of :mod:`syncer.worker.scopes`:
``for_each`` says which users a ``{user}`` placeholder expands to, ``window`` bounds a calendarView
delta, and ``folders`` picks the folders of a whole mailbox that get a delta scope of their own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import yaml

from syncer import resources
from syncer.resources import ResourceType
from syncer.spec.model import FanOut
from syncer.spec.reader import Map

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader

DEFAULT_WINDOW_PAST = timedelta(days=30)
DEFAULT_WINDOW_FUTURE = timedelta(days=180)


class ScopesLoader:
    """Reads ``for_each``, ``window`` and ``folders`` with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def fan_out(self, s: Map, rt: ResourceType, params: dict[str, str]) -> FanOut | None:
        """``for_each``: which users a ``{user}`` placeholder stands for, or which teams ``{team}`` does."""
        r, path, node = self.r, s.sub("for_each"), s.get("for_each")
        user = params.get("user") == "{user}"
        team = params.get("team") == "{team}"
        channel = params.get("channel") == "{channel}"
        if channel and not team:
            r.error(
                s.get("resource"),
                s.sub("resource"),
                "{channel} only with {team} (each team's channels are followed)",
                "{channel} without {team}",
                "write teams/{team}/channels/{channel}/messages with for_each: {teams: [ID]}",
            )
            return None
        if node is None:
            if user or team:
                which = "users {user}" if user else "teams {team}"
                r.error(
                    s.get("resource"),
                    s.sub("resource"),
                    f"a for_each saying which {which} stands for",
                    f"{'{user}' if user else '{team}'} without for_each",
                    "add for_each: {users: [...]} | {group: ID} | {filter: ...} | {users: all}"
                    if user
                    else "add for_each: {teams: [...]} | {teams: all}",
                )
            return None
        if not (user or team):
            r.error(
                node,
                path,
                "for_each only with a {user} or {team} placeholder in resource",
                "a resource without {user} or {team}",
            )
            return None
        if team:
            return self._teams(node, path, channels=channel)
        fan_out = self._users(node, path)
        if fan_out is not None and rt.one_user_per_declaration and len(fan_out.users) != 1:
            r.error(
                node,
                path,
                f"for_each: {{users: [ONE-USER]}} for {rt.key}",
                "several users" if len(fan_out.users) > 1 else "a set of users",
                "users share chats: a message two declared users both see is one row, which one user's pass would "
                "remove (leaving the chat, a full round's sweep) while the other still sees it; declare one "
                "subscription (and table) per user, or follow every chat with chats/getAllMessages",
            )
            return None
        return fan_out

    def _users(self, node: yaml.Node, path: str) -> FanOut | None:
        """``for_each: {users: ...} | {group: ID} | {filter: ...}`` for a ``{user}`` placeholder."""
        r = self.r
        f = r.mapping(
            node,
            path,
            ("users", "group", "filter"),
            what="{users: [...] | all}, {group: ID} or {filter: ...}",
        )
        if f is None:
            return None
        if len(f.values) != 1:
            r.error(f, path, "exactly one of users, group, filter", ", ".join(f.values) or "none")
            return None
        if (users := f.get("users")) is not None:
            if isinstance(users, yaml.ScalarNode) and r.raw(users) == "all":
                return FanOut(all_users=True)
            ids = r.list_of(
                users,
                f.sub("users"),
                lambda n, p: r.string(n, p, expected="a user id or UPN"),
                what="a list of user ids or all",
            )
            if ids is not None and not ids and isinstance(users, yaml.SequenceNode):
                r.error(users, f.sub("users"), "at least one user", "an empty list")
            return FanOut(users=tuple(ids)) if ids else None
        if f.get("group") is not None:
            group = r.string(f.get("group"), f.sub("group"), expected="a group id")
            return FanOut(group=group) if group else None
        query = r.string(f.get("filter"), f.sub("filter"), expected="an OData $filter on users")
        return FanOut(filter=query) if query else None

    def _teams(self, node: yaml.Node, path: str, *, channels: bool) -> FanOut | None:
        """``for_each: {teams: all | [ids]}`` for a ``{team}`` placeholder."""
        r = self.r
        f = r.mapping(node, path, ("teams",), what="{teams: [...] | all}")
        if f is None:
            return None
        teams = f.get("teams")
        if teams is None:
            if not (isinstance(node, yaml.MappingNode) and node.value):  # an unknown key was reported already
                r.error(f, f.sub("teams"), "teams: a list of team ids, or all", "nothing")
            return None
        if isinstance(teams, yaml.ScalarNode) and r.raw(teams) == "all":
            return FanOut(all_teams=True, channels=channels)
        ids = r.list_of(
            teams,
            f.sub("teams"),
            lambda n, p: r.string(n, p, expected="a team id (the team's group id)"),
            what="a list of team ids or all",
        )
        if ids is not None and not ids and isinstance(teams, yaml.SequenceNode):
            r.error(teams, f.sub("teams"), "at least one team", "an empty list")
        return FanOut(teams=tuple(ids), channels=channels) if ids else None

    def window(self, s: Map, rt: ResourceType) -> tuple[timedelta, timedelta] | None:
        """``window``: how far back and ahead a calendarView subscription syncs."""
        r, path, node = self.r, s.sub("window"), s.get("window")
        if rt.sync != resources.CALENDAR_VIEW:
            if node is not None:
                r.error(node, path, "window only for event resources (calendarView)", f"a {rt.name} resource")
            return None
        w = r.mapping(node, path, ("past", "future"), what="{past: DURATION, future: DURATION}")
        past = r.duration(w.get("past"), f"{path}.past") if w and w.get("past") else DEFAULT_WINDOW_PAST
        future = (
            r.duration(w.get("future"), f"{path}.future") if w and w.get("future") else DEFAULT_WINDOW_FUTURE
        )
        if not isinstance(past, timedelta) or not isinstance(future, timedelta):
            return None
        return past, future

    def folders(self, s: Map, rt: ResourceType, params: dict[str, str]) -> tuple[str, ...] | None:
        """``folders``: the mail or contact folders to sync (None: every folder)."""
        r, path, node = self.r, s.sub("folders"), s.get("folders")
        if rt.key not in ("message", "contact"):
            if node is not None:
                r.error(node, path, "folders only for messages and contacts", f"a {rt.name} resource")
            return None
        if "folder" in params:
            if node is not None:
                r.error(
                    node,
                    path,
                    "folders only for a whole mailbox (users/{user}/messages)",
                    "a resource naming its folder",
                )
            return (params["folder"],)
        if node is None or (isinstance(node, yaml.ScalarNode) and r.raw(node) == "all"):
            return None  # every folder
        names = r.list_of(
            node,
            path,
            lambda n, p: r.string(n, p, expected="a folder id or well-known name"),
            what="all, or a list of folder ids / well-known names (inbox, sentitems...)",
        )
        return tuple(names) if names else None
