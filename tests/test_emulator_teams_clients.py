"""Microsoft's msgraph-sdk against the emulator's Teams paths, unchanged except for URLs: it lists a channel's messages
(with a reply expanded) and creates a Teams subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from emulator_fixtures import EmulatorClient
from test_emulator_teams import _channel, _say, _seed, _team
from webhook_receiver import Receiver

pytest.importorskip("msgraph", reason="msgraph-sdk is in the `test` extra")

from test_emulator_clients import _client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def test_msgraph_sdk_lists_channel_messages_and_subscribes(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                           receiver: Receiver) -> None:
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.subscription import Subscription
    from msgraph.generated.teams.item.channels.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )

    users = _seed(graph)
    team = _team(graph, users[0], users[1])
    channel = _channel(graph, team)["id"]
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    roots = [_say(graph, base, users[0]["id"], f"m{i}") for i in range(3)]
    reply = _say(graph, f"{base}/{roots[0]['id']}/replies", users[1]["id"], "r")

    async def run() -> tuple[list[Any], Any]:
        client = _client(emulator_info)
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=2, expand=["replies"])
        config = RequestConfiguration(query_parameters=query)
        messages = client.teams.by_team_id(team).channels.by_channel_id(channel).messages
        page = await messages.get(request_configuration=config)
        assert page is not None and page.value is not None
        found = list(page.value)
        while page.odata_next_link:
            page = await messages.with_url(page.odata_next_link).get()
            assert page is not None and page.value is not None
            found.extend(page.value)
        created = await client.subscriptions.post(Subscription(
            change_type="created,updated,deleted", notification_url=receiver.url("hook"),
            lifecycle_notification_url=receiver.url("lifecycle"),
            resource=f"/teams/{team}/channels/{channel}/messages",
            expiration_date_time=datetime.now(UTC) + timedelta(hours=48), client_state="sdk"))
        return found, created

    found, created = asyncio.run(run())
    assert sorted(m.id for m in found) == sorted(r["id"] for r in roots)
    first = next(m for m in found if m.id == roots[0]["id"])
    assert [r.id for r in first.replies] == [reply["id"]]
    assert first.from_.user.id == users[0]["id"]
    assert created is not None and created.id and created.resource == f"/teams/{team}/channels/{channel}/messages"
    _say(graph, base, users[1]["id"], "after")
    items = receiver.wait_items(1)
    assert items[0]["subscriptionId"] == created.id and items[0]["changeType"] == "created"
