"""Delegated sign-in, authorization code + PKCE: MSAL's PublicClientApplication against the emulator, the test playing
the browser (following the sign-in page and the redirect with requests)."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests
from emulator_fixtures import EmulatorClient

REDIRECT = "http://localhost:8400"


def browser(info: dict[str, Any]) -> requests.Session:
    """A session that trusts the emulator's CA (REQUESTS_CA_BUNDLE would override Session.verify otherwise)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = info["ca_cert"]
    return session


def public_app(info: dict[str, Any], *, authority: str | None = None, cache: msal.TokenCache | None = None,
               client_id: str | None = None) -> msal.PublicClientApplication:
    """MSAL's public client, pointed at the emulator by URL only."""
    return msal.PublicClientApplication(
        client_id or info["client_id"], authority=authority or info["authority"], instance_discovery=False,
        http_client=browser(info), token_cache=cache)


def sign_in_on_page(session: requests.Session, auth_uri: str, upn: str) -> dict[str, str]:
    """Open the authorize URL, pick *upn* on the sign-in page, and return the redirect's query (the auth response)."""
    page = session.get(auth_uri, allow_redirects=False, timeout=10)
    if page.status_code == 302:
        return _redirect_params(page)
    assert page.status_code == 200, page.text
    assert upn in page.text, "the sign-in page lists the tenant's users"
    action = re.search(r"<form method='post' action='([^']+)'", page.text)
    txn = re.search(r"name='txn' value='([^']+)'", page.text)
    assert action and txn, page.text
    done = session.post(action.group(1), data={"txn": txn.group(1), "upn": upn, "action": "signin"},
                        allow_redirects=False, timeout=10)
    assert done.status_code == 302, done.text
    return _redirect_params(done)


def _redirect_params(response: requests.Response) -> dict[str, str]:
    location = response.headers["Location"]
    assert location.startswith(REDIRECT), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def alice(graph: EmulatorClient) -> dict[str, Any]:
    return graph.create_user("alice")


def test_discovery_names_the_device_and_authorize_endpoints(graph: EmulatorClient) -> None:
    for tenant in (graph.info["tenant_id"], "common", "organizations", "consumers"):
        r = graph.session.get(f"{graph.base}/{tenant}/v2.0/.well-known/openid-configuration", timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        for name in ("authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "jwks_uri", "issuer"):
            assert doc[name].startswith("https://"), name
    common = graph.session.get(f"{graph.base}/common/v2.0/.well-known/openid-configuration", timeout=10).json()
    assert common["issuer"].endswith("/{tenantid}/v2.0")
    assert common["token_endpoint"] == f"{graph.base}/common/oauth2/v2.0/token"


def test_msal_auth_code_flow_with_pkce(emulator_info: dict[str, Any], graph: EmulatorClient,
                                       alice: dict[str, Any]) -> None:
    app = public_app(emulator_info)
    flow = app.initiate_auth_code_flow(["Mail.Read", "User.Read"], redirect_uri=REDIRECT,
                                       login_hint=alice["userPrincipalName"])
    assert "code_challenge=" in flow["auth_uri"] and "code_challenge_method=S256" in flow["auth_uri"]
    response = sign_in_on_page(browser(emulator_info), flow["auth_uri"], alice["userPrincipalName"])
    assert response["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    assert result["id_token_claims"]["oid"] == alice["id"]
    assert result["id_token_claims"]["preferred_username"] == alice["userPrincipalName"]
    assert "refresh_token" in result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert set(claims["scp"].split()) >= {"Mail.Read", "User.Read"}
    assert "roles" not in claims
    assert claims["oid"] == alice["id"] and claims["tid"] == emulator_info["tenant_id"]
    [account] = app.get_accounts()
    assert account["username"] == alice["userPrincipalName"]
    assert account["home_account_id"] == f"{alice['id']}.{emulator_info['tenant_id']}"
    me = graph.get("me", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == alice["id"]


def _authorize(graph: EmulatorClient, session: requests.Session, **params: str) -> requests.Response:
    query = {"client_id": graph.info["client_id"], "response_type": "code", "redirect_uri": REDIRECT,
             "scope": "openid offline_access User.Read", "state": "s1", **params}
    return session.get(f"{graph.info['authority']}/oauth2/v2.0/authorize", params=query, allow_redirects=False,
                       timeout=10)


def _code_for(graph: EmulatorClient, upn: str, **params: str) -> tuple[str, requests.Session]:
    session = browser(graph.info)
    page = _authorize(graph, session, **params)
    txn = re.search(r"name='txn' value='([^']+)'", page.text)
    assert txn, page.text
    done = session.post(f"{graph.info['authority']}/login", data={"txn": txn.group(1), "upn": upn}, allow_redirects=False,
                        timeout=10)
    assert done.status_code == 302, done.text
    params_back = _redirect_params(done)
    assert params_back["state"] == "s1"
    return params_back["code"], session


def _redeem(graph: EmulatorClient, code: str, **extra: str) -> requests.Response:
    return graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/token", data={
        "client_id": graph.info["client_id"], "grant_type": "authorization_code", "code": code,
        "redirect_uri": REDIRECT, "scope": "openid offline_access User.Read", **extra}, timeout=10)


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def test_pkce_verifier_is_checked_and_a_code_is_single_use(graph: EmulatorClient, alice: dict[str, Any]) -> None:
    verifier = "v" * 50
    code, _ = _code_for(graph, alice["userPrincipalName"], code_challenge=_challenge(verifier),
                        code_challenge_method="S256")
    missing = _redeem(graph, code)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
    wrong = _redeem(graph, code, code_verifier="w" * 50)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert "AADSTS501481" in wrong.json()["error_description"]
    ok = _redeem(graph, code, code_verifier=verifier)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert {"access_token", "refresh_token", "id_token", "scope", "expires_in"} <= set(body)
    assert body["expires_in"] > 300
    assert "client_info" not in body  # only when asked with client_info=1
    again = _redeem(graph, code, code_verifier=verifier)
    assert again.status_code == 400 and "AADSTS54005" in again.json()["error_description"]


def test_code_expires_after_ten_minutes(graph: EmulatorClient, alice: dict[str, Any]) -> None:
    code, _ = _code_for(graph, alice["userPrincipalName"])
    graph.admin("POST", "clock", json={"advance": 601})
    r = _redeem(graph, code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant" and "AADSTS70008" in r.json()["error_description"]


def test_no_refresh_token_without_offline_access_and_no_id_token_without_openid(graph: EmulatorClient,
                                                                                 alice: dict[str, Any]) -> None:
    code, _ = _code_for(graph, alice["userPrincipalName"], scope="User.Read")
    r = _redeem(graph, code, scope="User.Read")
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json() and "id_token" not in r.json()


def test_unregistered_redirect_uri_is_shown_not_redirected(graph: EmulatorClient) -> None:
    r = _authorize(graph, browser(graph.info), redirect_uri="https://evil.example/cb")
    assert r.status_code == 400 and "AADSTS50011" in r.text and "Location" not in r.headers


def test_loopback_redirect_may_use_any_port(graph: EmulatorClient) -> None:
    r = _authorize(graph, browser(graph.info), redirect_uri="http://localhost:53123")
    assert r.status_code == 200 and "txn" in r.text


def test_errors_after_a_valid_redirect_go_back_to_the_app(graph: EmulatorClient, alice: dict[str, Any]) -> None:
    session = browser(graph.info)
    bad_type = _authorize(graph, session, response_type="token")
    assert bad_type.status_code == 302
    params = _redirect_params(bad_type)
    assert params["error"] == "unsupported_response_type" and params["state"] == "s1"
    silent = _authorize(graph, session, prompt="none")
    assert _redirect_params(silent)["error"] == "login_required"
    page = _authorize(graph, session)
    txn = re.search(r"name='txn' value='([^']+)'", page.text)
    assert txn
    declined = session.post(f"{graph.info['authority']}/login", data={"txn": txn.group(1), "action": "decline"},
                            allow_redirects=False, timeout=10)
    assert _redirect_params(declined)["error"] == "access_denied"


def test_a_signed_in_browser_gets_prompt_none_and_single_sign_on(graph: EmulatorClient, alice: dict[str, Any]) -> None:
    _, session = _code_for(graph, alice["userPrincipalName"])
    silent = _authorize(graph, session, prompt="none")
    assert "code" in _redirect_params(silent)
    again = _authorize(graph, session, prompt="login")
    assert again.status_code == 200, "prompt=login shows the page even with a session"


def test_sign_in_page_lists_only_accounts_that_may_sign_in(graph: EmulatorClient, alice: dict[str, Any]) -> None:
    r = graph.admin("POST", "users", json={"tenantId": "9188040d-6c67-4c5b-b112-36a304b66dad",
                                           "userPrincipalName": "pat@outlook.com"})
    assert r.status_code == 201, r.text
    tenant_page = _authorize(graph, browser(graph.info))
    assert alice["userPrincipalName"] in tenant_page.text and "pat@outlook.com" not in tenant_page.text
