"""Compare the mirror with a fresh enumeration from Graph: does the mirror hold the truth?

For every scope syncer syncs, a full delta round from scratch (no token) is Graph's current state of
that collection. The mirror's live rows of that scope (``_deleted_at`` null) must hold exactly those
ids, with every declared column equal to the converted Graph value (both under the storage rule of
:mod:`syncer.storable`); a group's members table must
hold exactly its members. `syncer verify`, the demo and the chaos tests use this.

It reads Graph through the client but none of the sync code, so a bug in a pass shows up here as a
difference instead of being repeated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import mirror, owners, resources
from syncer.errors import ForbiddenError, NotFoundError
from syncer.graph.client import GraphClient
from syncer.storable import storable
from syncer.worker import chain, containers, idaction, scopes
from syncer.worker import inline as carried
from syncer.worker.scopes import Scope

# How many example ids a difference lists.
_EXAMPLES = 5


@dataclass(frozen=True)
class Difference:
    """One way a scope's mirror differs from Graph."""

    scope: str
    table: str
    kind: str  # missing | extra | changed | members
    ids: tuple[str, ...]
    detail: str = ""

    def __str__(self) -> str:
        shown = ", ".join(self.ids[:_EXAMPLES]) + (
            f" (+{len(self.ids) - _EXAMPLES} more)" if len(self.ids) > _EXAMPLES else ""
        )
        text = f"{self.table} [{self.scope}]: {len(self.ids)} {self.kind}: {shown}"
        return f"{text}; {self.detail}" if self.detail else text


@dataclass(frozen=True)
class ScopeTruth:
    """What a fresh enumeration of one scope returned."""

    items: dict[str, dict[str, Any]]
    members: dict[str, set[str]]


def enumerate_scope(client: GraphClient, scope: Scope) -> ScopeTruth:
    """Graph's current items of *scope*: a full round from its initial URL, removals applied."""
    items: dict[str, dict[str, Any]] = {}
    members: dict[str, set[str]] = {}
    inline = scope.strategy.inline
    if _one_item(scope):  # a declaration of one item (security/alerts/{id}): its GET is the truth
        try:
            item = storable(client.get_json(scope.initial_url))
        except NotFoundError:
            return ScopeTruth({}, {})
        return ScopeTruth({str(item["id"]): item}, {})
    source: Any = idaction.pages_for(scope, client)
    if scope.strategy.chain is not None:  # a tenant-wide list Graph has only per team or per user
        source = chain.ChainedSource(source, scope.strategy.chain, scope.initial_url)
    for page in source.iter_pages(scope.initial_url):
        listed = list(page.items)
        if scope.strategy.refetch_listed:  # the list leaves out what the GET by id expands (a call's sessions)
            listed = [whole for item in listed if (whole := _whole(client, scope, item)) is not None]
        if inline is not None:  # a channel message's replies: rows of their own, past the inline ones too
            listed = [x for item in carried.complete(client, listed, inline) for x in (item, *(item.get(inline) or ()))]
        for item in listed:
            # The mirror holds Graph's data under syncer.storable's rule (U+0000 becomes U+FFFD):
            # so does the truth it is compared with.
            item = storable(item)
            item_id = str(item.get("id"))
            soft = scope.strategy.deleted_property
            if (
                "@removed" in item
                or (scope.strategy.deleted_facet and item.get("deleted") is not None)
                or (soft is not None and item.get(soft) is not None)  # a soft-deleted Teams message
            ):
                items.pop(item_id, None)
                members.pop(item_id, None)
                continue
            # An item may come more than once in a round (large groups are split): merge.
            merged = {**items.get(item_id, {}), **item}
            merged.pop("members@delta", None)
            items[item_id] = merged
            for link in item.get("members@delta", ()) or ():
                group = members.setdefault(item_id, set())
                if "@removed" in link:
                    group.discard(str(link.get("id")))
                else:
                    group.add(str(link.get("id")))
    return ScopeTruth(items, members)


def _one_item(scope: Scope) -> bool:
    if scope.strategy.method != scopes.FETCH or scope.strategy.path != "{resource}":
        return False
    matched = resources.match_resource(scope.key)
    pattern = resources.matching_pattern(matched[0], scope.key) if matched else None
    return pattern is not None and pattern.endswith("}")


def _whole(client: GraphClient, scope: Scope, item: dict[str, Any]) -> dict[str, Any] | None:
    """*item* as its GET by id returns it, the paged property's pages joined; None when Graph no longer has it."""
    strategy = scope.strategy
    resource = f"{scope.initial_url.partition('?')[0]}/{item['id']}"
    try:
        body: dict[str, Any] = client.get_json((strategy.item_path or "{resource}").format(resource=resource))
    except NotFoundError:
        return None
    paged = strategy.item_pages
    link = body.pop(f"{paged}@odata.nextLink", None) if paged else None
    while paged and isinstance(link, str):
        page = client.get_json(link)
        body[paged] = [*body.get(paged, ()), *page.get("value", ())]
        link = page.get("@odata.nextLink")
    return body


def _live_rows(engine: Engine, scope: Scope) -> dict[str, dict[str, Any]]:
    assert scope.mirror is not None
    table = mirror.build_table(scope.mirror)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table).where(
                table.c.tenant_id == scope.tenant_id,
                table.c._scope == scope.key,
                table.c._deleted_at.is_(None),
            )
        ).mappings()
        return {str(r["id"]): dict(r) for r in rows}


def _members_rows(engine: Engine, scope: Scope, group_ids: Sequence[str]) -> dict[str, set[str]]:
    assert scope.mirror is not None
    table = mirror.build_members_table(scope.mirror)
    found: dict[str, set[str]] = {}
    with engine.connect() as connection:
        for group_id, member_id in connection.execute(
            sa.select(table.c.group_id, table.c.member_id).where(table.c.tenant_id == scope.tenant_id)
        ):
            if group_id in group_ids:
                found.setdefault(str(group_id), set()).add(str(member_id))
    return found


def owner_truth(client: GraphClient, scope: Scope) -> dict[str, str]:
    """The owner columns every row of *scope* should hold, with the ids its key only names asked of Graph
    (those Graph refuses to tell are not compared)."""
    rt = resources.BY_KEY.get(scope.strategy.key)
    if rt is None or scope.mirror is None or not scope.mirror.owners:
        return {}
    values, lookups = owners.plan(rt, scope.mirror.owners, scope.key, dict(scope.owners))
    found = {column: value for column, value in values.items() if value is not None}
    for column, path in lookups.items():
        try:
            item = client.get_json(f"{path}?$select=id")
        except (ForbiddenError, NotFoundError):
            continue
        if isinstance(item, Mapping) and isinstance(item.get("id"), str):
            found[column] = storable(item["id"])
    return found


def compare_scope(engine: Engine, client: GraphClient, scope: Scope) -> list[Difference]:
    """The differences between *scope*'s mirror rows and Graph's current state of it."""
    if scope.container or scope.mirror is None:
        return []
    truth = enumerate_scope(client, scope)
    rows = _live_rows(engine, scope)
    out: list[Difference] = []
    missing = sorted(set(truth.items) - set(rows))
    extra = sorted(set(rows) - set(truth.items))
    if missing:
        out.append(Difference(scope.key, scope.table, "missing", tuple(missing)))
    if extra:
        out.append(Difference(scope.key, scope.table, "extra", tuple(extra)))
    changed: list[str] = []
    detail = ""
    owned = owner_truth(client, scope)
    for item_id in sorted(set(truth.items) & set(rows)):
        expected = {**mirror.row_values(scope.mirror, truth.items[item_id]), **owned}
        actual = {name: rows[item_id][name] for name in expected}
        if _normalise(expected) != _normalise(actual):
            changed.append(item_id)
            if not detail:
                diffs = [
                    f"{k}: mirror {actual[k]!r}, Graph {expected[k]!r}"
                    for k in expected
                    if _normalise({k: expected[k]}) != _normalise({k: actual[k]})
                ]
                detail = f"first: {item_id}: " + "; ".join(diffs)
    if changed:
        out.append(Difference(scope.key, scope.table, "changed", tuple(changed), detail))
    if scope.members_table:
        stored = _members_rows(engine, scope, list(truth.items))
        wrong = sorted(g for g in truth.items if truth.members.get(g, set()) != stored.get(g, set()))
        if wrong:
            g = wrong[0]
            out.append(
                Difference(
                    scope.key,
                    scope.members_table,
                    "members",
                    tuple(wrong),
                    f"first: group {g}: mirror {len(stored.get(g, set()))} members, Graph {len(truth.members.get(g, set()))}",
                )
            )
    return out


def _normalise(values: Mapping[str, Any]) -> dict[str, Any]:
    # SQLite returns naive datetimes for timezone-aware columns; compare instants, not tzinfo.
    out = {}
    for key, value in values.items():
        if hasattr(value, "tzinfo") and hasattr(value, "isoformat"):
            value = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        out[key] = value
    return out


def all_scopes(engine: Engine, declared: Sequence[Scope]) -> list[Scope]:
    """The declared scopes with every container replaced by the folder scopes it has found."""
    found: list[Scope] = []
    for scope in declared:
        if scope.container:
            found += containers.children_of(engine, scope)
        else:
            found.append(scope)
    return found


def compare(
    engine: Engine, clients: Mapping[str, GraphClient], declared: Sequence[Scope]
) -> list[Difference]:
    """Every difference between the mirror and Graph over *declared* scopes (clients keyed by tenant id)."""
    out: list[Difference] = []
    for scope in all_scopes(engine, declared):
        out += compare_scope(engine, clients[scope.tenant_id], scope)
    return out


def declared(spec: Any, clients: Mapping[str, GraphClient]) -> list[Scope]:
    """The spec's scopes, fan-out resolved through Graph (clients keyed by tenant id)."""
    by_name = {t.name: clients[t.tenant_id] for t in spec.tenants if t.tenant_id in clients}
    return scopes.declared_scopes(spec, clients=by_name)
