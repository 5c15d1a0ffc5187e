"""pytest fixtures that start a Graph emulator in-process over HTTPS (see syncer.emulator).

Import through ``pytest_plugins = ["tests.emulator_fixtures"]`` (tests/conftest.py does). Each test
gets its own emulator on a free port; it is stopped (dispatcher included) when the test ends.
The helpers here talk to the emulator with plain ``requests`` and ``verify=<ca>`` per request, because
REQUESTS_CA_BUNDLE is set on these machines and would override ``Session.verify``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from syncer.emulator import EmulatorConfig, EmulatorServer


def spec_yaml(
    info: dict[str, Any],
    *,
    database_url: str,
    notification_url: str,
    lifecycle_url: str,
    subscriptions: str,
    secret_env: str,
    client_id: str | None = None,
) -> str:
    """A subscriptions.yaml for an emulator reached by its URLs (``cloud: custom``), the secret read
    from *secret_env*; *subscriptions* is the YAML list under ``subscriptions:``."""
    return f"""
version: 1
graph:
  cloud: custom
  graph_url: "{info["graph_url"]}"
  authority_host: "{info["base_url"]}"
  ca_bundle: "{info["ca_cert"]}"
tenants:
  - name: main
    tenant_id: "{info["tenant_id"]}"
    client_id: "{client_id or info["client_id"]}"
    client_secret: {{env: {secret_env}}}
receiver:
  notification_url: "{notification_url}"
  lifecycle_url: "{lifecycle_url}"
database:
  url: "{database_url}"
subscriptions:
{subscriptions}
"""


class EmulatorClient:
    """A tiny test-side HTTP helper bound to one emulator (token fetched once, CA trusted)."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.info = server.info
        self.base = server.info["base_url"]
        self.graph = server.info["graph_url"]
        self.ca = server.info["ca_cert"]
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = self.ca
        self._token: str | None = None

    def token(self) -> str:
        """A client-credentials token for the default app, via the real token endpoint."""
        if self._token is None:
            r = self.session.post(
                f"{self.info['authority']}/oauth2/v2.0/token",
                data={"client_id": self.info["client_id"], "client_secret": self.info["client_secret"],
                      "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
                timeout=10,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        """Call a Graph path (relative to /v1.0, or an absolute URL)."""
        url = path if path.startswith("https://") else f"{self.graph}/{path.lstrip('/')}"
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers.setdefault("Authorization", f"Bearer {self.token()}")
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, url, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST."""
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        """PATCH."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """DELETE."""
        return self.request("DELETE", path, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the admin API (/_emulator/...)."""
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, f"{self.base}/_emulator/{path.lstrip('/')}", **kwargs)

    def delta_all(self, url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        """Follow nextLinks to the deltaLink; returns (all items, deltaLink)."""
        items: list[dict[str, Any]] = []
        while True:
            r = self.get(url, **kwargs)
            assert r.status_code == 200, r.text
            body = r.json()
            items.extend(body["value"])
            if "@odata.deltaLink" in body:
                return items, body["@odata.deltaLink"]
            url = body["@odata.nextLink"]

    def create_user(self, nick: str, **props: Any) -> dict[str, Any]:
        """POST /users with the required properties filled in."""
        body = {
            "accountEnabled": True, "displayName": nick.title(), "mailNickname": nick,
            "userPrincipalName": f"{nick}@{self.info['tenant_domain']}",
            "passwordProfile": {"password": "xWwvJ]6NMw+bWH-d"}, **props,
        }
        r = self.post("users", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def user_token(self, user: str, scope: str, *, authority: str | None = None, client_id: str | None = None) -> str:
        """A delegated access token for *user* (UPN or id) with *scope*, through the device code flow approved by
        the admin API (docs/emulator-identity.md); *authority* is a URL such as f"{base}/consumers"."""
        where = authority or self.info["authority"]
        cid = client_id or self.info["client_id"]
        start = self.session.post(f"{where}/oauth2/v2.0/devicecode", data={"client_id": cid, "scope": scope}, timeout=10)
        assert start.status_code == 200, start.text
        approved = self.admin("POST", f"device-codes/{start.json()['user_code']}", json={"user": user})
        assert approved.status_code == 200, approved.text
        r = self.session.post(f"{where}/oauth2/v2.0/token", data={
            "client_id": cid, "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start.json()["device_code"]}, timeout=10)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Override in a test module to start the emulator with other settings."""
    return EmulatorConfig(seed=1234)


@pytest.fixture
def emulator(emulator_config: EmulatorConfig, tmp_path: Path) -> Iterator[EmulatorServer]:
    """A started emulator (HTTPS on a free port), stopped after the test."""
    server = EmulatorServer(emulator_config, workdir=tmp_path / "emulator")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator_info(emulator: EmulatorServer) -> dict[str, Any]:
    """The started emulator's info dict (graph_url, authority, tenant_id, client_id, client_secret, ca_cert...)."""
    return emulator.info


@pytest.fixture
def graph(emulator: EmulatorServer) -> Iterator[EmulatorClient]:
    """An :class:`EmulatorClient` for the test's emulator."""
    client = EmulatorClient(emulator)
    try:
        yield client
    finally:
        client.close()
