"""Owner columns from the scope: which rows belong to which user, folder, list or drive, as plain columns.

A mailbox's messages do not say whose mailbox they are in, nor a drive item which drive it is in when
``parentReference`` was not selected: the scope a row was synced in does (``_scope``:
``users/alice@contoso.com/mailFolders/inbox/messages``). The catalogue (:class:`syncer.resources.ScopeOwner`)
says per resource type which columns come from the scope and how; this module applies those rules:

* at spec time, which owner columns a declaration's table gets (:func:`columns_for`): a rule applies when
  the declaration's path (or its delta path, whose ``{folder}`` the mailbox's folders fill) has the parameters
  of its value or of its lookup;
* for a scope, what each column holds (:func:`values_for`): a parameter that is already an id is used as is,
  and one that only names the owner (a UPN, ``inbox``) needs the owner's id looked up in Graph once per scope
  (:func:`lookups_for`; the worker asks and keeps the answer in the scope's state, :mod:`syncer.worker.lookups`).

A scope's parameters are read back from its key (:func:`scope_params`), so ``syncer db upgrade`` can fill
the columns of rows written before they existed from ``_scope`` alone.

Pure functions of the catalogue, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

from syncer import resources
from syncer.resources import ResourceType, ScopeOwner

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _needs(template: str | None) -> set[str]:
    return set(_PLACEHOLDER.findall(template or ""))


def _templates(rt: ResourceType) -> list[str]:
    """Each path form of *rt* a scope key takes: a declared path, or a delta path without ``/delta`` when the
    scope is one folder or list of a mailbox."""
    found: list[str] = []
    for index, pattern in enumerate(rt.patterns):
        found.append(pattern)
        delta = rt.delta_paths[index] if index < len(rt.delta_paths) else None
        if delta is not None:
            found.append(delta.removesuffix("/delta"))
    return found


def _can_value(rule: ScopeOwner, available: set[str]) -> bool:
    return rule.value is not None and _needs(rule.value) <= available


def _can_lookup(rule: ScopeOwner, available: set[str]) -> bool:
    return rule.lookup is not None and _needs(rule.lookup) <= available


def _rules(rt: ResourceType, available: set[str]) -> list[ScopeOwner]:
    """The first rule of each column that its *available* parameters can serve, by value or by lookup."""
    chosen: dict[str, ScopeOwner] = {}
    for rule in rt.scope_owners:
        if rule.column not in chosen and (_can_value(rule, available) or _can_lookup(rule, available)):
            chosen[rule.column] = rule
    return list(chosen.values())


def columns_for(rt: ResourceType, resource: str) -> tuple[str, ...]:
    """The owner columns the table of a declaration of *resource* gets (its own parameters, those its delta
    path adds, and those a fan-out fills)."""
    pattern = resources.matching_pattern(rt, resource)
    if pattern is None:
        return ()
    index = rt.patterns.index(pattern)
    delta = rt.delta_paths[index] if index < len(rt.delta_paths) else None
    available = _needs(pattern) | _needs(delta)
    return tuple(rule.column for rule in _rules(rt, available))


def scope_params(rt: ResourceType, key: str) -> dict[str, str] | None:
    """The path parameters of a scope of *rt* from its key (``users/a%40b/mailFolders/f/messages`` ->
    user and folder), or None when the key has none of *rt*'s forms."""
    path, _query = resources.split_resource(key)
    segments = path.split("/")
    if segments and segments[0].lower() == "me":
        segments = ["users", "me", *segments[1:]]
    for template in _templates(rt):
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            name = _PLACEHOLDER.fullmatch(part)
            if name is not None:
                params[name.group(1)] = unquote(segment)
            elif part.lower() != segment.lower():
                break
        else:
            return params
    return None


def _fill(template: str, params: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: params[m.group(1)], template)


def lookup_path(rule: ScopeOwner, params: Mapping[str, str]) -> str:
    """The Graph path whose ``id`` is the value of *rule* (``users/me`` is ``me``, as Graph writes it)."""
    assert rule.lookup is not None
    filled = _PLACEHOLDER.sub(lambda m: quote(params[m.group(1)], safe="@:!$'(),;="), rule.lookup)
    if filled == "users/me" or filled.startswith("users/me/"):
        filled = filled.removeprefix("users/")
    return filled


def plan(
    rt: ResourceType, columns: Iterable[str], key: str, declared: Mapping[str, str] | None = None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """For the scope *key* of a table with owner *columns*: ``(values known without Graph, {column: Graph path to
    look its id up})``. *declared* adds the parameters of the declaration the scope came from (a group library's
    ``group``, once resolved to ``drives/{id}/root``: :attr:`syncer.worker.scopes.Scope.owners`); the key's own win.
    A column in neither cannot be told from this scope (None)."""
    wanted = set(columns)
    params = {**(declared or {}), **(scope_params(rt, key) or {})}
    values: dict[str, str | None] = dict.fromkeys(wanted)
    lookups: dict[str, str] = {}
    available = set(params)
    for rule in _rules(rt, available):
        if rule.column not in wanted:
            continue
        value = _fill(rule.value, params) if _can_value(rule, available) and rule.value is not None else None
        if value is not None and (not _can_lookup(rule, available) or re.fullmatch(rule.ids, value)):
            values[rule.column] = value
        elif _can_lookup(rule, available):
            lookups[rule.column] = lookup_path(rule, params)
    return values, lookups


def values_for(
    rt: ResourceType,
    columns: Iterable[str],
    key: str,
    looked_up: Mapping[str, str] | None = None,
    declared: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """What each owner column holds for the rows of scope *key*, with the ids *looked_up* so far (by Graph path)."""
    values, lookups = plan(rt, columns, key, declared)
    for column, path in lookups.items():
        values[column] = (looked_up or {}).get(path)
    return values


def lookups_for(
    rt: ResourceType, columns: Iterable[str], key: str, declared: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{column: Graph path}`` of the ids scope *key* needs looked up."""
    return plan(rt, columns, key, declared)[1]
