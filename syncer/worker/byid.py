"""One item by id, whole: the GET a notification (or a list that leaves parts out) turns into.

Graph answers some GETs with part of the item paged: a call record's sessions come with
``$expand=sessions($expand=segments)``, 60 to a page, the rest behind ``sessions@odata.nextLink``
(https://learn.microsoft.com/en-us/graph/api/callrecords-callrecord-get). A mirror row holds the whole item,
so every page is followed and the pages joined before the row is written. A 404 means the item is gone
(deleted, or past Graph's retention, as a call record after 30 days): a removal, not an error.

Used by :mod:`syncer.worker.fetch` (notified items) and by a pass whose list lacks what the GET by id
brings (:class:`WholeItems`, strategy ``refetch_listed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from syncer import mirror, resources
from syncer.errors import NotFoundError
from syncer.graph.delta import Page

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncer.worker.scopes import Scope
    from syncer.worker.sync import PageSource

__all__ = ["OneItem", "WholeItems", "get_item", "names_one_item", "removed"]


def removed(item_id: str) -> dict[str, Any]:
    """How a GET by id that found nothing is written: the item removed (reason ``deleted``)."""
    return {"id": item_id, "@removed": {"reason": "deleted"}}


def names_one_item(scope: Scope) -> bool:
    """Whether *scope* is a no-delta declaration of one item (``security/alerts/{id}``, ``teams/{id}``): its "list"
    is the GET of that item, whose answer is the item itself, not a page of ``value``."""
    if scope.strategy.method != resources.FETCH or scope.strategy.path != "{resource}" or scope.container:
        return False
    matched = resources.match_resource(scope.key)
    pattern = resources.matching_pattern(matched[0], scope.key) if matched else None
    return pattern is not None and pattern.rsplit("/", 1)[-1].startswith("{")


def get_item(source: PageSource, scope: Scope, resource: str) -> Mapping[str, Any] | None:
    """The item at *resource* (a path Graph names it by) as the scope's strategy GETs it, its paged part joined;
    a removal when Graph answers 404; None when the answer is not an item."""
    strategy = scope.strategy
    path = strategy.item_path.format(resource=resource) if strategy.item_path else resource
    try:
        body = source.get_json(path)
        if not isinstance(body, dict) or "id" not in body:
            return None
        paged = strategy.item_pages
        link = body.pop(f"{paged}@odata.nextLink", None) if paged else None
        if paged and isinstance(link, str):
            parts = list(body.get(paged) or ())
            for page in source.iter_pages(link):
                parts += page.items
            body[paged] = parts
    except NotFoundError:
        return removed(resource.rstrip("/").rsplit("/", 1)[-1].partition("?")[0])
    return body


class WholeItems:
    """A page source whose list pages carry each item as :func:`get_item` returns it (a ``PageSource``).

    For a list that leaves out what the item's GET expands (call records list without sessions): writing the
    listed item would overwrite the whole row with a part of it. An item whose listed properties all equal
    the stored row's (a call record's ``version`` and ``lastModifiedDateTime`` among them) has not changed:
    its stored item is written again as it is, without a GET, so that a list pass of 30 days of calls costs
    GETs only for the records that are new or changed.
    """

    def __init__(self, source: PageSource, scope: Scope, engine: Engine | None = None) -> None:
        self.source = source
        self.scope = scope
        self.engine = engine
        self.collection = scope.initial_url.partition("?")[0].rstrip("/")

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]:
        for page in self.source.iter_pages(url_or_path, headers=headers):
            stored = self._stored([str(i["id"]) for i in page.items if "id" in i and "@removed" not in i])
            items = []
            for listed in page.items:
                if "@removed" in listed or "id" not in listed:
                    items.append(listed)
                    continue
                known = stored.get(str(listed["id"]))
                if known is not None and all(known.get(k) == v for k, v in listed.items() if not k.startswith("@")):
                    items.append(known)
                    continue
                whole = get_item(self.source, self.scope, f"{self.collection}/{listed['id']}")
                items.append(whole if whole is not None else listed)
            yield replace(page, items=items)

    def get_json(self, url_or_path: str) -> Any:
        return self.source.get_json(url_or_path)

    def _stored(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The live rows' items among *ids* (``_raw``), as the scope last wrote them."""
        if self.engine is None or self.scope.mirror is None or not ids:
            return {}
        table = mirror.build_table(self.scope.mirror)
        query = sa.select(table.c.id, table.c._raw).where(
            table.c.tenant_id == self.scope.tenant_id, table.c._scope == self.scope.key,
            table.c._deleted_at.is_(None), table.c.id.in_(list(ids)),
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return {str(i): raw if isinstance(raw, dict) else orjson.loads(raw) for i, raw in rows}


class OneItem:
    """A page source for a scope that names one item: its list is one page holding the item (or its removal,
    when Graph answers 404), so a full round keeps the row instead of sweeping it as unlisted."""

    def __init__(self, source: PageSource, scope: Scope) -> None:
        self.source = source
        self.scope = scope

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]:
        item = get_item(self.source, self.scope, url_or_path.partition("?")[0])
        yield Page(items=[dict(item)] if item is not None else [])

    def get_json(self, url_or_path: str) -> Any:
        return self.source.get_json(url_or_path)
