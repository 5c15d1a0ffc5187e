"""Delegated accounts in subscriptions.yaml (docs/spec.md "Delegated accounts")."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncer.errors import SpecError, SpecErrors
from syncer.spec import PERSONAL_TENANT_ID, Spec, load_spec

# Subscriptions start on line 19 (each resource on the third line of its entry).
HEADER = """\
version: 1
graph: {cloud: global}
tenants:
  - name: contoso
    tenant_id: 84bd8158-6d4d-4958-8b9f-9d6445542f95
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    client_secret: {env: SYNCER_SECRET}
  - name: adele
    auth: delegated
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    authority: 6a1f0c3e-2b4d-4e5f-9a8b-7c6d5e4f3a2b
    account: adele@contoso.com
  - name: pat
    auth: delegated
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    authority: consumers
    account: pat@outlook.com
subscriptions:
"""
ENV = {"SYNCER_SECRET": "s3cr3t-value", "HOME": "/home/someone"}


def load(tmp_path: Path, subs: str, *, header: str = HEADER, env: dict[str, str] | None = None) -> Spec:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(header + textwrap.dedent(subs), encoding="utf-8")
    return load_spec(path, environ=ENV if env is None else env)


def problems(tmp_path: Path, subs: str, *, header: str = HEADER) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, subs, header=header)
    return caught.value.errors


MAIL = """\
- name: inbox
  tenant: {tenant}
  resource: {resource}
  mirror: {{table: mail}}
"""


def test_delegated_accounts_are_read_with_their_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, MAIL.format(tenant="adele", resource="me/mailFolders/inbox/messages"))
    adele, pat = spec.tenant("adele"), spec.tenant("pat")
    assert adele.delegated and not adele.personal
    assert adele.tenant_id == "6a1f0c3e-2b4d-4e5f-9a8b-7c6d5e4f3a2b"  # the tenant authority is the tenant
    assert adele.account == "adele@contoso.com" and adele.client_secret is None
    assert adele.token_cache == Path("/home/someone/.config/syncer/adele.json")
    assert pat.personal and pat.tenant_id == PERSONAL_TENANT_ID and pat.authority == "consumers"
    assert not spec.tenant("contoso").delegated
    assert spec.subscription("inbox").resource == "me/mailFolders/inbox/messages"


def test_token_cache_follows_xdg_config_home_or_the_spec(tmp_path: Path) -> None:
    spec = load(tmp_path, MAIL.format(tenant="pat", resource="me/messages"), env={**ENV, "XDG_CONFIG_HOME": "/x"})
    assert spec.tenant("pat").token_cache == Path("/x/syncer/pat.json")
    header = HEADER.replace("    account: pat@outlook.com\n", "    account: pat@outlook.com\n    token_cache: cache/pat.json\n")
    spec = load(tmp_path, MAIL.format(tenant="pat", resource="me/messages"), header=header)
    assert spec.tenant("pat").token_cache == tmp_path / "cache/pat.json"


def test_me_is_refused_for_app_only_tenants_with_where(tmp_path: Path) -> None:
    (error,) = problems(tmp_path, MAIL.format(tenant="contoso", resource="me/messages"))
    assert (error.location.line, error.location.path) == (21, "subscriptions[0].resource"), str(error)
    assert "app-only auth has no signed-in user" in str(error) and "auth: delegated" in str(error)


def test_a_delegated_account_reads_only_its_own_mailbox(tmp_path: Path) -> None:
    (error,) = problems(tmp_path, MAIL.format(tenant="adele", resource="users/{user}/messages"))
    assert error.location.path == "subscriptions[0].resource"
    assert "me/... for message" in str(error)


@pytest.mark.parametrize(
    ("resource", "allowed"),
    [
        ("me/messages", True),
        ("me/events", True),
        ("me/contacts", True),
        ("me/drive/root", True),
        ("me/todo/lists/abc/tasks", True),
        ("users", False),
        ("groups", False),
        ("teams/getAllMessages", False),
    ],
)
def test_personal_accounts_get_only_the_types_graph_allows_them(
    tmp_path: Path, resource: str, allowed: bool
) -> None:
    subs = MAIL.format(tenant="pat", resource=resource)
    if allowed:
        assert load(tmp_path, subs).subscription("inbox").tenant == "pat"
        return
    errors = [e for e in problems(tmp_path, subs) if e.location.path == "subscriptions[0].resource"]
    assert errors, resource
    assert "personal Microsoft account" in str(errors[0]) and "Graph grants no personal-account permission" in str(errors[0])


def test_the_same_types_are_fine_for_a_work_account(tmp_path: Path) -> None:
    assert load(tmp_path, MAIL.format(tenant="adele", resource="users")).subscription("inbox").tenant == "adele"


def test_delegated_declaration_mistakes_are_named(tmp_path: Path) -> None:
    header = """\
version: 1
graph: {cloud: global}
tenants:
  - name: bad
    auth: delegated
    client_secret: {env: SYNCER_SECRET}
    authority: "not an authority"
  - name: app
    tenant_id: t
    client_id: c
    client_secret: {env: SYNCER_SECRET}
    account: someone@contoso.com
subscriptions:
"""
    errors = problems(tmp_path, MAIL.format(tenant="app", resource="users"), header=header)
    found = {e.location.path: str(e) for e in errors}
    assert "syncer login bad" in found["tenants[0].client_secret"]
    assert "tenants[0].client_id" in found
    assert "not an authority" in found["tenants[0].authority"]
    assert "tenants[0].account" in found  # missing
    assert "auth: delegated" in found["tenants[1].account"]  # only for delegated entries


def test_organizations_needs_the_home_tenant_outside_the_emulator(tmp_path: Path) -> None:
    header = HEADER.replace("authority: 6a1f0c3e-2b4d-4e5f-9a8b-7c6d5e4f3a2b", "authority: organizations")
    errors = problems(tmp_path, MAIL.format(tenant="adele", resource="me/messages"), header=header)
    assert errors[0].location.path == "tenants[1].tenant_id", [str(e) for e in errors]


def test_a_delegated_account_needs_a_tenant_id_of_its_own(tmp_path: Path) -> None:
    header = HEADER.replace("6a1f0c3e-2b4d-4e5f-9a8b-7c6d5e4f3a2b", "84bd8158-6d4d-4958-8b9f-9d6445542f95")
    errors = problems(tmp_path, MAIL.format(tenant="adele", resource="me/messages"), header=header)
    assert [e.location.path for e in errors] == ["tenants"], [str(e) for e in errors]
    assert "tenants 'contoso' and 'adele' share tenant id 84bd8158" in str(errors[0])


def test_on_the_emulator_the_shared_tenant_id_is_found_when_ids_are_filled_in(tmp_path: Path) -> None:
    import json

    from syncer.errors import ConfigError

    info = tmp_path / "emulator.json"
    info.write_text(json.dumps({
        "graph_url": "https://127.0.0.1:1/v1.0", "authority": "https://127.0.0.1:1/t1", "tenant_id": "t1",
        "client_id": "c1", "client_secret": "s",
    }))
    header = f"""\
version: 1
graph: {{cloud: emulator, emulator_info: {info}}}
tenants:
  - name: app
  - name: me
    auth: delegated
    account: adele@contoso.com
subscriptions:
"""
    spec = load(tmp_path, MAIL.format(tenant="me", resource="me/messages"), header=header)
    with pytest.raises(ConfigError, match="tenants 'app' and 'me' share tenant id t1"):
        spec.resolve_emulator()
    alone = load(tmp_path, MAIL.format(tenant="me", resource="me/messages"), header=header.replace("  - name: app\n", ""))
    assert alone.resolve_emulator().tenant("me").tenant_id == "t1"
