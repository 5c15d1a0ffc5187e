"""Microsoft's own clients against the emulator, unchanged except for URLs: msgraph-sdk over httpx.

(MSAL is exercised in test_emulator_identity.py.) The SDK's auth provider only attaches tokens for
allowed hosts, so the emulator's host is allowed explicitly; tokens come from MSAL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msal
import pytest
import requests
from emulator_fixtures import EmulatorClient

pytest.importorskip("msgraph", reason="msgraph-sdk is in the `test` extra")

import httpx
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory


class _MsalCredential:
    """An azure-core async TokenCredential backed by MSAL's confidential client."""

    def __init__(self, app: msal.ConfidentialClientApplication) -> None:
        self.app = app

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        result = self.app.acquire_token_for_client(scopes=list(scopes))
        return AccessToken(result["access_token"], int(result["expires_in"]))

    async def close(self) -> None:
        return None


def _client(info: dict[str, Any]) -> GraphServiceClient:
    session = requests.Session()
    session.trust_env = False
    session.verify = info["ca_cert"]
    app = msal.ConfidentialClientApplication(info["client_id"], client_credential=info["client_secret"],
                                             authority=info["authority"], instance_discovery=False,
                                             http_client=session)
    auth = AzureIdentityAuthenticationProvider(_MsalCredential(app), scopes=["https://graph.microsoft.com/.default"],
                                               allowed_hosts=[info["host"]])
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=info["ca_cert"], trust_env=False))
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = info["graph_url"]
    return GraphServiceClient(request_adapter=adapter)


def test_msgraph_sdk_pages_a_users_delta(emulator_info: dict[str, Any], graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 250})

    async def run() -> tuple[int, int, str, str]:
        client = _client(emulator_info)
        page = await client.users.delta.get()  # the SDK calls /users/delta()
        assert page is not None and page.value is not None
        count, pages = len(page.value), 1
        while page.odata_next_link:
            page = await client.users.delta.with_url(page.odata_next_link).get()
            assert page is not None and page.value is not None
            count, pages = count + len(page.value), pages + 1
        assert page.odata_delta_link
        user = await client.users.by_user_id("s1u7@contoso.onmicrosoft.com").get()
        assert user is not None
        return count, pages, page.odata_delta_link, str(user.display_name)

    count, pages, delta_link, name = asyncio.run(run())
    assert (count, pages) == (250, 3)
    assert delta_link.startswith(emulator_info["graph_url"])
    assert name.endswith(" 7")


def test_msgraph_sdk_surfaces_graph_errors(emulator_info: dict[str, Any]) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    async def run() -> ODataError:
        client = _client(emulator_info)
        try:
            await client.users.by_user_id("00000000-0000-0000-0000-000000000000").get()
        except ODataError as exc:
            return exc
        raise AssertionError("expected a 404")

    error = asyncio.run(run())
    assert error.response_status_code == 404
    assert error.error is not None and error.error.code == "Request_ResourceNotFound"


def test_msgraph_sdk_lists_subscriptions(emulator_info: dict[str, Any]) -> None:
    async def run() -> int:
        client = _client(emulator_info)
        result = await client.subscriptions.get()
        assert result is not None and result.value is not None
        return len(result.value)

    assert asyncio.run(run()) == 0
