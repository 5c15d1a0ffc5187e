"""The admin API, request faults, the change hook, and the `syncer emulator` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from emulator_fixtures import EmulatorClient

from syncer.emulator import ChangeEvent, EmulatorConfig, EmulatorServer


def test_status_fault_with_count_and_retry_after(graph: EmulatorClient) -> None:
    rule = graph.admin("POST", "faults", json={"type": "status", "status": 503, "path": "^/v1.0/users$",
                                               "count": 2, "retryAfter": 3}).json()["rules"][0]
    first, second, third = (graph.get("users") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "3"
    assert first.json()["error"]["code"] == "serviceNotAvailable"
    listed = graph.admin("GET", "faults").json()["rules"]
    assert listed[0]["id"] == rule["id"] and listed[0]["remaining"] == 0 and listed[0]["fired"] == 2
    assert graph.admin("DELETE", f"faults/{rule['id']}").status_code == 204
    assert graph.admin("DELETE", f"faults/{rule['id']}").status_code == 404


def test_injected_500_is_the_only_500(graph: EmulatorClient) -> None:
    graph.admin("POST", "faults", json={"type": "status", "status": 500, "path": "/groups", "count": 1})
    r = graph.get("groups")
    assert r.status_code == 500 and r.json()["error"]["code"] == "generalException"
    assert graph.get("groups").status_code == 200


def test_rate_rule_throttles_with_retry_after(graph: EmulatorClient) -> None:
    graph.admin("POST", "clock", json={"freeze": True})
    graph.admin("POST", "faults", json={"type": "rate", "limit": 3, "perSeconds": 10})
    statuses = [graph.get("users").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    r = graph.get("users")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 10
    graph.admin("POST", "clock", json={"advance": 11})
    assert graph.get("users").status_code == 200


def test_probabilistic_faults_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    def run(seed: int) -> list[int]:
        with EmulatorServer(EmulatorConfig(seed=seed), workdir=tmp_path / str(seed)) as emu:
            client = EmulatorClient(emu)
            client.admin("POST", "faults", json={"type": "status", "status": 429, "probability": 0.5})
            out = [client.get("users").status_code for _ in range(20)]
            client.close()
            return out

    a, b = run(5), run(5)
    assert a == b and 200 in a and 429 in a


def test_connection_reset_fault(graph: EmulatorClient) -> None:
    graph.admin("POST", "faults", json={"type": "reset", "path": "/users", "count": 1})
    with pytest.raises(requests.ConnectionError):
        graph.get("users")
    assert graph.get("users").status_code == 200


def test_bad_fault_specs_are_400(graph: EmulatorClient) -> None:
    for spec in ({"type": "explode"}, {"type": "status", "status": 200}, {"type": "status", "status": 429, "path": "("},
                 {"type": "rate", "limit": -1}, {"type": "latency"}):
        r = graph.admin("POST", "faults", json=spec)
        assert r.status_code == 400, spec
        assert "error" in r.json()


def test_clock_request_log_reset_and_info(graph: EmulatorClient) -> None:
    before = graph.admin("GET", "clock").json()
    after = graph.admin("POST", "clock", json={"advance": 3600}).json()
    assert after["epoch"] - before["epoch"] >= 3600
    assert graph.admin("POST", "clock", json={"set": "not a date"}).status_code == 400
    graph.admin("POST", "clock", json={"advance": -3600})
    graph.create_user("log")
    log = graph.admin("GET", "requests").json()["requests"]
    assert [e["method"] for e in log if e["path"] == "/v1.0/users"] == ["POST"]
    assert all(e["app"] == graph.info["client_id"] for e in log if e["path"].startswith("/v1.0"))
    assert graph.admin("GET", "info").json()["tenants"][graph.info["tenant_id"]]["users"] == 1
    assert graph.admin("POST", "reset").status_code == 204
    assert graph.get("users").json()["value"] == []
    assert graph.admin("POST", "seed", json={"users": -1}).status_code == 400
    assert graph.admin("POST", "seed", json={"planets": 3}).status_code == 400


def test_seeding_a_million_users_is_fast(graph: EmulatorClient) -> None:
    started = time.perf_counter()
    body = graph.admin("POST", "seed", json={"users": 1_000_000}).json()
    assert time.perf_counter() - started < 2
    assert body["users"]["count"] == 1_000_000
    last = f"s1u999999@{graph.info['tenant_domain']}"
    assert graph.get(f"users/{last}").json()["userPrincipalName"] == last
    page = graph.get("users/delta", headers={"Prefer": "odata.maxpagesize=999"}).json()
    assert len(page["value"]) == 999


def test_change_hook_sees_writes(emulator: EmulatorServer, graph: EmulatorClient) -> None:
    events: list[ChangeEvent] = []
    emulator.state.store.add_listener(events.append)
    user = graph.create_user("hook")
    graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "s"})
    graph.delete(f"users/{user['id']}")
    kinds = [(e.resource_type, e.change_type) for e in events]
    assert kinds == [("user", "created"), ("message", "created"), ("user", "deleted")]
    created, message, soft = events
    assert created.collections[0] == "users" and created.resource == f"Users/{user['id']}"
    assert created.resource_data == {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user['id']}",
                                     "id": user["id"]}
    assert message.mailbox == user["id"]
    assert f"users/{user['id']}/messages" in message.collections
    assert any(c.startswith(f"users/{user['id']}/mailfolders/") and c.endswith("/messages") for c in message.collections)
    assert message.resource_data is not None and "@odata.etag" in message.resource_data
    assert soft.item is not None and soft.item["deletedDateTime"]  # soft delete carries its snapshot


def test_syncer_emulator_command(tmp_path: Path) -> None:
    info_file = tmp_path / "not-yet" / "info.json"  # the folder is created
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "syncer", "emulator", "--seed-users", "3", "--info-file",
                             str(info_file), "--workdir", str(tmp_path / "wd")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.time() + 30
        while not info_file.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        info: dict[str, Any] = json.loads(info_file.read_text())
        assert {"graph_url", "authority", "tenant_id", "client_id", "client_secret", "ca_cert"} <= set(info)
        token = requests.post(f"{info['authority']}/oauth2/v2.0/token", verify=info["ca_cert"], timeout=10, data={
            "client_id": info["client_id"], "client_secret": info["client_secret"],
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        users = requests.get(f"{info['graph_url']}/users", verify=info["ca_cert"], timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).json()["value"]
        assert len(users) == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "client_secret" in out and "trust this CA" in out


def test_rate_rule_per_app_and_mailbox(graph: EmulatorClient) -> None:
    a, b = graph.create_user("ma"), graph.create_user("mb")
    graph.admin("POST", "clock", json={"freeze": True})
    graph.admin("POST", "faults", json={"type": "rate", "limit": 2, "perSeconds": 600, "scope": "app+mailbox"})
    codes_a = [graph.get(f"users/{a['id']}/mailFolders").status_code for _ in range(3)]
    codes_b = [graph.get(f"users/{b['id']}/mailFolders").status_code for _ in range(2)]
    assert codes_a == [200, 200, 429] and codes_b == [200, 200]
    assert graph.get("users").status_code == 200  # not a mailbox path


def test_reset_fault_never_hangs(graph: EmulatorClient) -> None:
    for _ in range(15):
        graph.admin("POST", "faults", json={"type": "reset", "path": "^/v1.0/users$", "count": 1})
        with pytest.raises(requests.ConnectionError):
            graph.get("users", timeout=5)
        assert graph.get("users", timeout=5).status_code == 200


def test_path_segments_are_case_insensitive(graph: EmulatorClient) -> None:
    user = graph.create_user("Case")
    assert graph.get(f"Users/{user['id']}").status_code == 200
    assert graph.get(f"USERS/{user['id']}/MailFolders/Inbox/Messages").status_code == 200
    assert graph.get("Users/Delta").status_code == 200


def test_faults_reach_the_token_endpoint(graph: EmulatorClient) -> None:
    graph.admin("POST", "faults", json={"type": "status", "status": 503, "path": "/oauth2/v2.0/token", "count": 1,
                                        "retryAfter": 2})
    url = f"{graph.info['authority']}/oauth2/v2.0/token"
    form = {"client_id": graph.info["client_id"], "client_secret": graph.info["client_secret"],
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}
    r = graph.session.post(url, data=form, timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert r.json()["error"] == "temporarily_unavailable"
    assert graph.session.post(url, data=form, timeout=10).status_code == 200
