"""Collections Graph lists only through an action that takes ids: presence.

Graph has no list of presences: a subscription names its users (``communications/presences/{id}`` or
``communications/presences?$filter=id in ('a','b')``), and their current presences are read with
``POST /communications/getPresencesByUserId`` and at most 650 ids a call
(https://learn.microsoft.com/graph/api/cloudcommunications-getpresencesbyuserid). A presence scope's URL is the
declared resource; :func:`pages_for` wraps the Graph client so that a pass (and ``syncer verify``) reading that URL
gets one page of the users' presences, through the action. Notified changes are GETs by id
(:mod:`syncer.worker.fetch`), like any scope without a delta.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from syncer import resources
from syncer.graph.delta import Page
from syncer.worker.scopes import Scope

__all__ = ["MAX_IDS", "ids_of", "pages_for"]

MAX_IDS = resources.PRESENCE_MAX_IDS


class ActionClient(Protocol):
    """What the wrapper needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

    def get_json(self, url_or_path: str) -> Any: ...

    def request(self, method: str, url_or_path: str, *, json: Any = None, idempotent: bool | None = None) -> Any: ...


def ids_of(resource: str) -> list[str]:
    """The user ids a presence resource names, in order (an empty list when it names none)."""
    return resources.presence_ids(resource) or []


class _PresencePages:
    """A page source whose pages are the presences of the users a resource names."""

    def __init__(self, client: ActionClient, action: str) -> None:
        self._client = client
        self._action = action

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Page]:
        ids = list(dict.fromkeys(ids_of(url_or_path)))
        items: list[dict[str, Any]] = []
        for start in range(0, len(ids), MAX_IDS):
            # A read: repeating it is harmless, so the client may retry it like a GET.
            body = self._client.request("POST", self._action, json={"ids": ids[start:start + MAX_IDS]},
                                        idempotent=True).json()
            items += [v for v in body.get("value") or () if isinstance(v, dict)]
        yield Page(items=items)

    def get_json(self, url_or_path: str) -> Any:
        return self._client.get_json(url_or_path)


def pages_for(scope: Scope, client: Any) -> Any:
    """*client*, or for a scope read through an ids action a wrapper whose ``iter_pages`` calls the action."""
    action = scope.strategy.ids_action
    return client if action is None else _PresencePages(client, action)
