"""JSON batching (https://learn.microsoft.com/en-us/graph/json-batching): envelope checks, dependsOn/424, per-item throttling, request log."""

from __future__ import annotations

from emulator_fixtures import EmulatorClient


def test_batch_runs_items_and_dependencies(graph: EmulatorClient) -> None:
    user = graph.create_user("zoe")
    body = {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{user['id']}?$select=id,displayName"},
        {"id": "2", "method": "PATCH", "url": f"/users/{user['id']}", "headers": {"Content-Type": "application/json"},
         "body": {"jobTitle": "Pilot"}},
        {"id": "3", "dependsOn": ["2"], "method": "GET", "url": f"/users/{user['id']}?$select=jobTitle"},
        {"id": "4", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000"},
        {"id": "5", "dependsOn": ["4"], "method": "GET", "url": "/users"},
    ]}
    r = graph.post("$batch", json=body)
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["displayName"] == "Zoe"
    assert by_id["2"]["status"] == 204 and "body" not in by_id["2"]
    assert by_id["3"]["body"]["jobTitle"] == "Pilot"
    assert by_id["4"]["status"] == 404 and by_id["4"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert by_id["5"]["status"] == 424
    log = graph.admin("GET", "requests").json()["requests"]
    envelope = [e for e in log if e["path"].startswith("/v1.0/$batch")]
    assert len(envelope) == 1 and not envelope[0]["batch"]
    assert sum(1 for e in log if e["batch"]) == 4  # item 5 never ran


def test_batch_envelope_errors(graph: EmulatorClient) -> None:
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]}
    assert graph.post("$batch", json=too_many).status_code == 400
    dup = {"requests": [{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/users"}]}
    assert graph.post("$batch", json=dup).status_code == 400
    no_ct = {"requests": [{"id": "1", "method": "POST", "url": "/users", "body": {}}]}
    assert graph.post("$batch", json=no_ct).status_code == 400
    absolute = {"requests": [{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"}]}
    assert graph.post("$batch", json=absolute).status_code == 400
    r = graph.post("$batch", data=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
    assert graph.post("$batch", json={"requests": []}).status_code == 400
    assert graph.post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/users"}]},
                      auth=False).status_code == 401


def test_throttled_item_is_429_inside_a_200_envelope(graph: EmulatorClient) -> None:
    graph.admin("POST", "faults", json={"type": "status", "status": 429, "path": "/v1.0/groups$", "retryAfter": 7})
    body = {"requests": [{"id": "1", "method": "GET", "url": "/users"}, {"id": "2", "method": "GET", "url": "/groups"}]}
    r = graph.post("$batch", json=body)
    assert r.status_code == 200
    by_id = {x["id"]: x for x in r.json()["responses"]}
    assert by_id["1"]["status"] == 200
    assert by_id["2"]["status"] == 429 and by_id["2"]["headers"]["Retry-After"] == "7"
    assert by_id["2"]["body"]["error"]["code"] == "TooManyRequests"
