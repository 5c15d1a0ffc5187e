"""Tenant-wide lists that Graph only gives per team or per user, read as one round.

``teams/getAllMessages`` and ``chats/getAllMessages`` are subscription resources: nothing lists them. Graph does list
every message of one team's channels (``GET /teams/{id}/channels/getAllMessages``, roots and replies,
https://learn.microsoft.com/en-us/graph/api/channel-getallmessages) and of one user's chats
(``GET /users/{id}/chats/getAllMessages``, https://learn.microsoft.com/en-us/graph/api/chats-getallmessages). A
:class:`ChainedSource` walks the teams (or users) and each one's list in turn, and presents them as one list: the last
page of each member links to the first request of the next, so that a round interrupted anywhere resumes there (a
link names its member, which says where the walk stands). A chat message that several users see comes once per user:
the rows are upserts of one scope, so it is one row, removed only when no user's list has it any more.

The same walk lists the other tenant-wide Teams resources Graph only lists in parts: ``chats`` (each user's chats,
https://learn.microsoft.com/en-us/graph/api/chat-list: ``GET /chats`` is delegated only), ``teams/getAllChannels``
(each team's channels), ``teams/getAllMembers`` (each team's members), ``chats/getAllMembers`` (each chat's members,
the chats themselves walked per user: a chain of chains) and a team's ``channels/getAllMembers`` (the members of each
of its private and shared channels).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from syncer.errors import NotFoundError
from syncer.graph.delta import Page

__all__ = ["Chain", "ChainedSource"]


class PageLister(Protocol):
    """What the walk needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

    def get_json(self, url_or_path: str) -> Any: ...


@dataclass(frozen=True)
class Chain:
    """A list made of one list per member."""

    members: str | Chain
    """The list of members, ids only (``teams?$select=id``), or a chain whose items are the members (the chats of
    every user); a member listed twice (a chat under each of its users) is walked once."""
    path: str
    """Each member's list, ``{id}`` filled with the member's id (``teams/{id}/channels/getAllMessages``)."""
    skip: tuple[tuple[str, str], ...] = ()
    """Members whose listed property has this value are not walked (a team's standard channels: their members are the
    team's), filtered here rather than with ``$filter``, which Graph documents for channels with ``eq`` only."""
    model: bool = True
    """Each member's list takes the declared payment model (``?model=``): Graph's metered lists do
    (https://learn.microsoft.com/en-us/graph/teams-licenses); plain lists (a team's members) refuse unknown options."""


class ChainedSource:
    """A page source over *chain*, for one scope whose first request is *initial_url* (its ``model=`` is passed on)."""

    def __init__(self, source: PageLister, chain: Chain, initial_url: str) -> None:
        self.source = source
        self.chain = chain
        self.initial_url = initial_url
        model = dict(parse_qsl(urlsplit(initial_url).query)).get("model") if chain.model else None
        self.query = f"?model={quote(model)}" if model else ""
        self._member = re.compile(re.escape(chain.path).replace(re.escape("{id}"), "([^/?]+)"), re.IGNORECASE)

    def get_json(self, url_or_path: str) -> Any:
        """One GET, as the source does it (a pass's source must offer it; the walk itself only lists)."""
        return self.source.get_json(url_or_path)

    def first_url(self, member: str) -> str:
        """The first request of *member*'s list."""
        return self.chain.path.replace("{id}", quote(member, safe="@:")) + self.query

    def member_of(self, url: str) -> str | None:
        """The member whose list *url* (a first request or one of its nextLinks) reads; None for the chain's start."""
        found = self._member.search(unquote(urlsplit(url).path))
        return found.group(1) if found else None

    def iter_pages(self, url: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Page]:
        """The pages from *url* (the chain's start, or a link one of its pages gave) to the end of the last member."""
        members = self._members()
        at = self.member_of(url) if url != self.initial_url else None
        lowered = [m.lower() for m in members]
        if at is not None and at.lower() not in lowered:
            at = None  # the member went away since the link was made: the walk starts again from the first one
        start = lowered.index(at.lower()) if at is not None else 0
        held: Page | None = None  # the last page of the member before: its link waits for the next member's start
        for index in range(start, len(members)):
            first = self.first_url(members[index])
            request = url if at is not None and index == start else first
            try:
                for page in self.source.iter_pages(request, headers=headers):
                    if held is not None:
                        yield held if held.next_link is not None else dataclasses.replace(held, next_link=first)
                    held = page
            except NotFoundError:
                if at is not None and index == start:
                    raise  # the link the round resumes from: the pass decides (a lost link)
                continue  # the team or user went away between the two lists
        yield held if held is not None else Page(items=[])

    def _members(self) -> list[str]:
        """The members' ids in the order listed, each once (ids compared case-insensitively)."""
        if isinstance(self.chain.members, Chain):
            inner = ChainedSource(self.source, self.chain.members, self.chain.members.path)
            pages: Iterator[Any] = inner.iter_pages(inner.initial_url)
        else:
            pages = self.source.iter_pages(self.chain.members)
        found: dict[str, str] = {}
        for page in pages:
            for item in page.items:
                if "id" in item and not any(item.get(name) == value for name, value in self.chain.skip):
                    found.setdefault(str(item["id"]).lower(), str(item["id"]))
        return list(found.values())
