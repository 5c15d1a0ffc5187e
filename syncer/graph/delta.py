"""Paging and delta rounds: follow Graph's links lazily, page by page, and hand back the deltaLink.

Graph pages a collection with ``@odata.nextLink`` and ends a delta round with ``@odata.deltaLink``
(notes §6.1; never both on one page, and a page may be empty yet still carry a nextLink). Links are
opaque: they are called exactly as Graph sent them, never rebuilt. Only one page is held at a
time, so a 100k-item round runs in constant memory; the caller stores each page (and, at the end,
the deltaLink in the same transaction as the last rows).

A 410 on any page (expired token, or a nextLink of a running round that expired) surfaces as
:class:`~syncer.errors.ResyncRequired` with Graph's ``Location`` when it gave one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from syncer.errors import GraphError

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a collection: its items as Graph sent them, and the link to the next page or the deltaLink."""

    items: list[dict[str, Any]]
    next_link: str | None = None
    delta_link: str | None = None
    request_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The whole page document (for ``@odata.context`` and other annotations)."""

    @property
    def last(self) -> bool:
        """Whether this page ends the round (no nextLink)."""
        return self.next_link is None


def parse_page(content: bytes, *, request_id: str | None = None) -> Page:
    """A :class:`Page` from a collection response body."""
    doc = orjson.loads(content) if content else {}
    if not isinstance(doc, dict):
        raise GraphError(
            f"expected a JSON object for a collection page, found {type(doc).__name__}", request_id=request_id
        )
    items = doc.get("value")
    if items is None:
        items = []
    elif not isinstance(items, list):
        raise GraphError(
            f"expected 'value' to be a list, found {type(items).__name__}", request_id=request_id
        )
    return Page(
        items=items,
        next_link=doc.get("@odata.nextLink"),
        delta_link=doc.get("@odata.deltaLink"),
        request_id=request_id,
        raw=doc,
    )


def iter_pages(
    client: GraphClient, url: str, *, headers: Mapping[str, str] | None = None, mailbox: str | None = None
) -> Iterator[Page]:
    """Yield the pages from *url* following nextLinks until a page has none."""
    next_url: str | None = url
    while next_url:
        response = client.request("GET", next_url, headers=headers, mailbox=mailbox)
        page = parse_page(response.content, request_id=response.request_id)
        yield page
        next_url = page.next_link


class DeltaRound:
    """One delta round: iterate it for pages; after the last page ``delta_link`` is the link to save.

    Iterable once. ``pages`` and ``items`` count what was seen; ``delta_link`` is None until the round
    completed (a round that ended on a page with neither link is a protocol error, raised as GraphError).
    """

    def __init__(
        self,
        client: GraphClient,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        mailbox: str | None = None,
    ) -> None:
        self.url = url
        self.pages = 0
        self.items = 0
        self.delta_link: str | None = None
        self._client = client
        self._headers = headers
        self._mailbox = mailbox
        self._started = False

    def __iter__(self) -> Iterator[Page]:
        if self._started:
            raise RuntimeError(
                "a DeltaRound can be iterated only once; start a new round from its delta_link"
            )
        self._started = True
        return self._run()

    def _run(self) -> Iterator[Page]:
        last: Page | None = None
        for page in iter_pages(self._client, self.url, headers=self._headers, mailbox=self._mailbox):
            self.pages += 1
            self.items += len(page.items)
            last = page
            yield page
        if last is None or last.delta_link is None:
            raise GraphError(
                f"delta round from {self.url} ended after {self.pages} pages without an @odata.deltaLink",
                request_id=last.request_id if last else None,
            )
        self.delta_link = last.delta_link

    @property
    def done(self) -> bool:
        """Whether the round reached its deltaLink."""
        return self.delta_link is not None

    def __repr__(self) -> str:
        return f"DeltaRound(pages={self.pages}, items={self.items}, done={self.done})"
