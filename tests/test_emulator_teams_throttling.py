"""The Teams throttling profile (https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits) as
emulator fault rules, over real HTTPS with the emulator clock frozen."""

from __future__ import annotations

from urllib.parse import quote

from emulator_fixtures import EmulatorClient
from test_emulator_teams import _channel, _seed, _team


def test_four_requests_per_second_per_team(graph: EmulatorClient) -> None:
    users = _seed(graph)
    first, second = _team(graph, users[0], name="A"), _team(graph, users[0], name="B")
    graph.admin("POST", "clock", json={"freeze": True})
    r = graph.admin("POST", "faults", json={"type": "profile", "name": "teams"})
    assert r.status_code == 201 and len(r.json()["rules"]) == 10
    assert all(rule["profile"] == "teams" for rule in r.json()["rules"])
    assert [graph.get(f"teams/{first}").status_code for _ in range(4)] == [200] * 4
    throttled = graph.get(f"teams/{first}/channels")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert graph.get(f"teams/{second}").status_code == 200  # another team has its own budget
    graph.admin("POST", "clock", json={"advance": 1})
    assert graph.get(f"teams/{first}").status_code == 200


def test_message_reads_per_app_and_tenant_scaled(graph: EmulatorClient) -> None:
    users = _seed(graph)
    teams = [_team(graph, users[0], name=f"T{i}") for i in range(3)]
    paths = [f"teams/{t}/channels/{quote(_channel(graph, t)['id'], safe='')}/messages" for t in teams]
    graph.admin("POST", "clock", json={"freeze": True})
    assert graph.admin("POST", "faults", json={"type": "profile", "name": "teams", "scale": 0.1}).status_code == 201
    # GET channel messages: 20 rps x 0.1 = 2 per second across teams
    assert [graph.get(p).status_code for p in paths] == [200, 200, 429]
    assert graph.get("users").status_code == 200  # other families are untouched


def test_bad_profiles_are_refused(graph: EmulatorClient) -> None:
    assert graph.admin("POST", "faults", json={"type": "profile", "name": "nope"}).status_code == 400
    assert graph.admin("POST", "faults", json={"type": "profile", "name": "teams", "scale": 0}).status_code == 400
    assert graph.admin("POST", "faults", json={"type": "rate", "limit": 1, "scope": "app+match"}).status_code == 400
