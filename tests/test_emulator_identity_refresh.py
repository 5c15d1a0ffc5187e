"""Delegated sign-in, after the first token: refresh tokens (rotation, revocation), client_info, and MSAL's cache
working silently, also after a restart from a serialized SerializableTokenCache."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msal
import pytest
import requests
from emulator_fixtures import EmulatorClient
from test_emulator_identity_authcode import browser, public_app

from syncer.emulator import EmulatorConfig, EmulatorServer


@pytest.fixture
def alice(graph: EmulatorClient) -> dict[str, Any]:
    return graph.create_user("alice")


def sign_in(info: dict[str, Any], admin: Any, app: msal.PublicClientApplication, user: str,
            scopes: list[str]) -> dict[str, Any]:
    """Device flow approved by the admin API (*admin* = a callable like EmulatorClient.admin)."""
    flow = app.initiate_device_flow(scopes=scopes)
    r = admin("POST", f"device-codes/{flow['user_code']}", json={"user": user})
    assert r.status_code == 200, r.text
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    return result


def _refresh_tokens(cache: msal.SerializableTokenCache) -> set[str]:
    return {rt["secret"] for rt in json.loads(cache.serialize()).get("RefreshToken", {}).values()}


def test_msal_silent_uses_the_cache_then_the_rotating_refresh_token(emulator_info: dict[str, Any],
                                                                    graph: EmulatorClient, alice: dict[str, Any]) -> None:
    cache = msal.SerializableTokenCache()
    app = public_app(emulator_info, cache=cache)
    sign_in(emulator_info, graph.admin, app, alice["userPrincipalName"], ["Mail.Read"])
    [account] = app.get_accounts()
    cached = app.acquire_token_silent(["Mail.Read"], account=account)
    assert cached is not None and cached["token_source"] == "cache"
    before = _refresh_tokens(cache)
    refreshed = app.acquire_token_silent(["Mail.Read"], account=account, force_refresh=True)
    assert refreshed is not None and refreshed["token_source"] == "identity_provider", refreshed
    after = _refresh_tokens(cache)
    assert len(after) == 1 and after != before, "the refresh token rotated and MSAL kept the newest"
    r = graph.get("me/messages", headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert r.status_code == 200, r.text


def test_a_serialized_cache_survives_a_restart(emulator_info: dict[str, Any], graph: EmulatorClient,
                                               alice: dict[str, Any]) -> None:
    cache = msal.SerializableTokenCache()
    sign_in(emulator_info, graph.admin, public_app(emulator_info, cache=cache), alice["userPrincipalName"],
            ["Files.Read"])
    stored = cache.serialize()

    restored = msal.SerializableTokenCache()
    restored.deserialize(stored)
    app = public_app(emulator_info, cache=restored)  # a new process: a new app object, the same cache
    [account] = app.get_accounts(username=alice["userPrincipalName"])
    assert account["local_account_id"] == alice["id"]
    silent = app.acquire_token_silent(["Files.Read"], account=account)
    assert silent is not None and "access_token" in silent
    forced = app.acquire_token_silent(["Files.Read"], account=account, force_refresh=True)
    assert forced is not None and "access_token" in forced, forced
    drive = graph.get("me/drive/root", headers={"Authorization": f"Bearer {forced['access_token']}"})
    assert drive.status_code == 200, drive.text


def test_revoked_sessions_make_the_next_refresh_invalid_grant(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                              alice: dict[str, Any]) -> None:
    app = public_app(emulator_info)
    first = sign_in(emulator_info, graph.admin, app, alice["userPrincipalName"], ["User.Read"])
    [account] = app.get_accounts()
    r = graph.admin("POST", f"users/{alice['userPrincipalName']}/revoke-sessions")
    assert r.status_code == 200 and r.json()["refreshTokens"] == 1, r.text
    failed = app.acquire_token_silent_with_error(["User.Read"], account=account, force_refresh=True)
    assert failed is not None and failed["error"] == "invalid_grant", failed
    assert "AADSTS50173" in failed["error_description"]
    # The access token already issued lives on until it expires, as Graph's do (no continuous access evaluation).
    assert graph.get("me", headers={"Authorization": f"Bearer {first['access_token']}"}).status_code == 200
    # Signing in again works and refreshes again.
    sign_in(emulator_info, graph.admin, app, alice["userPrincipalName"], ["User.Read"])
    [account] = app.get_accounts()
    again = app.acquire_token_silent_with_error(["User.Read"], account=account, force_refresh=True)
    assert again is not None and "access_token" in again, again


def _refresh(session: requests.Session, info: dict[str, Any], token: str, scope: str = "User.Read offline_access",
             **extra: str) -> requests.Response:
    return session.post(f"{info['authority']}/oauth2/v2.0/token", data={
        "client_id": info["client_id"], "grant_type": "refresh_token", "refresh_token": token, "scope": scope,
        **extra}, timeout=10)


def test_rotation_keeps_the_old_refresh_token_by_default(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                          alice: dict[str, Any]) -> None:
    first = sign_in(emulator_info, graph.admin, public_app(emulator_info), alice["id"], ["User.Read"])
    session = browser(emulator_info)
    second = _refresh(session, emulator_info, first["refresh_token"], client_info="1")
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    info = json.loads(base64.urlsafe_b64decode(body["client_info"] + "=="))
    assert info == {"uid": alice["id"], "utid": emulator_info["tenant_id"]}
    assert _refresh(session, emulator_info, first["refresh_token"]).status_code == 200
    wider = _refresh(session, emulator_info, body["refresh_token"], scope="Mail.ReadWrite offline_access")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_grant"
    assert wider.json().get("suberror") == "consent_required"


def test_single_use_refresh_tokens_when_configured(tmp_path: Path) -> None:
    config = EmulatorConfig(seed=5, refresh_token_reuse_grace_s=0)
    with EmulatorServer(config, workdir=tmp_path / "emu") as server:
        client = EmulatorClient(server)
        user = client.create_user("bob")
        first = sign_in(server.info, client.admin, public_app(server.info), user["id"], ["User.Read"])
        session = browser(server.info)
        client.admin("POST", "clock", json={"advance": 1})
        assert _refresh(session, server.info, first["refresh_token"]).status_code == 200
        reused = _refresh(session, server.info, first["refresh_token"])
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        client.close()


def test_a_disabled_or_deleted_user_cannot_refresh(emulator_info: dict[str, Any], graph: EmulatorClient,
                                                   alice: dict[str, Any]) -> None:
    first = sign_in(emulator_info, graph.admin, public_app(emulator_info), alice["id"], ["User.Read"])
    assert graph.patch(f"users/{alice['id']}", json={"accountEnabled": False}).status_code == 204
    r = _refresh(browser(emulator_info), emulator_info, first["refresh_token"])
    assert r.status_code == 400 and "AADSTS50057" in r.json()["error_description"]
    assert graph.delete(f"users/{alice['id']}").status_code == 204
    r = _refresh(browser(emulator_info), emulator_info, first["refresh_token"])
    assert r.status_code == 400 and "AADSTS50034" in r.json()["error_description"]


def test_graphs_revoke_sign_in_sessions(emulator_info: dict[str, Any], graph: EmulatorClient,
                                        alice: dict[str, Any]) -> None:
    first = sign_in(emulator_info, graph.admin, public_app(emulator_info), alice["id"], ["User.Read"])
    r = graph.post(f"users/{alice['userPrincipalName']}/revokeSignInSessions")
    assert r.status_code == 200 and r.json()["value"] is True, r.text
    refused = _refresh(browser(emulator_info), emulator_info, first["refresh_token"])
    assert refused.status_code == 400 and "AADSTS50173" in refused.json()["error_description"]
