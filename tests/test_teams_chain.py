"""syncer.worker.chain: a list Graph gives per team (or user), walked as one list whose links resume anywhere."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from syncer.errors import NotFoundError
from syncer.graph.delta import Page
from syncer.worker.chain import Chain, ChainedSource

CHAIN = Chain("teams?$select=id", "teams/{id}/channels/getAllMessages")


class Lists:
    """Teams t1..t3; t1 has two pages, t2 one (or 404), t3 one."""

    def __init__(self, *, missing: str | None = None) -> None:
        self.missing = missing
        self.requests: list[str] = []

    def iter_pages(self, url: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Page]:
        self.requests.append(url)
        if url == "teams?$select=id":
            yield Page(items=[{"id": "t1"}, {"id": "t2"}, {"id": "t3"}])
            return
        team = url.split("teams/", 1)[1].split("/", 1)[0]
        if team == self.missing:
            raise NotFoundError("no such team", status=404)
        if team == "t1" and "skip" not in url:
            yield Page(items=[{"id": "m1"}], next_link="https://graph/v1.0/teams/t1/channels/getAllMessages?skip=1")
        yield Page(items=[{"id": "m-t1-2" if team == "t1" else f"m-{team}"}])

    def get_json(self, url: str) -> Any:
        raise AssertionError(url)


def _walk(source: ChainedSource, url: str) -> list[tuple[list[str], str | None]]:
    return [([str(i["id"]) for i in p.items], p.next_link) for p in source.iter_pages(url)]


def test_the_walk_links_each_members_last_page_to_the_next_member() -> None:
    source = ChainedSource(Lists(), CHAIN, "teams/getAllMessages?model=A")
    assert _walk(source, "teams/getAllMessages?model=A") == [
        (["m1"], "https://graph/v1.0/teams/t1/channels/getAllMessages?skip=1"),
        (["m-t1-2"], "teams/t2/channels/getAllMessages?model=A"),
        (["m-t2"], "teams/t3/channels/getAllMessages?model=A"),
        (["m-t3"], None),
    ]


def test_a_link_resumes_the_walk_where_it_was() -> None:
    lists = Lists()
    source = ChainedSource(lists, CHAIN, "teams/getAllMessages")
    assert _walk(source, "https://graph/v1.0/teams/t1/channels/getAllMessages?skip=1") == [
        (["m-t1-2"], "teams/t2/channels/getAllMessages"), (["m-t2"], "teams/t3/channels/getAllMessages"), (["m-t3"], None),
    ]
    assert _walk(source, "teams/t3/channels/getAllMessages") == [(["m-t3"], None)]
    # A team gone since its link was stored: the walk starts again from the first team.
    assert _walk(source, "teams/t9/channels/getAllMessages")[0] == (["m1"], "https://graph/v1.0/teams/t1/channels/getAllMessages?skip=1")


def test_a_team_gone_during_the_walk_is_skipped_but_a_gone_link_is_the_passs_problem() -> None:
    source = ChainedSource(Lists(missing="t2"), CHAIN, "teams/getAllMessages")
    assert [ids for ids, _ in _walk(source, "teams/getAllMessages")] == [["m1"], ["m-t1-2"], ["m-t3"]]
    assert _walk(source, "teams/getAllMessages")[1][1] == "teams/t3/channels/getAllMessages"
    with pytest.raises(NotFoundError):
        _walk(source, "teams/t2/channels/getAllMessages")


class Chats:
    """Users u1, u2 sharing chat c1 (u2 also in c2); each chat's members; channels of a team, one standard."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def iter_pages(self, url: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Page]:
        self.requests.append(url)
        lists = {
            "users?$select=id": [{"id": "u1"}, {"id": "u2"}],
            "users/u1/chats?$select=id": [{"id": "c1"}],
            "users/u2/chats?$select=id": [{"id": "C1"}, {"id": "c2"}],
            "chats/c1/members": [{"id": "m1"}, {"id": "m2"}],
            "chats/c2/members": [{"id": "m3"}],
            "channels": [{"id": "s", "membershipType": "standard"}, {"id": "p", "membershipType": "private"}],
            "channels/p/members": [{"id": "m4"}],
        }
        yield Page(items=lists[url])

    def get_json(self, url: str) -> Any:
        raise AssertionError(url)


def test_a_chain_of_chains_walks_each_member_once() -> None:
    chats = Chain(Chain("users?$select=id", "users/{id}/chats?$select=id", model=False), "chats/{id}/members", model=False)
    lists = Chats()
    source = ChainedSource(lists, chats, "chats/getAllMembers?model=B")
    assert [ids for ids, _ in _walk(source, "chats/getAllMembers?model=B")] == [["m1", "m2"], ["m3"]]
    assert "chats/c2/members" in lists.requests and not any("model" in r for r in lists.requests)


def test_members_a_chain_skips_are_not_walked() -> None:
    channels = Chain("channels", "channels/{id}/members", skip=(("membershipType", "standard"),), model=False)
    lists = Chats()
    assert [ids for ids, _ in _walk(ChainedSource(lists, channels, "x/getAllMembers"), "x/getAllMembers")] == [["m4"]]
    assert "channels/s/members" not in lists.requests
