"""The emulator's identity platform, exercised with plain HTTP and with MSAL itself."""

from __future__ import annotations

import time
from typing import Any

import jwt
import msal
import pytest
import requests
from emulator_fixtures import EmulatorClient


def _msal_app(info: dict[str, Any], credential: Any) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE is set here and would override verify
    session.verify = info["ca_cert"]
    return msal.ConfidentialClientApplication(
        info["client_id"], client_credential=credential, authority=info["authority"],
        instance_discovery=False, http_client=session,
    )


def test_msal_with_secret_gets_a_token_graph_accepts(emulator_info: dict[str, Any], graph: EmulatorClient) -> None:
    app = _msal_app(emulator_info, emulator_info["client_secret"])
    result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    r = graph.get("users", headers={"Authorization": f"Bearer {result['access_token']}"})
    assert r.status_code == 200, r.text


def test_msal_wrong_secret_is_invalid_client(emulator_info: dict[str, Any]) -> None:
    result = _msal_app(emulator_info, "wrong").acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert result.get("error") == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]


def _cert(info: dict[str, Any]) -> tuple[str, str]:
    with open(info["client_key"]) as f:
        key = f.read()
    with open(info["client_cert"]) as f:
        cert = f.read()
    return key, cert


def test_msal_certificate_with_thumbprint(emulator_info: dict[str, Any]) -> None:
    key, _ = _cert(emulator_info)
    cred = {"private_key": key, "thumbprint": emulator_info["client_cert_thumbprint"]}
    result = _msal_app(emulator_info, cred).acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result


def test_msal_certificate_with_public_certificate(emulator_info: dict[str, Any]) -> None:
    key, cert = _cert(emulator_info)
    cred = {"private_key": key, "public_certificate": cert}
    result = _msal_app(emulator_info, cred).acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result


def test_assertion_signed_by_an_unregistered_key_is_refused(emulator_info: dict[str, Any], graph: EmulatorClient) -> None:
    from syncer.emulator.tls import make_client_certificate

    other = make_client_certificate("someone-else")
    cred = {"private_key": other.key_pem.decode(), "thumbprint": other.thumbprint_sha1}
    result = _msal_app(emulator_info, cred).acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert result.get("error") == "invalid_client"
    assert "AADSTS700027" in result["error_description"]
    # registered thumbprint but a forged signature (signed with another key)
    forged = jwt.encode(
        {"aud": f"{emulator_info['authority']}/oauth2/v2.0/token", "iss": emulator_info["client_id"],
         "sub": emulator_info["client_id"], "jti": "x", "iat": time.time(), "exp": time.time() + 600},
        other.key_pem, algorithm="RS256",
        headers={"x5t": _x5t(emulator_info["client_cert_thumbprint"])},
    )
    r = graph.session.post(f"{emulator_info['authority']}/oauth2/v2.0/token", data={
        "client_id": emulator_info["client_id"], "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default", "client_assertion": forged,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert "AADSTS700027" in r.json()["error_description"]


def _x5t(thumb_hex: str) -> str:
    import base64

    return base64.urlsafe_b64encode(bytes.fromhex(thumb_hex)).rstrip(b"=").decode()


def test_discovery_and_jwks_verify_issued_tokens(emulator_info: dict[str, Any], graph: EmulatorClient) -> None:
    conf = graph.session.get(f"{emulator_info['authority']}/v2.0/.well-known/openid-configuration", timeout=10).json()
    assert conf["token_endpoint"] == f"{emulator_info['authority']}/oauth2/v2.0/token"
    keys = graph.session.get(conf["jwks_uri"], timeout=10).json()["keys"]
    token = graph.token()
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys if k["kid"] == header["kid"])
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="https://graph.microsoft.com")
    assert claims["tid"] == emulator_info["tenant_id"]
    assert claims["appid"] == emulator_info["client_id"]
    assert "User.Read.All" in claims["roles"]


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client"),
        ({"scope": "User.Read"}, 400, "invalid_scope"),
    ],
)
def test_token_endpoint_errors(emulator_info: dict[str, Any], graph: EmulatorClient,
                               form: dict[str, str], status: int, error: str) -> None:
    data = {"client_id": emulator_info["client_id"], "client_secret": emulator_info["client_secret"],
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default", **form}
    r = graph.session.post(f"{emulator_info['authority']}/oauth2/v2.0/token", data=data, timeout=10)
    assert r.status_code == status
    assert r.json()["error"] == error


def test_unknown_tenant_discovery_fails(graph: EmulatorClient) -> None:
    r = graph.session.get(f"{graph.base}/nosuchtenant.onmicrosoft.com/v2.0/.well-known/openid-configuration", timeout=10)
    assert r.status_code == 400


def test_graph_rejects_missing_bad_and_expired_tokens(emulator: Any, graph: EmulatorClient) -> None:
    r = graph.get("users", auth=False)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert r.headers["request-id"] == r.json()["error"]["innerError"]["request-id"]
    r = graph.get("users", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401
    graph.token()
    graph.admin("POST", "clock", json={"advance": 4000})
    r = graph.get("users")
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


def test_missing_permission_is_403(graph: EmulatorClient) -> None:
    app = graph.admin("POST", "apps", json={"roles": ["Mail.Read"]}).json()
    r = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/token", data={
        "client_id": app["clientId"], "client_secret": app["secret"], "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default"}, timeout=10)
    token = r.json()["access_token"]
    r = graph.get("users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "Authorization_RequestDenied"


def test_client_request_id_is_echoed(graph: EmulatorClient) -> None:
    r = graph.get("users/nope", headers={"client-request-id": "abc-123"})
    assert r.status_code == 404
    assert r.headers["client-request-id"] == "abc-123"
    assert r.json()["error"]["innerError"]["client-request-id"] == "abc-123"
