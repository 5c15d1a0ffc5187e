"""Delegated sign-in, device code flow: MSAL's initiate_device_flow / acquire_token_by_device_flow against the
emulator, approved on the device-login page or through the admin API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msal
import pytest
import requests
from emulator_fixtures import EmulatorClient
from test_emulator_identity_authcode import browser, public_app

from syncer.emulator import EmulatorConfig, EmulatorServer

NO_WAIT = {"exit_condition": lambda flow: True}  # one poll, no sleeping


@pytest.fixture
def alice(graph: EmulatorClient) -> dict[str, Any]:
    return graph.create_user("alice")


def test_device_code_answer_has_the_documented_fields(graph: EmulatorClient) -> None:
    r = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/devicecode",
                           data={"client_id": graph.info["client_id"], "scope": "User.Read offline_access"}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"device_code", "user_code", "verification_uri", "expires_in", "interval", "message"} <= set(body)
    assert "verification_uri_complete" not in body
    assert body["expires_in"] == 900 and body["interval"] == 5
    assert body["user_code"] in body["message"] and body["verification_uri"] in body["message"]


def test_msal_device_flow_approved_on_the_page(emulator_info: dict[str, Any], alice: dict[str, Any]) -> None:
    app = public_app(emulator_info)
    flow = app.initiate_device_flow(scopes=["Mail.Read"])
    assert "user_code" in flow, flow
    pending = app.acquire_token_by_device_flow(dict(flow), **NO_WAIT)
    assert pending.get("error") == "authorization_pending", pending

    session = browser(emulator_info)
    form = session.get(flow["verification_uri"], timeout=10)
    assert form.status_code == 200 and "user_code" in form.text
    listing = session.post(flow["verification_uri"], data={"user_code": flow["user_code"]}, timeout=10)
    assert alice["userPrincipalName"] in listing.text
    button = re.search(r"name='account' value='([^']+)'[^>]*data-upn='" + re.escape(alice["userPrincipalName"]),
                       listing.text)
    assert button, listing.text
    done = session.post(flow["verification_uri"], data={"user_code": flow["user_code"], "account": button.group(1)},
                        timeout=10)
    assert done.status_code == 200 and "signed in" in done.text

    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    assert result["id_token_claims"]["oid"] == alice["id"]
    [account] = app.get_accounts()
    assert account["username"] == alice["userPrincipalName"]
    again = app.acquire_token_by_device_flow(flow, **NO_WAIT)
    assert again.get("error") == "invalid_grant", "a device code is redeemed once"


def test_msal_device_flow_approved_by_the_admin_api(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                    alice: dict[str, Any]) -> None:
    app = public_app(emulator_info)
    flow = app.initiate_device_flow(scopes=["Calendars.Read"])
    listed = graph.admin("GET", "device-codes").json()["deviceCodes"]
    assert [f["userCode"] for f in listed] == [flow["user_code"]]
    r = graph.admin("POST", f"device-codes/{flow['user_code']}", json={"user": alice["userPrincipalName"]})
    assert r.status_code == 200, r.text
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    events = graph.get("me/events", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert events.status_code == 200, events.text


def test_declined_device_code(emulator_info: dict[str, Any], graph: EmulatorClient) -> None:
    app = public_app(emulator_info)
    flow = app.initiate_device_flow(scopes=["User.Read"])
    graph.admin("POST", f"device-codes/{flow['user_code']}", json={"decline": True})
    assert app.acquire_token_by_device_flow(flow).get("error") == "authorization_declined"


def test_expired_device_code(emulator_info: dict[str, Any], graph: EmulatorClient, alice: dict[str, Any]) -> None:
    app = public_app(emulator_info)
    flow = app.initiate_device_flow(scopes=["User.Read"])
    graph.admin("POST", "clock", json={"advance": 901})
    assert app.acquire_token_by_device_flow(flow).get("error") == "expired_token"
    late = graph.admin("POST", f"device-codes/{flow['user_code']}", json={"user": alice["userPrincipalName"]})
    assert late.status_code == 409, "an expired code cannot be approved"
    assert app.acquire_token_by_device_flow(flow).get("error") == "expired_token"


def test_a_confidential_client_cannot_start_a_device_flow(graph: EmulatorClient) -> None:
    graph.admin("PATCH", f"apps/{graph.info['client_id']}", json={"publicClient": False})
    r = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/devicecode",
                           data={"client_id": graph.info["client_id"], "scope": "User.Read"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


def test_slow_down_when_configured(tmp_path: Path) -> None:
    with EmulatorServer(EmulatorConfig(seed=3, device_code_slow_down=True), workdir=tmp_path / "emu") as server:
        session = browser(server.info)
        start = session.post(f"{server.info['authority']}/oauth2/v2.0/devicecode",
                             data={"client_id": server.info["client_id"], "scope": "User.Read"}, timeout=10).json()

        def poll() -> requests.Response:
            return session.post(f"{server.info['authority']}/oauth2/v2.0/token", data={
                "client_id": server.info["client_id"], "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": start["device_code"]}, timeout=10)

        assert poll().json()["error"] == "authorization_pending"
        second = poll()
        assert second.status_code == 400 and second.json()["error"] == "slow_down"


def test_msal_app_objects_can_share_a_serialized_cache(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                       alice: dict[str, Any]) -> None:
    cache = msal.SerializableTokenCache()
    app = public_app(emulator_info, cache=cache)
    flow = app.initiate_device_flow(scopes=["User.Read"])
    graph.admin("POST", f"device-codes/{flow['user_code']}", json={"user": alice["id"]})
    assert "access_token" in app.acquire_token_by_device_flow(flow)
    assert cache.has_state_changed
