"""Declarations Graph names in several ways, resolved to the one path it subscribes and deltas on.

A SharePoint site has a canonical id, ``{hostname},{site-collection-guid},{web-guid}``, and several other names:
``root``, the hostname, ``{hostname}:/sites/ops:`` (a server-relative path), a group's ``groups/{id}/sites/root``
(https://learn.microsoft.com/en-us/graph/api/site-get, https://learn.microsoft.com/en-us/graph/api/site-getbypath);
a list is named by its GUID or its display name (https://learn.microsoft.com/en-us/graph/api/list-get). Graph's
notifications and delta links use the canonical ids, so syncer subscribes, keys its scopes and fills ``site_id`` and
``list_id`` with them, whatever form the spec wrote.

A group's or a site's document library (``groups/{id}/drive/root``, ``sites/{id}/drive/root``) is a drive whose id
must be asked for (https://learn.microsoft.com/en-us/graph/api/drive-get): Graph documents subscriptions on
``drives/{id}/root`` and ``users/{id}/drive/root`` only
(https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions), so the library is subscribed and
synced as ``drives/{id}/root``, and its rows carry the drive, group or site they belong to.

Reconcile (:mod:`syncer.reconcile.fanout`) and the worker (:mod:`syncer.worker.scopes`) both resolve, each with
its own Graph client, so that the subscription and the scope agree on the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from syncer import resources
from syncer.errors import ConfigError

if TYPE_CHECKING:
    from syncer.spec import Subscription

RESOLVED_PATTERNS = frozenset({
    "sites/{site}/lists/{list}",
    "groups/{group}/sites/root/lists/{list}",
    "groups/{group}/drive/root",
    "sites/{site}/drive/root",
})
"""The declared patterns that name their target indirectly."""


class Getter(Protocol):
    """What resolving needs from the Graph client (GraphClient satisfies it)."""

    def get_json(self, url_or_path: str) -> Any: ...


@dataclass(frozen=True)
class Resolved:
    """Where a declaration points once resolved: the path Graph subscribes on and the ids its rows carry."""

    resource: str
    """The canonical path (``sites/{id}/lists/{guid}``, ``drives/{id}/root``): the subscription's resource and the scope key."""
    owners: tuple[tuple[str, str], ...]
    """Placeholder values its rows carry as path-owner columns (``site``, ``list``, ``drive``, ``group``)."""


def needs_resolution(subscription: Subscription) -> bool:
    """Whether *subscription* names its target in a form that must be resolved through Graph."""
    return resources.matching_pattern(subscription.resource_type, subscription.resource) in RESOLVED_PATTERNS


def resolve(subscription: Subscription, client: Getter | None) -> Resolved:
    """The canonical path of *subscription*'s target (two GETs at most); ConfigError naming the declaration if
    no client is at hand; Graph's own error (a 404 for a site or list that does not exist) otherwise."""
    if client is None:
        raise ConfigError(f"subscription {subscription.name!r}: {subscription.resource!r} needs Graph to resolve it")
    rt = subscription.resource_type
    pattern = resources.matching_pattern(rt, subscription.resource)
    matched = resources.match_resource(subscription.resource)
    params = dict(matched[1]) if matched else {}
    if pattern == "groups/{group}/drive/root":
        drive = _id(client, f"groups/{quote(params['group'], safe='')}/drive?$select=id")
        return Resolved(f"drives/{drive}/root", (("drive", drive), ("group", params["group"])))
    site = _site(client, params)
    if pattern == "sites/{site}/drive/root":
        drive = _id(client, f"sites/{site}/drive?$select=id")
        return Resolved(f"drives/{drive}/root", (("drive", drive), ("site", site)))
    if pattern in ("sites/{site}/lists/{list}", "groups/{group}/sites/root/lists/{list}"):
        list_id = _id(client, f"sites/{site}/lists/{quote(params['list'], safe='')}?$select=id")
        return Resolved(f"sites/{site}/lists/{list_id}", (("site", site), ("list", list_id)))
    raise ConfigError(f"subscription {subscription.name!r}: {subscription.resource!r} is not resolved by syncer")


def _site(client: Getter, params: dict[str, str]) -> str:
    """The canonical id of the site *params* name (``{site}`` in any form, or a group's team site)."""
    if "group" in params:
        return _id(client, f"groups/{quote(params['group'], safe='')}/sites/root?$select=id")
    # The server-relative form is one placeholder value (syncer.resources keeps it whole): its "/" and ":" stay.
    return _id(client, f"sites/{quote(params['site'].rstrip(':'), safe='/:,')}?$select=id")


def _id(client: Getter, path: str) -> str:
    body = client.get_json(path)
    found = body.get("id") if isinstance(body, dict) else None
    if not isinstance(found, str) or not found:
        raise ConfigError(f"GET {path} returned no id")
    return found
