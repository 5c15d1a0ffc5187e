"""Items Graph carries inside others, cut short: the rest of a channel message's ``replies``.

``$expand=replies`` holds at most 1,000 replies of a root and then gives ``replies@odata.nextLink`` to the rest
(https://learn.microsoft.com/graph/api/channel-list-messages). A pass follows that link before the page is written,
so that every reply of a long thread becomes a row (:func:`syncer.worker.writer.inline_items` flattens them); it
runs where the pages are fetched (the prefetch thread), not while a transaction is open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol


class PageLister(Protocol):
    """What completing pages needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...


def pages(
    source: PageLister, url: str, *, headers: Mapping[str, str] | None = None, inline: str | None = None
) -> Iterator[Any]:
    """The pages of *url*, each item's *inline* list completed from its ``@odata.nextLink`` (removed once followed)."""
    for page in source.iter_pages(url, headers=headers):
        if inline is not None:
            for item in page.items:
                complete(source, item, inline)
        yield page


def complete(source: PageLister, item: dict[str, Any], inline: str) -> None:
    """Append to ``item[inline]`` every page of its ``{inline}@odata.nextLink``, then drop the link."""
    link = item.pop(f"{inline}@odata.nextLink", None)
    if not link:
        return
    found = list(item.get(inline) or ())
    seen = {str(x.get("id")) for x in found if isinstance(x, Mapping)}
    for page in source.iter_pages(str(link)):
        # Newest first: a reply posted meanwhile shifts the rest of the list by one; ids already held are skipped.
        found += [x for x in page.items if str(x.get("id")) not in seen]
        seen |= {str(x.get("id")) for x in page.items}
    item[inline] = found
