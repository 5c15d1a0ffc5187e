"""JSON batching (https://learn.microsoft.com/en-us/graph/json-batching): envelope checks, dependsOn/424, per-item throttling, request log."""

from __future__ import annotations

import threading
import time

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


# --- concurrency: Graph runs independent items at once, dependsOn sequences them --------------------------


def _seeded_users(graph: EmulatorClient, count: int) -> list[str]:
    graph.admin("POST", "seed", json={"users": count, "messagesPerUser": 1, "contentUsers": count})
    return [u["id"] for u in graph.get("users?$select=id").json()["value"]][:count]


def test_independent_items_run_concurrently(graph: EmulatorClient) -> None:
    users = _seeded_users(graph, 5)
    # Items only: the envelope's path does not match, so its own latency is not counted here.
    graph.admin("POST", "faults", json={"type": "latency", "ms": 400, "path": "^/v1.0/users/"})
    body = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{u}/messages?$select=id"}
                         for i, u in enumerate(users, 1)]}
    started = time.perf_counter()
    r = graph.post("$batch", json=body)
    elapsed = time.perf_counter() - started
    assert [x["status"] for x in r.json()["responses"]] == [200] * 5
    assert [x["id"] for x in r.json()["responses"]] == ["1", "2", "3", "4", "5"]
    # One after another they would take at least 5 x 0.4 s; together a little over one latency.
    assert 0.4 <= elapsed < 1.9, elapsed


def test_depends_on_sequences_items_and_others_run_alongside(graph: EmulatorClient) -> None:
    users = _seeded_users(graph, 4)
    graph.admin("POST", "faults", json={"type": "latency", "ms": 300, "path": "^/v1.0/users/"})
    chain = [{"id": "a", "method": "GET", "url": f"/users/{users[0]}/messages?$select=id"},
             {"id": "b", "method": "GET", "url": f"/users/{users[1]}/messages?$select=id", "dependsOn": ["a"]},
             {"id": "c", "method": "GET", "url": f"/users/{users[2]}/messages?$select=id", "dependsOn": ["B"]}]
    free = [{"id": "d", "method": "GET", "url": f"/users/{users[3]}/messages?$select=id"}]
    started = time.perf_counter()
    r = graph.post("$batch", json={"requests": list(reversed(chain)) + free})
    elapsed = time.perf_counter() - started
    assert {x["id"]: x["status"] for x in r.json()["responses"]} == {"a": 200, "b": 200, "c": 200, "d": 200}
    assert elapsed >= 0.9, elapsed  # three in a row
    log = [e for e in graph.admin("GET", "requests").json()["requests"] if e["batch"]]
    by_user = {u: i for i, u in enumerate(users)}
    order = [by_user[e["path"].split("/")[3]] for e in log]
    assert [o for o in order if o != 3] == [0, 1, 2]  # a, b, c in dependency order; d anywhere


def test_a_failed_dependency_stops_its_chain_only(graph: EmulatorClient) -> None:
    users = _seeded_users(graph, 2)
    body = {"requests": [
        {"id": "1", "method": "GET", "url": "/users/00000000-0000-0000-0000-000000000000/messages"},
        {"id": "2", "method": "GET", "url": f"/users/{users[0]}/messages?$select=id", "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": f"/users/{users[1]}/messages?$select=id", "dependsOn": ["2"]},
        {"id": "4", "method": "GET", "url": f"/users/{users[1]}/messages?$select=id"},
    ]}
    by_id = {x["id"]: x["status"] for x in graph.post("$batch", json=body).json()["responses"]}
    assert by_id["1"] == 404 and by_id["2"] == 424 and by_id["3"] == 424 and by_id["4"] == 200


def test_five_items_for_one_mailbox_meet_the_limit_of_four(graph: EmulatorClient) -> None:
    uid = _seeded_users(graph, 1)[0]
    # Long enough that the five overlap even on a loaded machine.
    graph.admin("POST", "faults", json={"type": "latency", "ms": 1000, "path": "/messages"})
    five = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{uid}/messages?$select=id"}
                         for i in range(1, 6)]}
    responses = graph.post("$batch", json=five).json()["responses"]
    statuses = sorted(x["status"] for x in responses)
    assert statuses == [200, 200, 200, 200, 429], statuses
    throttled = next(x for x in responses if x["status"] == 429)
    assert throttled["body"]["error"]["code"] == "ApplicationThrottled"
    assert throttled["headers"]["Retry-After"].isdigit()
    assert graph.admin("GET", "faults").json()["mailboxRejections"] == 1
    # Sequenced with dependsOn, the same five use one slot at a time: none is refused.
    chained = {"requests": [{**item, **({"dependsOn": [str(int(item["id"]) - 1)]} if item["id"] != "1" else {})}
                            for item in five["requests"]]}
    assert [x["status"] for x in graph.post("$batch", json=chained).json()["responses"]] == [200] * 5


def test_batch_items_share_the_mailbox_limit_with_direct_calls(graph: EmulatorClient) -> None:
    uid = _seeded_users(graph, 1)[0]
    graph.admin("POST", "faults", json={"type": "latency", "ms": 1500, "path": "/messages"})
    direct: list[int] = []
    threads = [threading.Thread(target=lambda: direct.append(graph.get(f"users/{uid}/messages?$select=id").status_code))
               for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the three direct calls hold three of the mailbox's four slots
    two = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{uid}/messages?$select=id"} for i in (1, 2)]}
    statuses = sorted(x["status"] for x in graph.post("$batch", json=two).json()["responses"])
    for t in threads:
        t.join()
    assert direct == [200, 200, 200] and statuses == [200, 429], statuses
