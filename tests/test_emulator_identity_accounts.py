"""Authorities (`organizations`, `consumers`, `common`, a tenant) and personal Microsoft accounts: who may sign in
where, the personal-account tenant with its own users and data, and what Graph refuses to personal accounts."""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest
from emulator_fixtures import EmulatorClient
from test_emulator_identity_authcode import REDIRECT, browser, public_app, sign_in_on_page
from test_emulator_identity_graph import bearer, user_token

CONSUMERS = "9188040d-6c67-4c5b-b112-36a304b66dad"


@pytest.fixture
def pat(graph: EmulatorClient) -> dict[str, Any]:
    """A personal Microsoft account with mail, events, contacts, OneDrive files and To Do tasks."""
    r = graph.admin("POST", "users", json={"tenantId": CONSUMERS, "userPrincipalName": "pat@outlook.com",
                                           "displayName": "Pat"})
    assert r.status_code == 201, r.text
    seeded = graph.admin("POST", "seed", json={"tenantId": CONSUMERS, "messagesPerUser": 2, "eventsPerUser": 2,
                                               "contactsPerUser": 2, "tasksPerUser": 2, "driveItemsPerUser": 2})
    assert seeded.status_code == 200, seeded.text
    user: dict[str, Any] = r.json()
    return user


@pytest.fixture
def alice(graph: EmulatorClient) -> dict[str, Any]:
    return graph.create_user("alice")


def _devicecode(graph: EmulatorClient, authority: str, client_id: str | None = None) -> Any:
    return graph.session.post(f"{graph.base}/{authority}/oauth2/v2.0/devicecode",
                              data={"client_id": client_id or graph.info["client_id"], "scope": "User.Read"}, timeout=10)


def test_personal_account_ids_and_token_claims(graph: EmulatorClient, pat: dict[str, Any]) -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", pat["id"])
    token = user_token(graph, "pat@outlook.com", "User.Read Mail.Read", authority=f"{graph.base}/consumers")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["tid"] == CONSUMERS
    assert claims["oid"] == f"00000000-0000-0000-{pat['id'][:4]}-{pat['id'][4:]}"
    me = graph.get("me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["id"] == pat["id"]


def test_personal_account_reaches_its_mail_calendar_contacts_drive_and_todo(graph: EmulatorClient,
                                                                            pat: dict[str, Any]) -> None:
    token = user_token(graph, "pat@outlook.com",
                       "Mail.Read Calendars.Read Contacts.Read Files.Read Tasks.Read User.Read Group.Read.All "
                       "User.Read.All", authority=f"{graph.base}/consumers")
    for path in ("messages", "mailFolders/inbox/messages/delta", "events", "contacts", "todo/lists",
                 "drive/root/children", "drive/root/delta"):
        r = graph.get(f"me/{path}", headers=bearer(token))
        assert r.status_code == 200, (path, r.text)
        assert r.json()["value"], path
    # ... and nothing of a directory, even holding the scopes.
    for path in ("users", "groups", "organization", "users/delta"):
        r = graph.get(path, headers=bearer(token))
        assert r.status_code == 403, (path, r.text)


def test_organizations_refuses_personal_accounts_and_consumers_work_accounts(graph: EmulatorClient,
                                                                             pat: dict[str, Any],
                                                                             alice: dict[str, Any]) -> None:
    start = _devicecode(graph, "organizations").json()
    refused = graph.admin("POST", f"device-codes/{start['user_code']}", json={"user": "pat@outlook.com"})
    assert refused.status_code == 400 and "AADSTS50020" in refused.text
    start = _devicecode(graph, "consumers").json()
    refused = graph.admin("POST", f"device-codes/{start['user_code']}", json={"user": alice["userPrincipalName"]})
    assert refused.status_code == 400 and "AADSTS50020" in refused.text
    # common takes both
    assert user_token(graph, "pat@outlook.com", "User.Read", authority=f"{graph.base}/common")
    assert user_token(graph, alice["id"], "User.Read", authority=f"{graph.base}/common")


def test_consumers_page_lists_only_personal_accounts(graph: EmulatorClient, pat: dict[str, Any],
                                                     alice: dict[str, Any]) -> None:
    r = browser(graph.info).get(f"{graph.base}/consumers/oauth2/v2.0/authorize", params={
        "client_id": graph.info["client_id"], "response_type": "code", "redirect_uri": REDIRECT,
        "scope": "User.Read"}, timeout=10)
    assert "pat@outlook.com" in r.text and alice["userPrincipalName"] not in r.text
    r = browser(graph.info).get(f"{graph.base}/organizations/oauth2/v2.0/authorize", params={
        "client_id": graph.info["client_id"], "response_type": "code", "redirect_uri": REDIRECT,
        "scope": "User.Read"}, timeout=10)
    assert "pat@outlook.com" not in r.text and alice["userPrincipalName"] in r.text


def test_single_tenant_app_on_common_is_aadsts50194(graph: EmulatorClient) -> None:
    r = graph.admin("POST", "apps", json={"clientId": "11111111-2222-3333-4444-555555555555", "displayName": "one",
                                          "signInAudience": "AzureADMyOrg"})
    assert r.status_code == 201, r.text
    for authority in ("common", "organizations"):
        refused = _devicecode(graph, authority, "11111111-2222-3333-4444-555555555555")
        assert refused.status_code == 400 and "AADSTS50194" in refused.json()["error_description"]
    page = browser(graph.info).get(f"{graph.base}/common/oauth2/v2.0/authorize", params={
        "client_id": "11111111-2222-3333-4444-555555555555", "response_type": "code", "redirect_uri": REDIRECT,
        "scope": "User.Read"}, timeout=10)
    assert page.status_code == 400 and "AADSTS50194" in page.text
    consumers = _devicecode(graph, "consumers", "11111111-2222-3333-4444-555555555555")
    assert consumers.status_code == 400 and "AADSTS90130" in consumers.json()["error_description"]
    assert _devicecode(graph, graph.info["tenant_id"], "11111111-2222-3333-4444-555555555555").status_code == 200


def test_msal_on_common_and_consumers(emulator_info: dict[str, Any], graph: EmulatorClient, pat: dict[str, Any],
                                      alice: dict[str, Any]) -> None:
    for authority, upn, tid in ((f"{graph.base}/common", alice["userPrincipalName"], emulator_info["tenant_id"]),
                                (f"{graph.base}/consumers", "pat@outlook.com", CONSUMERS)):
        app = public_app(emulator_info, authority=authority)
        flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=REDIRECT)
        result = app.acquire_token_by_auth_code_flow(flow, sign_in_on_page(browser(emulator_info), flow["auth_uri"],
                                                                           upn))
        assert "access_token" in result, result
        assert result["id_token_claims"]["tid"] == tid
        [account] = app.get_accounts()
        silent = app.acquire_token_silent(["Mail.Read"], account=account, force_refresh=True)
        assert silent is not None and "access_token" in silent, silent
        assert graph.get("me/messages", headers=bearer(silent["access_token"])).status_code == 200


def test_a_personal_account_may_subscribe_to_its_mail_but_not_to_users(graph: EmulatorClient,
                                                                      pat: dict[str, Any]) -> None:
    from test_emulator_identity_graph import _subscription
    from webhook_receiver import Receiver

    token = user_token(graph, "pat@outlook.com", "Mail.Read User.Read.All", authority=f"{graph.base}/consumers")
    with Receiver() as rx:
        ok = graph.post("subscriptions", json=_subscription(rx.url("n"), "me/messages"), headers=bearer(token))
        assert ok.status_code == 201, ok.text
        assert ok.json()["creatorId"] == pat["id"]
        users = graph.post("subscriptions", json={**_subscription(rx.url("n"), "users"), "changeType": "updated"},
                           headers=bearer(token))
        assert users.status_code == 403, users.text


def test_app_only_tokens_need_a_tenant_not_an_alias(graph: EmulatorClient) -> None:
    for alias in ("common", "organizations", "consumers"):
        r = graph.session.post(f"{graph.base}/{alias}/oauth2/v2.0/token", data={
            "client_id": graph.info["client_id"], "client_secret": graph.info["client_secret"],
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (alias, r.text)
