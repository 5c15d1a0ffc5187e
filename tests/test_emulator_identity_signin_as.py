"""`syncer emulator --sign-in-as UPN`: sign-in without a page (the authorize endpoint redirects at once with a code,
a device code is approved as it is issued), for tests and demos; and personal accounts made at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msal
import pytest
from emulator_fixtures import EmulatorClient
from test_emulator_identity_authcode import REDIRECT, browser, public_app, sign_in_on_page
from test_emulator_identity_graph import bearer

from syncer.emulator import EmulatorConfig, EmulatorServer


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=11, personal_users=("pat@outlook.com",), sign_in_as="pat@outlook.com")


def test_authorize_redirects_at_once_and_device_codes_need_no_approval(emulator: EmulatorServer) -> None:
    info = emulator.info
    app = public_app(info, authority=f"{info['base_url']}/consumers")
    flow = app.initiate_auth_code_flow(["Mail.Read"], redirect_uri=REDIRECT)
    first = browser(info).get(flow["auth_uri"], allow_redirects=False, timeout=10)
    assert first.status_code == 302, "no page: the code comes back at once"
    result = app.acquire_token_by_auth_code_flow(flow, sign_in_on_page(browser(info), flow["auth_uri"], ""))
    assert result.get("id_token_claims", {}).get("preferred_username") == "pat@outlook.com", result

    device = public_app(info, authority=f"{info['base_url']}/common")
    dflow = device.initiate_device_flow(scopes=["Mail.Read", "Files.Read"])
    started = time.monotonic()
    tokens = device.acquire_token_by_device_flow(dflow)
    assert "access_token" in tokens and time.monotonic() - started < 2, tokens
    graph = EmulatorClient(emulator)
    mail = graph.get("me/messages", headers=bearer(tokens["access_token"]))
    assert mail.status_code == 200 and len(mail.json()["value"]) == 3, mail.text
    files = graph.get("me/drive/root/children", headers=bearer(tokens["access_token"]))
    assert files.status_code == 200 and files.json()["value"], files.text
    graph.close()


def test_sign_in_as_can_change_at_runtime(emulator: EmulatorServer) -> None:
    graph = EmulatorClient(emulator)
    bob = graph.create_user("bob")
    assert graph.admin("POST", "sign-in-as", json={"user": bob["userPrincipalName"]}).json()["user"] == \
        bob["userPrincipalName"]
    app = public_app(emulator.info)
    flow = app.initiate_device_flow(scopes=["User.Read"])
    assert app.acquire_token_by_device_flow(flow)["id_token_claims"]["oid"] == bob["id"]
    graph.admin("POST", "sign-in-as", json={"user": None})
    flow = app.initiate_device_flow(scopes=["User.Read"])
    assert app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)["error"] == "authorization_pending"
    graph.close()


def test_sign_in_as_a_user_the_authority_refuses_is_an_error(emulator: EmulatorServer) -> None:
    app = public_app(emulator.info, authority=f"{emulator.info['base_url']}/organizations")
    refused = app.initiate_device_flow(scopes=["User.Read"])  # the device code is refused at once: a clear error
    assert "AADSTS50020" in refused.get("error_description", ""), refused
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT)
    params = sign_in_on_page(browser(emulator.info), flow["auth_uri"], "")
    assert params["error"] == "access_denied" and "AADSTS50020" in params["error_description"]


def test_the_cli_option(tmp_path: Path) -> None:
    info_file = tmp_path / "info.json"
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "emulator", "--personal-user", "pat@outlook.com", "--sign-in-as",
         "pat@outlook.com", "--info-file", str(info_file), "--workdir", str(tmp_path / "emu")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while not info_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert info_file.exists(), proc.stdout.read().decode() if proc.stdout else ""
        info = json.loads(info_file.read_text())
        assert info["sign_in_as"] == "pat@outlook.com"
        app = msal.PublicClientApplication(info["client_id"], authority=f"{info['base_url']}/consumers",
                                           instance_discovery=False, http_client=browser(info))
        tokens = app.acquire_token_by_device_flow(app.initiate_device_flow(scopes=["Mail.Read"]))
        assert tokens["id_token_claims"]["preferred_username"] == "pat@outlook.com", tokens
    finally:
        proc.terminate()
        proc.wait(timeout=10)


BROWSER_SCRIPT = """
import html, os, re, sys, requests
session = requests.Session()
session.trust_env = False
# What a browser does: follow redirects, and submit a response_mode=form_post page's form (MSAL asks for form_post).
page = session.get(sys.argv[1], verify=os.environ["EMULATOR_CA"], timeout=10)
form = re.search(r"<form method='post' action='([^']+)'>", page.text)
if form:
    fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(r"name='([^']+)' value='([^']*)'", page.text)}
    session.post(html.unescape(form.group(1)), data=fields, timeout=10)
"""


def test_msal_interactive_login_with_a_loopback_redirect(emulator: EmulatorServer, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What `syncer login` does when a browser is at hand: MSAL's acquire_token_interactive listens on
    http://localhost:PORT and opens the authorize URL; a stand-in browser (a process fetching that URL) follows the
    emulator's redirect back to it."""
    import webbrowser

    script = tmp_path / "browser.py"
    script.write_text(BROWSER_SCRIPT)
    monkeypatch.setenv("EMULATOR_CA", emulator.info["ca_cert"])
    webbrowser.register("emulator-test-browser", None,
                        webbrowser.BackgroundBrowser([sys.executable, str(script), "%s"]), preferred=True)
    app = public_app(emulator.info, authority=f"{emulator.info['base_url']}/common")
    result = app.acquire_token_interactive(["Mail.Read"], timeout=20)
    assert result.get("id_token_claims", {}).get("preferred_username") == "pat@outlook.com", result
