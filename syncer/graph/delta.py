"""Paging and delta rounds: follow Graph's links lazily, page by page, and hand back the deltaLink.

Graph pages a collection with ``@odata.nextLink`` and ends a delta round with ``@odata.deltaLink``
(never both on one page, and a page may be empty yet still carry a nextLink: see
https://learn.microsoft.com/en-us/graph/delta-query-overview). Links are
opaque: they are called exactly as Graph sent them, never rebuilt. Only one page is held at a
time, so a 100k-item round runs in constant memory; the caller stores each page (and, at the end,
the deltaLink in the same transaction as the last rows).

A 410 on any page (expired token, or a nextLink of a running round that expired) surfaces as
:class:`~syncer.errors.ResyncRequired` with Graph's ``Location`` when it gave one.

The pager trusts Graph's links only as far as it must: a nextLink or deltaLink that is empty or not a
string, a nextLink already followed in this run (a loop), a ``value`` item that is not an object, or
more pages than the cap stop the run with :class:`~syncer.errors.PagingError`, and a link on another
origin with :class:`~syncer.errors.ForeignOriginError` (checked before the page is handed over, so a
foreign deltaLink is never stored either). Without these a loop pages forever, and an empty link
ends a round early with a cursor that makes every later round end at once with nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from syncer.errors import ForeignOriginError, GraphError, PagingError, mask_secrets

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


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def link_problem(link: object) -> str | None:
    """What is wrong with *link* as a link to call (None: nothing). Never quotes the link: it may carry a token."""
    if not isinstance(link, str):
        return f"not a string ({type(link).__name__})"
    if not link.strip():
        return "empty"
    if link != link.strip() or _CONTROL.search(link):
        return "has spaces or control characters around or in it"
    return None


def _link(doc: dict[str, Any], name: str, request_id: str | None) -> str | None:
    if name not in doc or doc[name] is None:
        return None
    link = doc[name]
    problem = link_problem(link)
    if problem is not None:
        raise PagingError(f"Graph's {name} is {problem}", request_id=request_id)
    return str(link)


def parse_page(content: bytes, *, request_id: str | None = None) -> Page:
    """A :class:`Page` from a collection response body (PagingError for a bad link or a non-object item)."""
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
    for index, item in enumerate(items):
        if type(item) is not dict:
            raise PagingError(
                f"expected every item of 'value' to be a JSON object, found {type(item).__name__} at index {index}",
                request_id=request_id,
            )
    return Page(
        items=items,
        next_link=_link(doc, "@odata.nextLink", request_id),
        delta_link=_link(doc, "@odata.deltaLink", request_id),
        request_id=request_id,
        raw=doc,
    )


def iter_pages(
    client: GraphClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    mailbox: str | None = None,
    max_pages: int | None = None,
) -> Iterator[Page]:
    """Yield the pages from *url* following nextLinks until a page has none.

    At most *max_pages* pages (default: the client's ``max_pages``); PagingError past it, on a nextLink
    followed before, or on a bad link; ForeignOriginError for a link outside the client's origin.
    """
    problem = link_problem(url)
    if problem is not None:
        raise PagingError(f"the URL to page from is {problem}")
    cap = max_pages if max_pages is not None else client.max_pages
    # Digests rather than the links: constant-size entries, and a 16-byte collision is not a concern.
    seen = {_digest(client.url_for(url))}
    next_url = url
    pages = 0
    while True:
        if pages >= cap:
            raise PagingError(
                f"stopped after {pages} pages: more than the cap of {cap} (a round that never ends?)",
            )
        response = client.request("GET", next_url, headers=headers, mailbox=mailbox)
        pages += 1
        page = parse_page(response.content, request_id=response.request_id)
        for name, link in (("@odata.nextLink", page.next_link), ("@odata.deltaLink", page.delta_link)):
            if link is not None:
                _check_origin(client, name, link, page.request_id)
        if page.next_link is None:
            yield page
            return
        digest = _digest(page.next_link)
        if digest in seen:
            raise PagingError(
                f"Graph's @odata.nextLink on page {pages} was already followed in this round (a loop)",
                request_id=page.request_id,
            )
        seen.add(digest)
        yield page
        next_url = page.next_link


def _check_origin(client: GraphClient, name: str, link: str, request_id: str | None) -> None:
    """ForeignOriginError now, before the page (and so its link) is handed over to be followed or stored."""
    try:
        client.url_for(link)
    except ForeignOriginError as error:
        raise ForeignOriginError(
            f"Graph's {name} is not followed: {error.graph_message}", handed=name, request_id=request_id
        ) from error


def _digest(link: str) -> bytes:
    return hashlib.blake2b(link.encode(), digest_size=16).digest()


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
        max_pages: int | None = None,
    ) -> None:
        self.url = url
        self.pages = 0
        self.items = 0
        self.delta_link: str | None = None
        self._client = client
        self._headers = headers
        self._mailbox = mailbox
        self._max_pages = max_pages
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
        pages = iter_pages(
            self._client, self.url, headers=self._headers, mailbox=self._mailbox, max_pages=self._max_pages
        )
        for page in pages:
            self.pages += 1
            self.items += len(page.items)
            last = page
            yield page
        if last is None or last.delta_link is None:
            raise PagingError(
                f"delta round from {mask_secrets(self.url)} ended after {self.pages} pages without an @odata.deltaLink",
                request_id=last.request_id if last else None,
            )
        self.delta_link = last.delta_link

    @property
    def done(self) -> bool:
        """Whether the round reached its deltaLink."""
        return self.delta_link is not None

    def __repr__(self) -> str:
        return f"DeltaRound(pages={self.pages}, items={self.items}, done={self.done})"
