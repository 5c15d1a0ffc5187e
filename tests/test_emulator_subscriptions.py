"""The emulator's /v1.0/subscriptions over real HTTPS, against a real webhook receiver on loopback (https://learn.microsoft.com/en-us/graph/api/resources/subscription)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.emulator.subscription_model import QuotaLimits

NOT_200 = "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
MISMATCH = "Subscription validation request failed. Response must exactly match validationToken query parameter."
TIMED_OUT = "Subscription validation request timed out."


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """Defaults, or the changes a test passes with indirect parametrization."""
    changes: dict[str, Any] = getattr(request, "param", {})
    return EmulatorConfig(seed=7).with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _sub(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "resource": "/users",
        "changeType": "updated,deleted",
        "notificationUrl": url,
        "expirationDateTime": _in(120),
        "clientState": "s3cr3t",
        **extra,
    }


def _error(response: Any) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def _parse(value: str) -> datetime:
    head, _, _frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC)


def _mailbox(graph: EmulatorClient) -> str:
    user = graph.create_user("mailbox")
    return str(user["id"])


# --- create + handshake ------------------------------------------------------------------------------------------


def test_create_runs_the_handshake_on_both_urls_and_returns_graphs_fields(
    graph: EmulatorClient, receiver: Receiver
) -> None:
    response = graph.post(
        "subscriptions",
        json=_sub(receiver.url("hook"), lifecycleNotificationUrl=receiver.url("lifecycle")),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#subscriptions/$entity")
    assert body["resource"] == "/users"
    assert body["changeType"] == "updated,deleted"
    assert body["clientState"] == "s3cr3t"
    assert body["applicationId"] == graph.info["client_id"]
    assert body["creatorId"] and body["id"]
    assert body["latestSupportedTlsVersion"] == "v1_2"
    assert body["includeResourceData"] is False
    assert body["encryptionCertificate"] == ""
    assert body["lifecycleNotificationUrl"] == receiver.url("lifecycle")
    assert body["notificationContentType"] == "application/json"
    # Graph writes seven fractional digits
    assert len(body["expirationDateTime"].split(".")[1]) == 8

    assert [v.path for v in receiver.validations] == ["hook", "lifecycle"]
    for validation in receiver.validations:
        assert validation.content_type == "text/plain; charset=utf-8"
        assert validation.body == b""
        # the token is opaque and must be URL-decoded by the receiver: ours has spaces and colons
        assert " " in validation.token and unquote(validation.raw_query.split("=", 1)[1]) == validation.token
    assert receiver.validations[0].token != receiver.validations[1].token


def test_same_url_for_both_gets_two_validations(graph: EmulatorClient, receiver: Receiver) -> None:
    url = receiver.url("hook")
    assert graph.post("subscriptions", json=_sub(url, lifecycleNotificationUrl=url)).status_code == 201
    assert len(receiver.validations) == 2


def test_url_with_a_query_keeps_it_and_appends_the_token(graph: EmulatorClient, receiver: Receiver) -> None:
    url = receiver.url("hook") + "?tenant=a&x=1"
    assert graph.post("subscriptions", json=_sub(url)).status_code == 201
    assert receiver.validations[0].raw_query.startswith("tenant=a&x=1&validationToken=")


@pytest.mark.parametrize("emulator_config", [{"handshake_keeps_query": False}], indirect=True)
def test_handshake_without_the_query_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub(receiver.url("hook") + "?tenant=a")).status_code == 201
    assert receiver.validations[0].raw_query.startswith("validationToken=")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("status202", NOT_200),
        ("status500", NOT_200),
        ("redirect", NOT_200),
        ("encoded", MISMATCH),
        ("json", MISMATCH),
        ("html", MISMATCH),
        ("wrong", MISMATCH),
    ],
)
def test_bad_handshakes_fail_with_400_and_create_nothing(
    graph: EmulatorClient, receiver: Receiver, mode: str, message: str
) -> None:
    receiver.handshake = mode
    response = graph.post("subscriptions", json=_sub(receiver.url()))
    assert _error(response) == (400, "ValidationError", message)
    assert graph.get("subscriptions").json()["value"] == []


@pytest.mark.parametrize("emulator_config", [{"handshake_timeout_s": 0.3}], indirect=True)
def test_slow_handshake_times_out(graph: EmulatorClient, receiver: Receiver) -> None:
    receiver.handshake, receiver.handshake_delay_s = "slow", 0.8
    response = graph.post("subscriptions", json=_sub(receiver.url()))
    assert _error(response) == (400, "ValidationError", TIMED_OUT)


def test_handshake_within_the_limit_passes(graph: EmulatorClient, receiver: Receiver) -> None:
    receiver.handshake, receiver.handshake_delay_s = "slow", 0.2
    assert graph.post("subscriptions", json=_sub(receiver.url())).status_code == 201


def test_unreachable_endpoint_fails(graph: EmulatorClient, receiver: Receiver) -> None:
    url = receiver.url()
    receiver.stop()
    assert _error(graph.post("subscriptions", json=_sub(url)))[:2] == (400, "ValidationError")


def test_failing_lifecycle_url_fails_the_create(graph: EmulatorClient, receiver: Receiver) -> None:
    with Receiver(handshake="wrong") as bad:
        response = graph.post("subscriptions", json=_sub(receiver.url(), lifecycleNotificationUrl=bad.url()))
    assert _error(response) == (400, "ValidationError", MISMATCH)
    assert graph.get("subscriptions").json()["value"] == []


# --- request checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["resource", "changeType", "notificationUrl", "expirationDateTime"])
def test_required_properties(graph: EmulatorClient, receiver: Receiver, missing: str) -> None:
    body = _sub(receiver.url())
    del body[missing]
    status, _code, message = _error(graph.post("subscriptions", json=body))
    assert status == 400
    assert message == f"{missing} is a required property for subscription creation."
    assert receiver.validations == []  # checked before any handshake


def test_bad_bodies(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert graph.post("subscriptions", json=[1, 2]).status_code == 400
    unknown = graph.post("subscriptions", json=_sub(receiver.url(), colour="blue"))
    assert _error(unknown)[:2] == (400, "BadRequest")
    assert "colour" in _error(unknown)[2]
    assert graph.post("subscriptions", json=_sub(receiver.url(), vapidPublicKey="k")).status_code == 400
    bad_date = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime="tomorrow"))
    assert _error(bad_date)[:2] == (400, "BadRequest")
    assert receiver.validations == []


def test_change_types_allowed_per_resource(graph: EmulatorClient, receiver: Receiver) -> None:
    users = graph.post("subscriptions", json=_sub(receiver.url(), changeType="created,updated"))
    assert _error(users) == (400, "InvalidRequest", "Invalid 'changeType' attribute: 'created'.")
    mailbox = _mailbox(graph)
    ok = graph.post(
        "subscriptions",
        json=_sub(receiver.url(), resource=f"users/{mailbox}/messages", changeType="created,updated,deleted"),
    )
    assert ok.status_code == 201, ok.text
    typo = graph.post("subscriptions", json=_sub(receiver.url(), resource="groups", changeType="updatd"))
    assert _error(typo)[0] == 400


def test_drive_root_accepts_updated_only(graph: EmulatorClient, receiver: Receiver) -> None:
    graph.admin("POST", "seed", json={"users": 1, "driveItemsPerUser": 1, "contentUsers": 1})
    user = graph.get("users").json()["value"][0]["id"]
    deleted = graph.post("subscriptions", json=_sub(receiver.url(), resource=f"users/{user}/drive/root", changeType="deleted"))
    assert _error(deleted) == (400, "InvalidRequest", "Invalid 'changeType' attribute: 'deleted'.")
    ok = graph.post("subscriptions", json=_sub(receiver.url(), resource=f"users/{user}/drive/root", changeType="updated"))
    assert ok.status_code == 201, ok.text


def test_unknown_resources_me_and_missing_mailboxes(graph: EmulatorClient, receiver: Receiver) -> None:
    bogus = graph.post("subscriptions", json=_sub(receiver.url(), resource="users/abc/memberOf"))
    assert _error(bogus)[:2] == (400, "ExtensionError")
    me = graph.post("subscriptions", json=_sub(receiver.url(), resource="me/messages", changeType="created"))
    assert _error(me)[0] == 400
    ghost = graph.post(
        "subscriptions", json=_sub(receiver.url(), resource="users/nobody@nowhere.test/messages", changeType="created")
    )
    assert _error(ghost)[:2] == (404, "ExtensionError")


def test_expiration_maximum_floor_and_clamp(graph: EmulatorClient, receiver: Receiver) -> None:
    too_long = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(41_760 + 60)))
    assert _error(too_long) == (400, "ExtensionError", "Subscription expiration can only be 41760 minutes in the future.")
    short = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(5)))
    assert short.status_code == 201
    granted = _parse(short.json()["expirationDateTime"])
    assert timedelta(minutes=44) < granted - datetime.now(UTC) <= timedelta(minutes=45, seconds=5)
    mailbox = _mailbox(graph)
    outlook = graph.post(
        "subscriptions",
        json=_sub(receiver.url(), resource=f"users/{mailbox}/events", changeType="created", expirationDateTime=_in(10_081)),
    )
    assert _error(outlook)[2] == "Subscription expiration can only be 10080 minutes in the future."


@pytest.mark.parametrize("emulator_config", [{"subscription_expiry_overflow": "clamp"}], indirect=True)
def test_expiration_clamped_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    response = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(100_000)))
    assert response.status_code == 201
    granted = _parse(response.json()["expirationDateTime"]) - datetime.now(UTC)
    assert timedelta(minutes=41_759) < granted <= timedelta(minutes=41_760)


def test_past_expiration_is_raised_to_the_floor(graph: EmulatorClient, receiver: Receiver) -> None:
    response = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime="2001-01-01T00:00:00Z"))
    assert response.status_code == 201
    assert _parse(response.json()["expirationDateTime"]) > datetime.now(UTC) + timedelta(minutes=44)


def test_client_state_length(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub(receiver.url(), clientState="x" * 129)).status_code == 400
    assert graph.post("subscriptions", json=_sub(receiver.url(), clientState="x" * 128)).status_code == 201


def test_https_required_except_loopback(graph: EmulatorClient, receiver: Receiver) -> None:
    for url in ("http://example.com/hook", "ftp://127.0.0.1/hook", "not a url", "/relative"):
        assert _error(graph.post("subscriptions", json=_sub(url)))[0] == 400, url
    lifecycle = graph.post("subscriptions", json=_sub(receiver.url(), lifecycleNotificationUrl="http://example.com/x"))
    assert lifecycle.status_code == 400
    assert receiver.validations == []


@pytest.mark.parametrize("emulator_config", [{"allow_http_loopback": False}], indirect=True)
def test_http_loopback_refused_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub(receiver.url())).status_code == 400


def test_duplicate_change_type_and_resource_is_409(graph: EmulatorClient, receiver: Receiver) -> None:
    first = graph.post("subscriptions", json=_sub(receiver.url()))
    assert first.status_code == 201
    again = graph.post("subscriptions", json=_sub(receiver.url("other"), resource="Users", changeType="deleted,updated"))
    status, code, message = _error(again)
    assert (status, code) == (409, "Conflict")
    assert message == f"Subscription Id {first.json()['id']} already exists for the requested combination"
    assert graph.post("subscriptions", json=_sub(receiver.url(), changeType="updated")).status_code == 201


def test_twin_creates_racing_through_the_handshake_yield_one_subscription(
    graph: EmulatorClient, receiver: Receiver
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    graph.token()
    receiver.handshake, receiver.handshake_delay_s = "slow", 0.3
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: graph.post("subscriptions", json=_sub(receiver.url())).status_code, range(2)))
    assert statuses == [201, 409]
    assert len(graph.get("subscriptions").json()["value"]) == 1


def _app_client(graph: EmulatorClient, roles: list[str]) -> EmulatorClient:
    app = graph.admin("POST", "apps", json={"roles": roles, "secret": "s"}).json()
    token = graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]
    other = EmulatorClient(graph.server)
    other._token = token
    return other


def test_permission_is_checked_per_resource(graph: EmulatorClient, receiver: Receiver) -> None:
    mail_only = _app_client(graph, ["Mail.Read"])
    response = mail_only.post("subscriptions", json=_sub(receiver.url()))
    assert _error(response) == (
        403,
        "ExtensionError",
        "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access denied]",
    )
    mailbox = _mailbox(graph)
    ok = mail_only.post("subscriptions", json=_sub(receiver.url(), resource=f"users/{mailbox}/messages", changeType="created"))
    assert ok.status_code == 201, ok.text
    assert graph.post("subscriptions", json=_sub(receiver.url()), headers={"Authorization": "Bearer x"}).status_code == 401


@pytest.mark.parametrize(
    "emulator_config",
    [{"subscription_quotas": QuotaLimits(per_mailbox=2, directory_per_app_tenant=2)}],
    indirect=True,
)
def test_quotas_answer_403(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub(receiver.url(), changeType="updated")).status_code == 201
    assert graph.post("subscriptions", json=_sub(receiver.url(), resource="groups")).status_code == 201
    third = graph.post("subscriptions", json=_sub(receiver.url(), changeType="deleted"))
    status, code, message = _error(third)
    assert (status, code) == (403, "ExtensionError")
    assert "Maximum number of subscriptions has been reached" in message and "per app and tenant" in message
    mailbox = _mailbox(graph)
    for change in ("created", "updated"):
        body = _sub(receiver.url(), resource=f"users/{mailbox}/messages", changeType=change)
        assert graph.post("subscriptions", json=body).status_code == 201
    body = _sub(receiver.url(), resource=f"users/{mailbox}/events", changeType="created")
    assert "per mailbox" in _error(graph.post("subscriptions", json=body))[2]


# --- rich notifications setup -------------------------------------------------------------------------------------


def _certificate_b64(key_size: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rx")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def test_include_resource_data_rules(graph: EmulatorClient, receiver: Receiver) -> None:
    cert = _certificate_b64()
    rich = {"includeResourceData": True, "encryptionCertificate": cert, "encryptionCertificateId": "c1"}
    users = graph.post("subscriptions", json=_sub(receiver.url(), **rich))
    assert _error(users)[0] == 400
    mailbox = _mailbox(graph)
    messages = f"users/{mailbox}/messages"
    no_select = graph.post("subscriptions", json=_sub(receiver.url(), resource=messages, changeType="created", **rich))
    assert _error(no_select)[0] == 400
    selected = f"{messages}?$select=subject,isRead"
    no_cert = graph.post(
        "subscriptions", json=_sub(receiver.url(), resource=selected, changeType="created", includeResourceData=True)
    )
    assert _error(no_cert)[0] == 400
    garbage = graph.post(
        "subscriptions",
        json=_sub(receiver.url(), resource=selected, changeType="created", **{**rich, "encryptionCertificate": "bm9wZQ=="}),
    )
    assert _error(garbage)[0] == 400
    too_long = graph.post(
        "subscriptions", json=_sub(receiver.url(), resource=selected, changeType="created", expirationDateTime=_in(1_441), **rich)
    )
    assert _error(too_long)[2] == "Subscription expiration can only be 1440 minutes in the future."
    ok = graph.post("subscriptions", json=_sub(receiver.url(), resource=selected, changeType="created", **rich))
    assert ok.status_code == 201, ok.text
    assert ok.json()["includeResourceData"] is True
    assert ok.json()["encryptionCertificateId"] == "c1"


def test_drive_items_have_no_rich_notifications(graph: EmulatorClient, receiver: Receiver) -> None:
    graph.admin("POST", "seed", json={"users": 1, "driveItemsPerUser": 1, "contentUsers": 1})
    user = graph.get("users").json()["value"][0]["id"]
    body = _sub(
        receiver.url(), resource=f"users/{user}/drive/root", changeType="updated",
        includeResourceData=True, encryptionCertificate=_certificate_b64(), encryptionCertificateId="c",
    )
    status, code, message = _error(graph.post("subscriptions", json=body))
    assert (status, code) == (400, "ExtensionError")
    assert "File Services workload is not enabled for rich notifications." in message


# --- list / get / patch / delete / reauthorize ----------------------------------------------------------------------


@pytest.mark.parametrize("emulator_config", [{"subscription_page_size": 2}], indirect=True)
def test_list_pages_and_hides_client_state(graph: EmulatorClient, receiver: Receiver) -> None:
    created = []
    for resource, change in (("users", "updated"), ("users", "deleted"), ("groups", "updated"), ("groups", "deleted"), ("users", "updated,deleted")):
        response = graph.post("subscriptions", json=_sub(receiver.url(), resource=resource, changeType=change))
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    other = _app_client(graph, ["User.Read.All"])
    assert other.post("subscriptions", json=_sub(receiver.url())).status_code == 201

    seen: list[str] = []
    url = "subscriptions"
    pages = 0
    while True:
        body = graph.get(url).json()
        pages += 1
        assert body["@odata.context"].endswith("/v1.0/$metadata#subscriptions")
        for item in body["value"]:
            assert item["clientState"] is None
            seen.append(item["id"])
        if "@odata.nextLink" not in body:
            break
        url = body["@odata.nextLink"]
    assert pages == 3
    assert seen == created  # only this app's, in creation order
    assert graph.get("subscriptions?$top=1").status_code == 400


def test_get_shows_client_state_and_404s(graph: EmulatorClient, receiver: Receiver) -> None:
    sid = graph.post("subscriptions", json=_sub(receiver.url())).json()["id"]
    got = graph.get(f"subscriptions/{sid}")
    assert got.status_code == 200 and got.json()["clientState"] == "s3cr3t"
    assert _error(graph.get("subscriptions/00000000-0000-0000-0000-000000000000")) == (
        404, "ResourceNotFound", "The object was not found."
    )
    other = _app_client(graph, ["User.Read.All"])
    assert other.get(f"subscriptions/{sid}").status_code == 404


def test_patch_renews_and_revalidates_a_new_url(graph: EmulatorClient, receiver: Receiver) -> None:
    created = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(60))).json()
    sid = created["id"]
    renewed = graph.patch(f"subscriptions/{sid}", json={"expirationDateTime": _in(600)})
    assert renewed.status_code == 200
    assert _parse(renewed.json()["expirationDateTime"]) > _parse(created["expirationDateTime"]) + timedelta(minutes=500)

    assert graph.patch(f"subscriptions/{sid}", json={"clientState": "x"}).status_code == 400
    assert graph.patch(f"subscriptions/{sid}", json={}).status_code == 400
    too_long = graph.patch(f"subscriptions/{sid}", json={"expirationDateTime": _in(50_000)})
    assert _error(too_long)[:2] == (400, "ExtensionError")

    with Receiver(handshake="wrong") as bad:
        refused = graph.patch(f"subscriptions/{sid}", json={"notificationUrl": bad.url()})
        assert _error(refused) == (400, "ValidationError", MISMATCH)
    assert graph.get(f"subscriptions/{sid}").json()["notificationUrl"] == receiver.url()

    before = len(receiver.validations)
    moved = graph.patch(f"subscriptions/{sid}", json={"notificationUrl": receiver.url("moved")})
    assert moved.status_code == 200 and moved.json()["notificationUrl"] == receiver.url("moved")
    assert [v.path for v in receiver.validations[before:]] == ["moved"]
    assert graph.patch("subscriptions/00000000-0000-0000-0000-000000000000", json={"expirationDateTime": _in(60)}).status_code == 404


@pytest.mark.parametrize("emulator_config", [{"revalidate_on_patch": False}], indirect=True)
def test_patch_without_revalidation_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    sid = graph.post("subscriptions", json=_sub(receiver.url())).json()["id"]
    before = len(receiver.validations)
    assert graph.patch(f"subscriptions/{sid}", json={"notificationUrl": receiver.url("x")}).status_code == 200
    assert len(receiver.validations) == before


def test_certificate_rotation(graph: EmulatorClient, receiver: Receiver) -> None:
    mailbox = _mailbox(graph)
    body = _sub(
        receiver.url(), resource=f"users/{mailbox}/messages?$select=subject", changeType="created",
        includeResourceData=True, encryptionCertificate=_certificate_b64(), encryptionCertificateId="old",
    )
    sid = graph.post("subscriptions", json=body).json()["id"]
    new_cert = _certificate_b64()
    rotated = graph.patch(
        f"subscriptions/{sid}",
        json={"expirationDateTime": _in(600), "encryptionCertificate": new_cert, "encryptionCertificateId": "new"},
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["encryptionCertificateId"] == "new"
    assert rotated.json()["encryptionCertificate"] == new_cert
    bad = graph.patch(f"subscriptions/{sid}", json={"expirationDateTime": _in(600), "encryptionCertificate": "bm9wZQ=="})
    assert bad.status_code == 400


def test_delete_and_reauthorize(graph: EmulatorClient, receiver: Receiver) -> None:
    created = graph.post("subscriptions", json=_sub(receiver.url())).json()
    sid = created["id"]
    reauthorized = graph.post(f"subscriptions/{sid}/reauthorize")
    assert reauthorized.status_code == 204 and reauthorized.content == b""
    assert graph.get(f"subscriptions/{sid}").json()["expirationDateTime"] == created["expirationDateTime"]
    deleted = graph.delete(f"subscriptions/{sid}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert graph.get(f"subscriptions/{sid}").status_code == 404
    assert graph.delete(f"subscriptions/{sid}").status_code == 404
    assert graph.post(f"subscriptions/{sid}/reauthorize").status_code == 404


def test_expiry_on_the_emulator_clock(graph: EmulatorClient, receiver: Receiver) -> None:
    sid = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(60))).json()["id"]
    graph.admin("POST", "clock", json={"advance": 59 * 60})
    assert graph.get(f"subscriptions/{sid}").status_code == 200
    graph.admin("POST", "clock", json={"advance": 2 * 60})
    graph._token = None  # the hour-long token expired with the jump too
    assert graph.get(f"subscriptions/{sid}").status_code == 404
    assert graph.get("subscriptions").json()["value"] == []
    assert graph.patch(f"subscriptions/{sid}", json={"expirationDateTime": _in(600)}).status_code == 404


def test_a_renewal_that_shortens_the_lifetime_expires_at_the_new_time(graph: EmulatorClient, receiver: Receiver) -> None:
    # Expiry is indexed by time: the shorter expiration must not wait behind the entry of the longer one.
    sid = graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(180))).json()["id"]
    assert graph.patch(f"subscriptions/{sid}", json={"expirationDateTime": _in(60)}).status_code == 200
    graph.admin("POST", "clock", json={"advance": 59 * 60})
    assert graph.get(f"subscriptions/{sid}").status_code == 200
    graph.admin("POST", "clock", json={"advance": 2 * 60})
    graph._token = None
    assert graph.get(f"subscriptions/{sid}").status_code == 404


def test_admin_lists_every_subscription(graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver) -> None:
    graph.post("subscriptions", json=_sub(receiver.url()))
    _app_client(graph, ["User.Read.All"]).post("subscriptions", json=_sub(receiver.url()))
    listed = graph.admin("GET", "subscriptions").json()["value"]
    assert len(listed) == 2 and all(item["clientState"] == "s3cr3t" for item in listed)


# --- Microsoft's own SDK ------------------------------------------------------------------------------------------


def _sdk_client(info: dict[str, Any]) -> Any:
    """msgraph-sdk pointed at the emulator (tokens from MSAL, CA trusted, only URLs changed)."""
    import httpx
    import msal
    import requests
    from azure.core.credentials import AccessToken
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    session = requests.Session()
    session.trust_env = False
    session.verify = info["ca_cert"]
    app = msal.ConfidentialClientApplication(
        info["client_id"], client_credential=info["client_secret"], authority=info["authority"],
        instance_discovery=False, http_client=session,
    )

    class Credential:
        async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
            result = app.acquire_token_for_client(scopes=list(scopes))
            return AccessToken(result["access_token"], int(result["expires_in"]))

        async def close(self) -> None:
            return None

    auth = AzureIdentityAuthenticationProvider(
        Credential(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=[info["host"]]
    )
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=info["ca_cert"], trust_env=False))
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = info["graph_url"]
    return GraphServiceClient(request_adapter=adapter)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's own request-configuration classes
def test_msgraph_sdk_creates_lists_renews_and_deletes(emulator_info: dict[str, Any], receiver: Receiver) -> None:
    pytest.importorskip("msgraph", reason="msgraph-sdk is in the `test` extra")
    import asyncio

    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.models.subscription import Subscription as SdkSubscription

    async def run() -> None:
        client = _sdk_client(emulator_info)
        wanted = datetime.now(UTC) + timedelta(hours=3)
        created = await client.subscriptions.post(
            SdkSubscription(
                change_type="updated,deleted", notification_url=receiver.url(), resource="users",
                expiration_date_time=wanted, client_state="sdk-state",
                lifecycle_notification_url=receiver.url("lifecycle"),
            )
        )
        assert created is not None and created.id
        assert created.client_state == "sdk-state"
        assert created.application_id == emulator_info["client_id"]
        assert created.expiration_date_time is not None
        assert abs((created.expiration_date_time - wanted).total_seconds()) < 1
        assert len(receiver.validations) == 2

        listed = await client.subscriptions.get()
        assert listed is not None and listed.value is not None
        assert [(s.id, s.client_state) for s in listed.value] == [(created.id, None)]

        renewed = await client.subscriptions.by_subscription_id(created.id).patch(
            SdkSubscription(expiration_date_time=wanted + timedelta(hours=5))
        )
        assert renewed is not None and renewed.expiration_date_time is not None
        assert renewed.expiration_date_time > wanted + timedelta(hours=4)

        receiver.handshake = "wrong"
        try:
            await client.subscriptions.post(
                SdkSubscription(
                    change_type="updated", notification_url=receiver.url("other"), resource="groups",
                    expiration_date_time=wanted,
                )
            )
        except ODataError as exc:
            assert exc.response_status_code == 400
            assert exc.error is not None and exc.error.code == "ValidationError"
        else:
            raise AssertionError("a bad handshake must fail the create")

        await client.subscriptions.by_subscription_id(created.id).delete()
        after = await client.subscriptions.get()
        assert after is not None and after.value == []

    asyncio.run(run())
