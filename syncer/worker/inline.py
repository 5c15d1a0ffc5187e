"""Items that carry others, and the rest of a carried list Graph pages apart.

A channel message asked with ``$expand=replies`` carries up to 1,000 replies inline, then
``replies@odata.nextLink``: the rest of the root's replies list, paged like any list
(https://learn.microsoft.com/en-us/graph/api/channel-list-messages). A pass that wrote only the inline ones would
lose the others, and a full round would sweep their rows; so before a page is written, each carried list is read
to its end and the page carries it whole (:func:`syncer.worker.writer.inline_items` then makes each a row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["complete", "has_more"]


class PageLister(Protocol):
    """What reading the rest of a list needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...


def has_more(items: Sequence[Mapping[str, Any]], inline: str) -> bool:
    """Whether an item of *items* carries only the start of its *inline* list."""
    link = f"{inline}@odata.nextLink"
    return any(item.get(link) for item in items)


def complete(source: PageLister, items: Sequence[Mapping[str, Any]], inline: str) -> list[Mapping[str, Any]]:
    """*items*, each carried *inline* list followed to its end (the nextLink gone once it is read)."""
    link = f"{inline}@odata.nextLink"
    out: list[Mapping[str, Any]] = []
    for item in items:
        next_link = item.get(link)
        if not next_link:
            out.append(item)
            continue
        carried = list(item.get(inline) or ())
        for page in source.iter_pages(str(next_link)):
            carried += [child for child in page.items if isinstance(child, Mapping)]
        out.append({**{k: v for k, v in item.items() if k != link}, inline: carried})
    return out
