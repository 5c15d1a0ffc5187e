"""Bad input never produces a traceback or a 500: always Graph's status and error body."""

from __future__ import annotations

import itertools

from emulator_fixtures import EmulatorClient


def test_bad_requests_get_graph_error_bodies(graph: EmulatorClient) -> None:
    uid = graph.create_user("fuzz")["id"]
    did = graph.get(f"users/{uid}/drive").json()["id"]
    paths = ["users", f"users/{uid}", "users/delta", "groups/x/members/$ref", f"users/{uid}/mailFolders/inbox/messages",
             f"users/{uid}/calendarView/delta", f"users/{uid}/todo/lists/x/tasks", f"users/{uid}/unknown",
             f"drives/{did}/root/delta(token='abc')", f"drives/{did}/items/x/children", "directory/deletedItems/x",
             "$batch", "nonsense/path", "users/delta()"]
    bodies = [None, b"{", b"[]", b'{"x":1}']
    queries = ["", "?$top=abc", "?$select=nope", "?$skiptoken=zzz"]
    seen = 0
    for path, method, body, query in itertools.product(paths, ["GET", "POST", "PATCH", "PUT"], bodies, queries):
        r = graph.request(method, path + query, data=body,
                          headers={"Content-Type": "application/json"} if body is not None else {})
        assert r.status_code < 500, (method, path, query, body, r.text)
        if r.status_code >= 400:
            seen += 1
            error = r.json()["error"]
            assert error["code"] and error["message"] and error["innerError"]["request-id"], r.text
    assert seen > 500


def test_me_is_refused_for_app_only_tokens(graph: EmulatorClient) -> None:
    r = graph.get("me/messages")
    assert r.status_code == 400
    assert "delegated" in r.json()["error"]["message"]
