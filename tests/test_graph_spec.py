"""GraphClient.from_spec: a loaded subscriptions.yaml picks the cloud, the URLs, the CA and the credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from graph_fixtures import Harness

from syncer.graph import CertificateCredential, ClientSecretCredential, GraphClient
from syncer.spec import load_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.usefixtures("no_secret_in_logs")
def test_emulator_spec_with_the_info_file_secret(harness: Harness, tmp_path: Path) -> None:
    harness.server.write_info(tmp_path / "emu.json")
    spec = load_spec(
        write(
            tmp_path,
            "version: 1\ngraph: {cloud: emulator, emulator_info: emu.json}\nsubscriptions:\n"
            "  - {name: u, resource: users}\n",
        ),
        environ={},
    )
    client = GraphClient.from_spec(spec, spec.tenants[0].name, retry=None)
    assert isinstance(client.credential, ClientSecretCredential)
    harness.credentials.append(client.credential)
    assert client.base_url == harness.info["graph_url"]
    assert client.get_json("/users")["value"] == []


@pytest.mark.usefixtures("no_secret_in_logs")
def test_emulator_spec_with_a_certificate(harness: Harness, tmp_path: Path) -> None:
    harness.server.write_info(tmp_path / "emu.json")
    info = harness.info
    spec = load_spec(
        write(
            tmp_path,
            f"""\
version: 1
graph: {{cloud: emulator, emulator_info: emu.json}}
tenants:
  - name: lab
    tenant_id: {info["tenant_id"]}
    client_id: {info["client_id"]}
    certificate:
      private_key: {{file: {info["client_key"]}}}
      certificate: {info["client_cert"]}
subscriptions:
  - {{name: u, resource: users, tenant: lab}}
""",
        ),
        environ={},
    )
    client = GraphClient.from_spec(spec, "lab")
    assert isinstance(client.credential, CertificateCredential)
    harness.credentials.append(client.credential)
    assert client.get_json("/users")["value"] == []


@pytest.mark.parametrize(
    ("cloud", "graph", "authority"),
    [
        ("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
        ("usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
        ("usgov-dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        ("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    ],
)
def test_national_clouds(tmp_path: Path, cloud: str, graph: str, authority: str) -> None:
    spec = load_spec(
        write(
            tmp_path,
            f"""\
version: 1
graph: {{cloud: {cloud}}}
tenants:
  - name: gov
    tenant_id: 84bd8158-6d4d-4958-8b9f-9d6445542f95
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    client_secret: {{env: SECRET}}
subscriptions:
  - {{name: u, resource: users}}
""",
        ),
        environ={"SECRET": "not-used-offline"},
    )
    # Building the client talks to nobody: MSAL's app is created on the first token request.
    client = GraphClient.from_spec(spec, "gov")
    assert client.base_url == f"{graph}/v1.0"
    assert client.scopes == (f"{graph}/.default",)
    credential = client.credential
    assert isinstance(credential, ClientSecretCredential)
    assert credential.authority_url == f"{authority}/84bd8158-6d4d-4958-8b9f-9d6445542f95"
    assert credential.instance_discovery  # Microsoft's own hosts
