"""GET /organization and /domains: one organization (id = tenant id), verifiedDomains with one isDefault and one
isInitial, the User.Read projection, and who is refused."""

from __future__ import annotations

from emulator_fixtures import EmulatorClient
from test_emulator_identity_graph import bearer, user_token


def test_organization_with_an_app_token(graph: EmulatorClient) -> None:
    r = graph.get("organization")
    assert r.status_code == 200, r.text
    [org] = r.json()["value"]
    assert org["id"] == graph.info["tenant_id"]
    [domain] = org["verifiedDomains"]
    assert domain == {"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": True, "isInitial": True,
                      "name": graph.info["tenant_domain"], "type": "Managed"}
    assert org["tenantType"] == "AAD"
    one = graph.get(f"organization/{graph.info['tenant_id']}")
    assert one.status_code == 200 and one.json()["id"] == graph.info["tenant_id"]
    assert graph.get("organization/00000000-0000-0000-0000-000000000000").status_code == 404


def test_custom_domain_becomes_the_default(graph: EmulatorClient) -> None:
    r = graph.admin("POST", "tenants", json={"tenantId": "aaaaaaaa-0000-0000-0000-000000000001",
                                             "domain": "fabrikam.onmicrosoft.com", "displayName": "Fabrikam",
                                             "customDomains": ["fabrikam.com"]})
    assert r.status_code == 201, r.text
    app = graph.admin("POST", "apps", json={"tenantId": "aaaaaaaa-0000-0000-0000-000000000001", "secret": "s",
                                            "roles": ["Organization.Read.All", "Domain.Read.All"]}).json()
    token = graph.session.post(f"{graph.base}/aaaaaaaa-0000-0000-0000-000000000001/oauth2/v2.0/token", data={
        "client_id": app["clientId"], "client_secret": "s", "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default"}, timeout=10).json()["access_token"]
    [org] = graph.get("organization", headers=bearer(token)).json()["value"]
    assert org["displayName"] == "Fabrikam"
    flags = {d["name"]: (d["isDefault"], d["isInitial"]) for d in org["verifiedDomains"]}
    assert flags == {"fabrikam.onmicrosoft.com": (False, True), "fabrikam.com": (True, False)}
    domains = graph.get("domains", headers=bearer(token)).json()["value"]
    assert {d["id"] for d in domains} == {"fabrikam.onmicrosoft.com", "fabrikam.com"}
    assert all(d["isVerified"] for d in domains)


def test_user_read_sees_three_properties_and_no_domains(graph: EmulatorClient) -> None:
    alice = graph.create_user("alice")
    token = user_token(graph, alice["id"], "User.Read")
    [org] = graph.get("organization", headers=bearer(token)).json()["value"]
    assert org["id"] == graph.info["tenant_id"] and org["verifiedDomains"]
    assert org["tenantType"] is None and org["street"] is None
    denied = graph.get("domains", headers=bearer(token))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    wide = user_token(graph, alice["id"], "Directory.Read.All")
    assert graph.get("domains", headers=bearer(wide)).status_code == 200
    assert graph.get("organization", headers=bearer(wide)).json()["value"][0]["tenantType"] == "AAD"
