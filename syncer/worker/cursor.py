"""A list read with a time cursor, where Graph has no delta query: the messages of one chat.

``GET /chats/{id}/messages`` sorts by ``lastModifiedDateTime desc`` and filters on ``lastModifiedDateTime gt``, the
filter being ignored unless the sort names the same property
(https://learn.microsoft.com/en-us/graph/api/chat-list-messages). A round lists newest first; at its end the pass
stores, in place of a deltaLink, the same list filtered past the newest item the round saw: the next round brings
what was created, edited or soft-deleted since (a soft delete moves ``lastModifiedDateTime``). A full round (the
first, ``--full``, lost state) lists everything and sweeps, as for any list.

Why "the newest item seen" is safe: the pages are read newest first, so an item changed while the round runs gets a
time later than everything read before, and the next round brings it. The cursor is moved back by an overlap, so that
items stamped within the same instant, or made visible a little after their time, are listed again rather than
missed: the rows are upserts, a repeat costs nothing but the read.

Pure functions; the pass (:mod:`syncer.worker.sync`) calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from syncer.graph.times import parse_datetime

__all__ = ["OVERLAP", "cursor_link", "newest", "next_start"]

OVERLAP = timedelta(seconds=5)
"""How far back of the newest item seen the next round starts (items listed twice, none missed)."""


def newest(items: Sequence[Mapping[str, Any]], prop: str, *, since: datetime | None = None) -> datetime | None:
    """The latest *prop* among *items* (and *since*), None when there is none; unreadable times are skipped."""
    found = since
    for item in items:
        value = item.get(prop)
        if not isinstance(value, str):
            continue
        try:
            at = parse_datetime(value)
        except ValueError:
            continue
        if found is None or at > found:
            found = at
    return found


def cursor_link(initial_url: str, prop: str, at: datetime, *, overlap: timedelta = OVERLAP) -> str:
    """*initial_url* (which sorts by *prop*, newest first) filtered to what changed after *at* less *overlap*."""
    bound = (at - overlap).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    separator = "&" if "?" in initial_url else "?"
    return f"{initial_url}{separator}$filter={quote(f'{prop} gt {bound}', safe='')}"


def next_start(initial_url: str, prop: str, started_from: str | None, newest_seen: datetime | None) -> str:
    """Where the round after this one starts: past the newest item this round saw; with none seen, where this round
    started (*started_from*, an incremental round's link) or, after a full round of nothing, the whole list."""
    if newest_seen is None:
        return started_from or initial_url
    return cursor_link(initial_url, prop, newest_seen)
