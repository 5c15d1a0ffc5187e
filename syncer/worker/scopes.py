"""Scopes: the units the sync engine brings up to date, expanded from the declarations in the spec.

A *scope* is one collection Graph can enumerate on its own and give a cursor for: the tenant's
users, one mail folder of one mailbox, one mailbox's calendar view, one drive, one To Do list. Each
has one row in ``syncer_sync_state`` (its deltaLink, lease, dirty flag) and writes the mirror table
of its declaration, tagging every row with its key in ``_scope``.

A declaration expands into scopes in two steps:

* per user, when its resource has a ``{user}`` placeholder (``fan_out`` in the spec); the expanded
  resource path, without query, is the *parent key*: what a Graph subscription covers and what
  ``syncer_subscriptions.scope_key`` holds, so that a notification marks every scope under it dirty;
* per container, when Graph's delta works per folder but the subscription covers the whole mailbox
  (messages, contacts): a *container scope* (``users/{id}/mailFolders``) follows the folders with
  their own delta query, and its passes add and remove the per-folder scopes as folders come and go.
  Those child scopes live only in ``syncer_sync_state``, under the same parent key.

How each resource type is synced is data (:data:`STRATEGIES`): adding a type is mostly an entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from syncer import resolve, resources
from syncer.errors import ConfigError, NotFoundError
from syncer.worker.chain import Chain

if TYPE_CHECKING:
    from collections.abc import Iterator

    from syncer.spec import Mirror, Spec, Subscription


class PageLister(Protocol):
    """What expanding a fan-out needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

# Methods: how a scope's pass reads Graph.
DELTA = resources.DELTA  # {collection}/delta with $select; follow nextLinks to the deltaLink
CALENDAR_VIEW = resources.CALENDAR_VIEW  # calendarView/delta over a window; no $select
DRIVE_DELTA = resources.DRIVE_DELTA  # drive root delta; removal is a "deleted" facet
FETCH = resources.FETCH  # no delta: list the collection (mark-and-sweep), GET items by id on notifications
CURSOR = resources.CURSOR  # no delta: list newest first past a time cursor (syncer.worker.cursor)


@dataclass(frozen=True)
class Strategy:
    """How the items of one resource type are brought up to date."""

    key: str
    method: str
    path: str
    """Delta path template (``{user}``, ``{folder}``... filled from the scope), or the list path for FETCH."""
    select: bool = True
    """Send ``$select`` from the mirror's columns (calendarView delta refuses it)."""
    members: bool = False
    """Items carry ``members@delta``: keep ``<table>_members``."""
    deleted_facet: bool = False
    """Removal is signalled by a ``deleted`` property (drive items) besides ``@removed``."""
    containers: str | None = None
    """Delta path of the containers (folders) when the declaration covers a whole mailbox."""
    container_placeholder: str | None = None
    """The placeholder of :attr:`path` a container id fills (``folder``)."""
    window: bool = False
    """calendarView: ``startDateTime``/``endDateTime`` from the declaration's window."""
    item_path: str | None = None
    """FETCH: GET one item; ``{resource}`` is the notification's resource path."""
    single_filter: str | None = None
    """A declaration of one object (``users/{user}``) syncs through the collection's delta with this $filter."""
    inline: str | None = None
    """Items carry others inside (a channel message's ``replies``, asked with ``$expand``): each is written
    as a row of its own, and the carrier's row keeps its own properties only."""
    fetch_notified: str | None = None
    """A regular expression: a notification whose resource matches it is fetched by id (like a FETCH scope's)
    instead of marking the scope dirty, for items the delta does not bring (a new reply: its root may not change)."""
    chain: Chain | None = None
    """Graph lists the collection only per team or per user (``teams/getAllMessages``): a pass walks each one's
    list in turn (:mod:`syncer.worker.chain`); the declared ``model`` goes with every request."""
    cursor: str | None = None
    """No delta: the list sorts newest first by this property and takes ``$filter=<it> gt``; a round ends with the
    list filtered past its newest item as the next round's start (:mod:`syncer.worker.cursor`)."""
    query: tuple[tuple[str, str], ...] = ()
    """Query options every request of the scope's first page carries (a cursor list's ``$orderby``)."""
    deleted_property: str | None = None
    """A soft-deleted item stays listed with this property set (a Teams message's ``deletedDateTime``): its row
    is written, then removed with reason ``deleted`` at that time."""
    ids_action: str | None = None
    """No list in Graph: a full pass POSTs the declared ids to this action (:mod:`syncer.worker.idaction`)."""
    list_query: bool = False
    """FETCH: the list keeps the declaration's query (an alerts ``$filter``): the mirror holds what it selects."""
    item_pages: str | None = None
    """FETCH: a GET by id returns this property paged (``sessions@odata.nextLink``): every page is followed."""
    refetch_listed: bool = False
    """FETCH: the list lacks what a GET by id expands (a call record's sessions): a list pass GETs each listed item."""


STRATEGIES: dict[str, Strategy] = {
    s.key: s
    for s in (
        Strategy("user", DELTA, "users/delta", single_filter="user"),
        Strategy("group", DELTA, "groups/delta", members=True, single_filter="group"),
        Strategy(
            "message",
            DELTA,
            "users/{user}/mailFolders/{folder}/messages/delta",
            containers="users/{user}/mailFolders/delta",
            container_placeholder="folder",
        ),
        Strategy(
            "contact",
            DELTA,
            "users/{user}/contactFolders/{folder}/contacts/delta",
            containers="users/{user}/contactFolders/delta",
            container_placeholder="folder",
        ),
        Strategy("event", CALENDAR_VIEW, "users/{user}/calendarView/delta", select=False, window=True),
        Strategy(
            "todoTask",
            DELTA,
            "users/{user}/todo/lists/{list}/tasks/delta",
            # A declaration over every list of a mailbox ({list} left open) follows the lists.
            containers="users/{user}/todo/lists/delta",
            container_placeholder="list",
        ),
        Strategy("driveItem", DRIVE_DELTA, "{drive_root}/delta", deleted_facet=True),
        # https://learn.microsoft.com/en-us/graph/api/chatmessage-delta: root messages of one channel (replies are
        # not in it), no $select (only $top, $skip, $expand and $filter); a soft-deleted message stays listed
        # with deletedDateTime set (https://learn.microsoft.com/en-us/graph/api/chatmessage-softdelete).
        Strategy(
            "chatMessage.channel",
            DELTA,
            "teams/{team}/channels/{channel}/messages/delta",
            select=False,
            # The delta lists roots only: $expand=replies brings each listed root's replies, and a notified
            # reply (teams('t')/channels('c')/messages('root')/replies('r')) is fetched by id.
            inline="replies",
            fetch_notified=r"/replies(/|\(')[^/]+$",
            deleted_property="deletedDateTime",
        ),
        Strategy(
            "chatMessage.user",
            DELTA,
            "users/{user}/chats/getAllMessages/delta",
            select=False,
            deleted_property="deletedDateTime",
        ),
        # https://learn.microsoft.com/en-us/graph/api/chat-list-messages: no delta for one chat (v1.0); listed newest
        # first with a lastModifiedDateTime cursor, the filter only honoured when $orderby names the same property.
        Strategy(
            "chatMessage.chat",
            CURSOR,
            "chats/{chat}/messages",
            select=False,
            cursor="lastModifiedDateTime",
            query=(("$orderby", "lastModifiedDateTime desc"), ("$top", "50")),
            deleted_property="deletedDateTime",
        ),
        # Tenant-wide message subscriptions (https://learn.microsoft.com/en-us/graph/teams-changenotifications-chatmessage):
        # a notification names the message (teams('t')/channels('c')/messages('m'), replies under it, or
        # chats('c')/messages('m')), which is fetched by id. Graph lists no such collection, but lists every message
        # of a team's channels and of a user's chats: a pass (the safety net) walks those.
        Strategy("chatMessage.allChannels", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("teams?$select=id", "teams/{id}/channels/getAllMessages"),
                 deleted_property="deletedDateTime"),
        Strategy("chatMessage.allChats", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("users?$select=id", "users/{id}/chats/getAllMessages"),
                 deleted_property="deletedDateTime"),
        # The other tenant-wide Teams resources (https://learn.microsoft.com/en-us/graph/teams-changenotifications-chat,
        # -team-and-channel, -teammembership, -chatmembership, -channelmembership): notified items fetched by id, a pass
        # walks what Graph lists in parts. An app cannot GET /chats (https://learn.microsoft.com/en-us/graph/api/chat-list):
        # each user's chats are walked; a chat's members are listed per chat, the chats found per user.
        Strategy("chat", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("users?$select=id", "users/{id}/chats", model=False)),
        Strategy("channel.all", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("teams?$select=id", "teams/{id}/channels", model=False)),
        Strategy("conversationMember.allTeams", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("teams?$select=id", "teams/{id}/members", model=False)),
        Strategy("conversationMember.allChats", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain(Chain("users?$select=id", "users/{id}/chats?$select=id", model=False),
                             "chats/{id}/members", model=False)),
        # https://learn.microsoft.com/en-us/graph/api/channel-list and
        # https://learn.microsoft.com/en-us/graph/api/channel-list-members: the team's private and shared channels.
        Strategy("conversationMember.channel", FETCH, "{resource}", item_path="{resource}",
                 chain=Chain("teams/{team}/channels?$select=id,membershipType", "teams/{team}/channels/{id}/members",
                             skip=(("membershipType", "standard"),), model=False)),
        # https://learn.microsoft.com/en-us/graph/api/listitem-delta: token links, a "deleted" facet, column values
        # only with $expand=fields, which the links keep (https://learn.microsoft.com/en-us/graph/delta-query-overview:
        # the state token encodes the first request's query); a notification is a shoulder tap naming the list.
        Strategy("list", DELTA, "sites/{site}/lists/{list}/items/delta?$expand=fields", select=False, deleted_facet=True),
        # Owners are listed (no owners@delta in groups delta); a notification names the group: list again.
        Strategy("group.owners", FETCH, "groups/{group}/owners"),
        # https://learn.microsoft.com/graph/api/cloudcommunications-getpresencesbyuserid: no list, no delta.
        Strategy("presence", FETCH, "{resource}", item_path="{resource}",
                 ids_action="communications/getPresencesByUserId"),
        Strategy("alert", FETCH, "{resource}", item_path="{resource}", list_query=True),
        # https://learn.microsoft.com/en-us/graph/api/callrecords-callrecord-get: sessions (and their segments) come
        # only with $expand, paged; the list (https://learn.microsoft.com/en-us/graph/api/callrecords-cloudcommunications-list-callrecords)
        # has no $expand, so a list pass GETs each record it lists.
        Strategy(
            "callRecord",
            FETCH,
            "{resource}",
            item_path="{resource}?$expand=sessions($expand=segments)",
            item_pages="sessions",
            refetch_listed=True,
        ),
    )
}


def fetched_by_id(strategy: Strategy, resource: str | None) -> bool:
    """Whether a notification naming *resource* is fetched by id rather than marking its scope dirty."""
    if not resource:
        return False
    if strategy.method == FETCH:
        return strategy.item_path is not None
    return strategy.fetch_notified is not None and re.search(strategy.fetch_notified, resource) is not None


def strategy_for(resource_type: resources.ResourceType) -> Strategy:
    """The strategy of *resource_type*; a type with none is synced by GET (fetch) of its own path."""
    found = STRATEGIES.get(resource_type.key)
    if found is not None:
        return found
    return Strategy(resource_type.key, FETCH, "{resource}", item_path="{resource}")


@dataclass(frozen=True)
class Scope:
    """One collection to sync: its key, where its rows go and how to read it."""

    tenant_id: str
    key: str
    """Stored in ``syncer_sync_state.scope_key`` and in each mirror row's ``_scope``."""
    name: str
    """The declaration (subscription name in the spec)."""
    parent_key: str
    """The subscription-level scope (expanded resource path) this scope belongs to."""
    table: str
    strategy: Strategy
    initial_url: str
    """The first request of a full enumeration (relative to the Graph base)."""
    mirror: Mirror | None = None
    delete: str = "soft"
    container: bool = False
    """A container scope: its items are folders, each becomes a child scope (no mirror rows)."""
    mailbox: str | None = None
    interval: timedelta = timedelta(minutes=15)
    """Safety-net period: a pass runs at least this often, notifications or not."""
    rich: bool = False
    """Its subscription includes resource data: notified rows are written from payloads (:mod:`syncer.worker.rich`)."""
    owners: tuple[tuple[str, str], ...] = ()
    """Placeholder values of the scope's path (``site``, ``list``, ``group``, ``drive``) its path-owner columns take."""

    @property
    def members_table(self) -> str | None:
        """``<table>_members`` when items carry ``members@delta``."""
        return f"{self.table}_members" if self.strategy.members else None


# --- expansion --------------------------------------------------------------------------------------


def parent_key(resource: str) -> str:
    """The key of an expanded subscription resource: its path without query or leading slash."""
    path, _query = resources.split_resource(resource)
    return path


def fill(template: str, params: Mapping[str, str]) -> str:
    """*template* with ``{name}`` placeholders filled (URL-quoted) from *params*; unknown ones stay."""
    return re.sub(r"\{(\w+)\}", lambda m: quote(params[m.group(1)], safe="@:!$'(),;=") if m.group(1) in params else m.group(0), template)


def _with_query(path: str, query: Sequence[tuple[str, str]]) -> str:
    if not query:
        return path
    rendered = "&".join(f"{k}={quote(v, safe=',$:()=')}" for k, v in query)
    return f"{path}{'&' if '?' in path else '?'}{rendered}"


def _select(mirror: Mirror | None, strategy: Strategy) -> list[tuple[str, str]]:
    if mirror is None or not strategy.select:
        return []
    names = list(mirror.select)
    if strategy.members and "members" not in names:
        names.append("members")
    if strategy.deleted_facet and "deleted" not in names:
        # Removal is this facet: without it a deleted item would look like a live one.
        names.append("deleted")
    return [("$select", ",".join(names))]


def _window(subscription: Any, now: datetime) -> list[tuple[str, str]]:
    past = getattr(subscription, "window_past", None) or timedelta(days=30)
    future = getattr(subscription, "window_future", None) or timedelta(days=90)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    start = (now - past).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = (now + future).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [("startDateTime", start.strftime(fmt)), ("endDateTime", end.strftime(fmt))]


def expand_subscription(
    subscription: Subscription,
    tenant_id: str,
    *,
    users: Sequence[str] = (),
    bindings: Sequence[Mapping[str, str]] = (),
    resolved: resolve.Resolved | None = None,
    now: datetime | None = None,
) -> list[Scope]:
    """The static scopes of *subscription* (container scopes included, their folders not).

    *users* fills ``{user}`` for per-mailbox declarations (see :func:`resolve_users`); *bindings* fill
    ``{team}`` (and ``{channel}``) of a declaration over teams (see :func:`resolve_teams`); *resolved* is
    the canonical path of a declaration that names its target indirectly (:mod:`syncer.resolve`).
    """
    now = now or datetime.now(UTC)
    rt = subscription.resource_type
    strategy = strategy_for(rt)
    path, _query = resources.split_resource(resolved.resource if resolved else subscription.resource)
    matched = resources.match_resource(path)
    params = {**(dict(matched[1]) if matched else {}), **dict(resolved.owners if resolved else ())}
    fan_out = subscription.fan_out
    if fan_out is not None and fan_out.over_teams:
        values: list[Mapping[str, str]] = list(bindings)
    else:
        needs_user = params.get("user", "").startswith("{") or "{user}" in path
        if needs_user and not users:
            return []
        values = [{"user": user} for user in users] if needs_user else [{}]
    scopes: list[Scope] = []
    for binding in values:
        p = {**params, **binding}
        expanded_path = fill(path, binding) if binding else path
        # A placeholder left open ({list}) is filled by a container scope: the parent key stops before it.
        parent = parent_key(expanded_path).split("/{", 1)[0]
        scopes += _scopes_for(subscription, tenant_id, strategy, parent, p, now=now)
    return scopes


def _base(subscription: Subscription, tenant_id: str, strategy: Strategy, parent: str, mailbox: str | None, owners: Mapping[str, str]) -> dict[str, Any]:
    return {
        "owners": tuple(sorted(owners.items())),
        "tenant_id": tenant_id,
        "name": subscription.name,
        "parent_key": parent,
        "table": subscription.mirror.table,
        "strategy": strategy,
        "mirror": subscription.mirror,
        "delete": subscription.mirror.delete,
        "mailbox": mailbox,
        "interval": subscription.sync_interval,
        "rich": subscription.include_resource_data,
    }


def _scopes_for(
    subscription: Subscription,
    tenant_id: str,
    strategy: Strategy,
    parent: str,
    params: dict[str, str],
    *,
    now: datetime,
) -> list[Scope]:
    mailbox = params.get("user")
    # A placeholder left open in the declaration ({list}) is one the containers fill.
    params = {k: v for k, v in params.items() if not v.startswith("{")}
    base = _base(subscription, tenant_id, strategy, parent, mailbox, params)
    select = _select(subscription.mirror, strategy)
    if strategy.method == FETCH:
        _path, declared_query = resources.split_resource(subscription.resource)
        # An ids action reads the ids the declaration names, in its $filter; an alerts list keeps its $filter;
        # a tenant-wide Teams list (a chain) passes the declared payment model on.
        listed = declared_query if (strategy.ids_action or strategy.list_query) else ""
        model = getattr(subscription, "model", None)
        if strategy.chain is not None and model:
            listed = f"model={model}"
        if strategy.chain is not None and params:  # a chain within one team: its lists name the team
            strategy = replace(strategy, chain=_fill_chain(strategy.chain, params))
            base["strategy"] = strategy
        return [Scope(key=parent, initial_url=f"{parent}?{listed}" if listed else parent, **base)]
    if strategy.method == DRIVE_DELTA:
        return [Scope(key=parent, initial_url=_with_query(f"{parent}/delta", select), **base)]
    if strategy.containers and strategy.container_placeholder and strategy.container_placeholder not in params:
        declared = getattr(subscription, "folders", None)
        if declared:
            return [folder_scope_from(base, strategy, params, folder, select) for folder in declared]
        tracker_key = fill(strategy.containers, params).removesuffix("/delta")
        return [
            Scope(
                key=tracker_key,
                initial_url=_with_query(fill(strategy.containers, params), [("$select", "id,displayName")]),
                container=True,
                **base,
            )
        ]
    if strategy.containers and strategy.container_placeholder:
        return [folder_scope_from(base, strategy, params, params[strategy.container_placeholder], select)]
    query = [*select, *strategy.query]
    if strategy.inline:
        query.append(("$expand", strategy.inline))
    if strategy.window:
        query += _window(subscription, now)
    if strategy.single_filter and strategy.single_filter in params:
        query.append(("$filter", f"id eq '{params[strategy.single_filter]}'"))
    url = _with_query(fill(strategy.path, params), query)
    return [Scope(key=parent, initial_url=url, **base)]


def _fill_chain(chain: Chain, params: Mapping[str, str]) -> Chain:
    """*chain* with the scope's placeholders (``{team}``) filled; ``{id}`` (each member) stays."""
    members = _fill_chain(chain.members, params) if isinstance(chain.members, Chain) else fill(chain.members, params)
    return replace(chain, members=members, path=fill(chain.path, params))


def folder_scope_from(
    base: Mapping[str, Any], strategy: Strategy, params: Mapping[str, str], folder: str, select: Sequence[tuple[str, str]]
) -> Scope:
    """The scope of one folder of a mailbox declaration."""
    p = {**params, str(strategy.container_placeholder): folder}
    delta = fill(strategy.path, p)
    return Scope(key=delta.removesuffix("/delta"), initial_url=_with_query(delta, select), **base)


def child_scope(container: Scope, folder_id: str) -> Scope:
    """The scope of folder *folder_id* found by the container scope *container*."""
    strategy = container.strategy
    params = {"user": container.mailbox or ""}
    base = {
        "tenant_id": container.tenant_id,
        "name": container.name,
        "parent_key": container.parent_key,
        "table": container.table,
        "strategy": strategy,
        "mirror": container.mirror,
        "delete": container.delete,
        "mailbox": container.mailbox,
        "interval": container.interval,
        "rich": container.rich,
        "owners": container.owners,
    }
    return folder_scope_from(base, strategy, params, folder_id, _select(container.mirror, strategy))


def folder_of(child_key: str, container: Scope) -> str | None:
    """The folder id in *child_key* if it is a child of *container*, else None."""
    prefix = container.key + "/"
    if not child_key.startswith(prefix):
        return None
    rest = child_key[len(prefix) :]
    folder, _, tail = rest.partition("/")
    return folder if folder and tail else None


def child_key(target: Scope, scope_key: str | None) -> str | None:
    """The child scope a subscription's *scope_key* is, when *target* is a container and Graph subscribes per
    child (To Do: one subscription per list, https://learn.microsoft.com/en-us/graph/api/resources/todotask)."""
    if not target.container or scope_key is None:
        return None
    return scope_key if folder_of(scope_key, target) is not None else None


# --- the index of a worker's scopes -----------------------------------------------------------------


@dataclass
class ScopeIndex:
    """Every scope the worker knows: the spec's static ones and the folders their containers found.

    Built once per expansion of the spec and not changed afterwards (a refresh builds a new one):
    the lookups below run for every notification and every state row, so they are dictionary
    lookups, never scans of the scopes (40,000 of them in a large tenant).
    """

    static: dict[tuple[str, str], Scope] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # (tenant, parent key lower-cased) -> a scope under it; (tenant, parent key) -> its containers.
        self._by_parent: dict[tuple[str, str], Scope] = {}
        self._containers: dict[tuple[str, str | None], list[Scope]] = {}
        for scope in self.static.values():
            self._by_parent[(scope.tenant_id, scope.parent_key.lower())] = scope
            if scope.container:
                self._containers.setdefault((scope.tenant_id, scope.parent_key), []).append(scope)

    @classmethod
    def of(cls, found: Iterable[Scope]) -> ScopeIndex:
        return cls({(s.tenant_id, s.key): s for s in found})

    def containers(self) -> list[Scope]:
        return [s for found in self._containers.values() for s in found]

    def resolve(self, tenant_id: str, key: str, parent_key: str | None) -> Scope | None:
        """The Scope of a ``syncer_sync_state`` row, or None when the spec no longer declares it."""
        found = self.static.get((tenant_id, key))
        if found is not None:
            return found
        for container in self._containers.get((tenant_id, parent_key), ()):
            folder = folder_of(key, container)
            if folder is not None:
                return child_scope(container, folder)
        return None

    def under(self, tenant_id: str, parent_key: str) -> Scope | None:
        """A scope expanded from the subscription-level *parent_key* (any case)."""
        return self._by_parent.get((tenant_id, parent_key.lower()))

    def owning(self, tenant_id: str, resource: str) -> Scope | None:
        """The scope whose parent key is the longest prefix of *resource* (a notification's path)."""
        parts = resource.strip("/").lower().split("/")
        for end in range(len(parts), 0, -1):
            found = self._by_parent.get((tenant_id, "/".join(parts[:end])))
            if found is not None:
                return found
        return None


# --- fan-out over users -----------------------------------------------------------------------------


def resolve_users(subscription: Subscription, client: PageLister | None) -> list[str]:
    """The users a per-mailbox declaration is expanded over (ids or UPNs as declared or listed)."""
    fan_out = subscription.fan_out
    path, _ = resources.split_resource(subscription.resource)
    matched = resources.match_resource(path)
    if matched is not None and "user" in matched[1] and not matched[1]["user"].startswith("{"):
        return [matched[1]["user"]]
    if fan_out is None:
        return []
    if fan_out.users:
        return list(fan_out.users)
    if client is None:
        raise ConfigError(f"subscription {subscription.name!r}: fan_out needs Graph to list its users")
    if fan_out.group:
        url = f"groups/{quote(fan_out.group)}/members?$select=id"
    elif fan_out.filter:
        url = f"users?$select=id&$filter={quote(fan_out.filter)}"
    else:
        url = "users?$select=id"
    found: list[str] = []
    try:
        for page in client.iter_pages(url):
            found += [str(item["id"]) for item in page.items if "id" in item and "@removed" not in item]
    except NotFoundError as error:
        from syncer.reconcile.fanout import missing_fan_out

        raise ConfigError(missing_fan_out(subscription, error)) from error
    return found


def resolve_teams(subscription: Subscription, client: PageLister | None) -> list[dict[str, str]]:
    """The ``{team}`` (and ``{channel}``) values of a declaration over teams, listed the way reconcile does."""
    fan_out = subscription.fan_out
    if fan_out is None or not fan_out.over_teams:
        return []
    teams = list(fan_out.teams)
    if (not teams or fan_out.channels) and client is None:
        raise ConfigError(f"subscription {subscription.name!r}: for_each needs Graph to list its teams or channels")
    if not teams:
        teams = _listed_ids(client, "teams?$select=id")
    if not fan_out.channels:
        return [{"team": team} for team in teams]
    return [
        {"team": team, "channel": channel}
        for team in teams
        for channel in _listed_ids(client, f"teams/{quote(team, safe='')}/channels?$select=id")
    ]


def _listed_ids(client: PageLister | None, url: str) -> list[str]:
    assert client is not None
    found: list[str] = []
    for page in client.iter_pages(url):
        found += [str(item["id"]) for item in page.items if "id" in item and "@removed" not in item]
    return found


def declared_scopes(
    spec: Spec,
    *,
    clients: Mapping[str, PageLister] | None = None,
    names: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[Scope]:
    """Every static scope the spec declares (optionally only declarations *names*)."""
    wanted = set(names) if names is not None else None
    scopes: list[Scope] = []
    for subscription in spec.subscriptions:
        if wanted is not None and subscription.name not in wanted:
            continue
        tenant = spec.tenant(subscription.tenant)
        client = clients.get(subscription.tenant) if clients else None
        if subscription.fan_out is not None and subscription.fan_out.over_teams:
            bindings = resolve_teams(subscription, client)
            scopes += expand_subscription(subscription, tenant.tenant_id, bindings=bindings, now=now)
            continue
        if resolve.needs_resolution(subscription):
            found = resolve.resolve(subscription, client)  # type: ignore[arg-type]
            scopes += expand_subscription(subscription, tenant.tenant_id, resolved=found, now=now)
            continue
        users = resolve_users(subscription, client)
        scopes += expand_subscription(subscription, tenant.tenant_id, users=users, now=now)
    return scopes
