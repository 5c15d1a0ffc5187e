"""`syncer login` / `syncer logout` and the delegated credential, against the emulator's identity platform.

The emulator signs the chosen user in without a page (`sign-in-as`, docs/emulator-identity.md), so MSAL's real
device code flow runs end to end in well under a second.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from emulator_fixtures import EmulatorClient

from syncer.cli import main
from syncer.cli.options import EXIT_SIGN_IN_REQUIRED
from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.errors import SignInRequired
from syncer.graph.delegated import DelegatedCredential, delegated_credential
from syncer.spec import Spec, load_spec


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Single-use refresh tokens: the strictest rotation Microsoft allows
    # (https://learn.microsoft.com/entra/identity-platform/refresh-tokens), so a process that used an old
    # refresh token (a cache not shared safely) is refused.
    return EmulatorConfig(seed=1234, refresh_token_reuse_grace_s=0)


@pytest.fixture
def graph(emulator: EmulatorServer) -> Iterator[EmulatorClient]:
    client = EmulatorClient(emulator)
    yield client
    client.close()


@pytest.fixture
def upn(graph: EmulatorClient) -> str:
    """A seeded user of the emulator's tenant, signed in by any device code from now on."""
    assert graph.admin("POST", "seed", json={"users": 2, "messagesPerUser": 3}).status_code == 200
    name = str(graph.get("users").json()["value"][0]["userPrincipalName"])
    assert graph.admin("POST", "sign-in-as", json={"user": name}).status_code == 200
    return name


def write_spec(tmp_path: Path, emulator_info: dict[str, Any], account: str, subscriptions: str = "") -> Path:
    info = tmp_path / "emulator.json"
    info.write_text(json.dumps(emulator_info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {info}}}\n"
        f"database: {{url: 'sqlite:///{tmp_path}/syncer.db'}}\n"
        "tenants:\n"
        "  - name: me\n    auth: delegated\n"
        f"    account: {account}\n    token_cache: {tmp_path}/config/syncer/me.json\n"
        f"subscriptions:\n{subscriptions or '  - {name: inbox, tenant: me, resource: me/mailFolders/inbox/messages, mirror: {table: my_mail}}'}\n"
    )
    return path


def spec_of(path: Path) -> Spec:
    return load_spec(path).resolve_emulator()


def login(path: Path) -> Any:
    return CliRunner().invoke(main, ["login", "me", "--spec", str(path)], catch_exceptions=False)


def test_login_prints_who_and_what_and_keeps_tokens_owner_only(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, upn: str
) -> None:
    path = write_spec(tmp_path, emulator_info, upn)
    result = login(path)
    assert result.exit_code == 0, result.output
    assert f"Signed in as {upn}" in result.output
    assert "Mail.Read" in result.output  # the granted scopes (.default = the app's delegated permissions)
    cache = tmp_path / "config/syncer/me.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert json.loads(cache.read_text())["RefreshToken"], "MSAL's cache holds the refresh token"
    secret = next(iter(json.loads(cache.read_text())["RefreshToken"].values()))["secret"]
    assert secret not in result.output

    # Another process (another credential object) uses the same sign-in, and reaches the user's mailbox.
    credential = delegated_credential(spec_of(path), "me")
    token = credential.token((f"{emulator_info['graph_url'].rsplit('/v1.0', 1)[0]}/.default",))
    mail = graph.get("me/messages", headers={"Authorization": f"Bearer {token}"})
    assert mail.status_code == 200, mail.text


def test_refresh_rotation_is_persisted_for_the_other_processes(
    tmp_path: Path, emulator_info: dict[str, Any], upn: str
) -> None:
    path = write_spec(tmp_path, emulator_info, upn)
    assert login(path).exit_code == 0
    cache = tmp_path / "config/syncer/me.json"
    before = next(iter(json.loads(cache.read_text())["RefreshToken"].values()))["secret"]
    credential = delegated_credential(spec_of(path), "me")
    scope = (spec_of(path).graph.graph_url + "/.default",)
    first = credential.token(scope)
    refreshed = credential.token(scope, refused=first)  # what the client does after a 401
    assert refreshed != first
    after = next(iter(json.loads(cache.read_text())["RefreshToken"].values()))["secret"]
    assert after != before, "the rotated refresh token is written back to the file"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_another_account_is_refused_and_not_kept(
    tmp_path: Path, emulator_info: dict[str, Any], upn: str
) -> None:
    path = write_spec(tmp_path, emulator_info, "someone.else@" + upn.split("@", 1)[1])
    result = CliRunner().invoke(main, ["login", "--spec", str(path)])
    assert result.exit_code == 1
    assert f"signed in as {upn}" in result.output and "someone.else@" in result.output
    with pytest.raises(SignInRequired):
        delegated_credential(spec_of(path), "me").token((spec_of(path).graph.graph_url + "/.default",))


def test_revoked_sessions_name_the_account_and_login_recovers(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, upn: str
) -> None:
    path = write_spec(tmp_path, emulator_info, upn)
    assert login(path).exit_code == 0
    credential = delegated_credential(spec_of(path), "me")
    scope = (spec_of(path).graph.graph_url + "/.default",)
    token = credential.token(scope)
    assert graph.admin("POST", f"users/{upn}/revoke-sessions").status_code in (200, 204)
    with pytest.raises(SignInRequired) as caught:
        credential.token(scope, refused=token)
    error = caught.value
    assert error.account == upn and error.tenant == "me" and error.code == "invalid_grant"
    assert "syncer login me" in str(error) and not error.retryable

    assert login(path).exit_code == 0
    assert credential.token(scope, refused=token) != token


def test_logout_forgets_the_tokens(tmp_path: Path, emulator_info: dict[str, Any], upn: str) -> None:
    path = write_spec(tmp_path, emulator_info, upn)
    assert login(path).exit_code == 0
    result = CliRunner().invoke(main, ["logout", "me", "--spec", str(path)])
    assert result.exit_code == 0 and f"Signed out {upn}" in result.output, result.output
    credential: DelegatedCredential = delegated_credential(spec_of(path), "me")
    with pytest.raises(SignInRequired, match="no sign-in in the token cache"):
        credential.token((spec_of(path).graph.graph_url + "/.default",))
    assert CliRunner().invoke(main, ["logout", "me", "--spec", str(path)]).output.endswith("was not signed in.\n")


def test_login_needs_a_delegated_entry(tmp_path: Path, emulator_info: dict[str, Any], upn: str) -> None:
    path = write_spec(tmp_path, emulator_info, upn)
    result = CliRunner().invoke(main, ["login", "emulator", "--spec", str(path)])
    assert result.exit_code == 2 and "not a tenant with auth: delegated" in result.output
    assert EXIT_SIGN_IN_REQUIRED == 4


def test_doctor_names_the_login_to_run_and_lists_the_granted_scopes(
    tmp_path: Path, emulator_info: dict[str, Any], upn: str
) -> None:
    from syncer.doctor import iter_checks

    path = write_spec(tmp_path, emulator_info, upn)
    before = {c.name: c for c in iter_checks(path, timeout=1.0) if c.name.endswith("(me)")}
    assert before["token (me)"].status == "FAIL" and before["token (me)"].fix == "run `syncer login me`"
    assert login(path).exit_code == 0
    after = {c.name: c for c in iter_checks(path, timeout=1.0) if c.name.endswith("(me)")}
    assert after["token (me)"].status == "ok", after
    assert after["permissions (me)"].status == "ok" and "Mail.Read" in after["permissions (me)"].detail


def test_doctor_names_each_declaration_whose_delegated_permission_was_not_granted(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, upn: str
) -> None:
    """The app's delegated permissions lack To Do and calendars: doctor names the declarations, the permission
    and the `syncer login` to run; an admin-only permission (User.Read.All) says an administrator must consent."""
    from syncer.doctor import iter_checks

    granted = ["Mail.Read", "Files.ReadWrite.All", "User.Read"]
    changed = graph.admin("PATCH", f"apps/{emulator_info['client_id']}", json={"delegatedScopes": granted})
    assert changed.status_code == 200, changed.text
    declared = (
        "  - {name: inbox, tenant: me, resource: me/mailFolders/inbox/messages, mirror: {table: my_mail}}\n"
        "  - {name: files, tenant: me, resource: me/drive/root, mirror: {table: my_files}}\n"
        "  - {name: agenda, tenant: me, resource: me/events, mirror: {table: my_events}}\n"
        "  - {name: people, tenant: me, resource: users, mirror: {table: people}}\n"
    )
    path = write_spec(tmp_path, emulator_info, upn, declared)
    assert login(path).exit_code == 0
    check = {c.name: c for c in iter_checks(path, timeout=1.0)}["permissions (me)"]
    assert check.status == "FAIL", check
    assert "agenda (event) needs Calendars.Read or Calendars.ReadWrite" in check.detail
    assert "people (user) needs User.Read.All" in check.detail
    assert "inbox" not in check.detail and "files" not in check.detail, "Mail.Read and Files.ReadWrite.All cover them"
    assert check.fix.startswith("run `syncer login me --scope Calendars.Read --scope User.Read.All`")
    assert "administrator has consented to User.Read.All" in check.fix


def test_processes_sharing_the_cache_keep_a_working_refresh_token(
    tmp_path: Path, emulator_info: dict[str, Any], upn: str
) -> None:
    """Several credentials (as several processes would: flock excludes separate open files) refresh at once;
    the file stays whole and its refresh token is the newest, so every one of them can refresh again."""
    import threading

    path = write_spec(tmp_path, emulator_info, upn)
    assert login(path).exit_code == 0
    scope = (spec_of(path).graph.graph_url + "/.default",)
    credentials = [delegated_credential(spec_of(path), "me") for _ in range(4)]
    errors: list[BaseException] = []

    def churn(credential: DelegatedCredential) -> None:
        try:
            token = credential.token(scope)
            for _ in range(3):
                token = credential.token(scope, refused=token)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(c,)) for c in credentials]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert json.loads((tmp_path / "config/syncer/me.json").read_text())["RefreshToken"]
    assert not list((tmp_path / "config/syncer").glob("*.tmp")), "no temporary file left behind"
    fresh = delegated_credential(spec_of(path), "me")
    assert fresh.token(scope, refused="none")


def test_login_with_a_browser_uses_auth_code_and_pkce_on_a_loopback_redirect(
    tmp_path: Path, emulator_info: dict[str, Any], upn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syncer login --browser`: MSAL listens on http://localhost:PORT and opens the authorize URL; a stand-in
    browser (a process fetching it) follows the emulator's sign-in-as redirect back."""
    import sys
    import webbrowser

    from test_emulator_identity_signin_as import BROWSER_SCRIPT

    script = tmp_path / "browser.py"
    script.write_text(BROWSER_SCRIPT)
    monkeypatch.setenv("EMULATOR_CA", emulator_info["ca_cert"])
    webbrowser.register(
        "syncer-test-browser", None, webbrowser.BackgroundBrowser([sys.executable, str(script), "%s"]), preferred=True
    )
    path = write_spec(tmp_path, emulator_info, upn)
    result = CliRunner().invoke(main, ["login", "me", "--browser", "--spec", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"Signed in as {upn}" in result.output
    assert delegated_credential(spec_of(path), "me").token((spec_of(path).graph.graph_url + "/.default",))


def test_a_refused_refresh_is_not_asked_again_until_the_token_cache_changes(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, upn: str
) -> None:
    """After invalid_grant the credential raises SignInRequired without a request while its token cache file is the
    one that was refused (no retry storm from every pass and repair); a new `syncer login` (a new file) ends that."""
    path = write_spec(tmp_path, emulator_info, upn)
    assert login(path).exit_code == 0
    scope = (spec_of(path).graph.graph_url + "/.default",)
    credential = delegated_credential(spec_of(path), "me")
    token = credential.token(scope)
    assert credential.signed_out is None
    assert graph.admin("POST", f"users/{upn}/revoke-sessions").status_code == 200

    def token_requests() -> int:
        return sum(1 for r in graph.admin("GET", "requests").json()["requests"] if r["path"].endswith("/token"))

    with pytest.raises(SignInRequired) as refused:
        credential.token(scope, refused=token)  # Graph said 401: the refresh is refused
    assert credential.signed_out is refused.value and refused.value.code == "invalid_grant"
    before = token_requests()
    msal_app = credential._app

    def no_msal() -> Any:
        raise AssertionError("MSAL was asked again with the same refused cache")

    credential._app_instance = no_msal  # type: ignore[method-assign]
    for _ in range(5):
        with pytest.raises(SignInRequired):
            credential.token(scope)
    assert token_requests() == before
    credential._app_instance = lambda: msal_app  # type: ignore[method-assign,assignment,return-value]

    assert login(path).exit_code == 0  # rewrites the token cache file
    assert credential.token(scope) and credential.signed_out is None
