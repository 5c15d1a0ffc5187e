"""Fan-out: which users a ``for_each`` declaration stands for, asked of Graph at each reconcile.

Outlook, calendar, contact and To Do subscriptions are per mailbox, so one declaration such as
``resource: users/{user}/messages`` with ``for_each: {group: ...}`` becomes one Graph subscription
per user. The set is computed afresh at every reconcile (an explicit list, the user members of a
group, the users matching a ``$filter``, or every user), so membership changes are picked up by the
next run; the plan shows the expansion.

Explicit lists are taken as written (ids or UPNs): resolving them would cost one call per user on
every run, and Graph accepts either form in a resource path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

from syncer import resolve
from syncer.errors import NotFoundError, ReconcileError
from syncer.reconcile.desired import Expansion
from syncer.resources import match_resource, split_resource

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient
    from syncer.spec import FanOut, Spec, Subscription

log = logging.getLogger("syncer.reconcile.fanout")

_USER_TYPE = "#microsoft.graph.user"
_FILTER_SAFE = "()'=,"  # OData punctuation stays readable in logs; spaces and the rest are escaped
USERS_PAGE = 999
"""Users per page of the fan-out's list: Graph's largest (https://learn.microsoft.com/en-us/graph/api/user-list
takes ``$top`` from 1 to 999; its default is 100), so 10,000 mailboxes are 11 calls instead of 100."""


def expand(spec: Spec, graphs: Mapping[str, GraphClient]) -> dict[str, Expansion]:
    """The expansion of every fan-out declaration in *spec*; *graphs* maps tenant id to its client."""
    out: dict[str, Expansion] = {}
    # Declarations fanning out over the same users (mail, events and contacts of every user) ask Graph once.
    listed: dict[tuple[str, FanOut], tuple[str, tuple[str, ...]]] = {}
    for sub in spec.subscriptions:
        lists = sub.resource_type.key == "todoTask" and "{list}" in split_resource(sub.resource)[0]
        if sub.fan_out is None and not lists and not resolve.needs_resolution(sub):
            continue
        tenant_id = spec.tenant(sub.tenant).tenant_id
        graph = graphs.get(tenant_id)
        if graph is None:
            raise ReconcileError(
                f"no Graph client for tenant {sub.tenant!r} ({tenant_id}) to expand {sub.name!r}"
            )
        if sub.fan_out is None and not lists:
            path = resolve.resolve(sub, graph).resource
            out[sub.name] = Expansion(sub.name, tenant_id, f"resolved from {sub.resource}", (path,), noun="paths",
                                      resources=(path,))
            continue
        if sub.fan_out is not None and sub.fan_out.over_teams:
            out[sub.name] = teams_of(sub.name, tenant_id, sub.fan_out, graph)
            continue
        users: tuple[str, ...]
        if sub.fan_out is None:
            matched = match_resource(sub.resource)
            source, users = "named in the resource", (matched[1]["user"],) if matched else ()
        else:
            key = (tenant_id, sub.fan_out)
            if key not in listed:
                try:
                    listed[key] = users_of(sub.fan_out, graph)
                except NotFoundError as error:
                    raise ReconcileError(missing_fan_out(sub, error)) from error
            source, users = listed[key]
        if lists:
            out[sub.name] = lists_of(sub.name, tenant_id, source, users, graph, fan_out=sub.fan_out is not None)
        else:
            out[sub.name] = Expansion(sub.name, tenant_id, source, users)
    return out


def lists_of(
    name: str, tenant_id: str, source: str, users: tuple[str, ...], graph: GraphClient, *, fan_out: bool
) -> Expansion:
    """Each user's To Do lists, one Graph subscription per list: Graph subscribes to the tasks of one list
    (https://learn.microsoft.com/en-us/graph/api/resources/todotask), so a list created later is followed from
    the next reconcile on (its tasks are synced before that: the worker follows the lists by their delta)."""
    bindings: list[tuple[tuple[str, str], ...]] = []
    labels: list[str] = []
    for user in users:
        base = "/me" if user.lower() == "me" else f"/users/{quote(user, safe='@')}"
        try:
            found = _ids(graph, f"{base}/todo/lists?$select=id")
        except NotFoundError:
            # No mailbox (yet): nothing to subscribe to, as a user without a licence has no mail folders.
            log.warning("%s: user %s has no To Do lists (404): skipped until a later reconcile", name, user)
            continue
        for todo_list in found:
            bindings.append(((("user", user),) if fan_out else ()) + (("list", todo_list),))
            labels.append(f"{user}/{todo_list}")
    return Expansion(name, tenant_id, f"each user's To Do lists; users: {source}", tuple(labels), tuple(bindings), noun="lists")


def teams_of(name: str, tenant_id: str, fan_out: FanOut, graph: GraphClient) -> Expansion:
    """The teams of a ``{team}`` declaration and, when it has ``{channel}``, each team's channels.

    Listed teams are taken as written; ``all`` lists ``/teams`` (Team.ReadBasic.All). Channels are
    listed per team (``/teams/{id}/channels``, Channel.ReadBasic.All), so a new channel is followed
    from the next reconcile on.
    """
    if fan_out.teams:
        source, teams = "listed in the spec", tuple(dict.fromkeys(fan_out.teams))
    else:
        source, teams = "all teams", _ids(graph, "/teams?$select=id")
    if not fan_out.channels:
        bindings: tuple[tuple[tuple[str, str], ...], ...] = tuple((("team", team),) for team in teams)
        return Expansion(name, tenant_id, source, teams, bindings, noun="teams")
    pairs = [
        (team, channel)
        for team in teams
        for channel in _ids(graph, f"/teams/{quote(team, safe='')}/channels?$select=id")
    ]
    bindings = tuple((("team", t), ("channel", c)) for t, c in pairs)
    labels = tuple(f"{t}/{c}" for t, c in pairs)
    return Expansion(name, tenant_id, f"channels of {source}", labels, bindings, noun="channels")


def users_of(fan_out: FanOut, graph: GraphClient) -> tuple[str, tuple[str, ...]]:
    """A description of where the users came from, and their ids (sorted, unique)."""
    if fan_out.users:
        return "listed in the spec", tuple(dict.fromkeys(fan_out.users))
    if fan_out.group is not None:
        path = f"/groups/{quote(fan_out.group, safe='')}/members?$select=id"
        ids = []
        for page in graph.iter_pages(path):
            for item in page.items:
                # Groups also hold devices, service principals and nested groups: only users have mailboxes.
                if item.get("@odata.type", _USER_TYPE) == _USER_TYPE and item.get("id"):
                    ids.append(str(item["id"]))
        return f"members of group {fan_out.group}", tuple(sorted(set(ids)))
    if fan_out.filter is not None:
        path = f"/users?$filter={quote(fan_out.filter, safe=_FILTER_SAFE)}&$select=id&$top={USERS_PAGE}"
        return f"users where {fan_out.filter}", _ids(graph, path)
    if fan_out.all_users:
        return "all users", _ids(graph, f"/users?$select=id&$top={USERS_PAGE}")
    raise ReconcileError("a for_each with no users, group or filter")


def missing_fan_out(sub: Subscription, error: NotFoundError) -> str:
    """What to tell the user when Graph has no group (or user list) a ``for_each`` names.

    A bare 404 named neither the declaration nor the line to fix; reconcile and the worker say the same.
    """
    fan_out = sub.fan_out
    what = f"group {fan_out.group!r}" if fan_out is not None and fan_out.group else "the users to fan out over"
    return (
        f"subscription {sub.name!r} (line {sub.line}): for_each {what} was not found in Graph "
        f"({error.method or 'GET'} {error.url or ''} answered 404): fix for_each in the spec, or check the tenant"
    )


def _ids(graph: GraphClient, path: str) -> tuple[str, ...]:
    ids = {str(item["id"]) for page in graph.iter_pages(path) for item in page.items if item.get("id")}
    return tuple(sorted(ids))
