"""Presence in the emulator: reads, getPresencesByUserId, setPresence, and delegated-only subscriptions of at most
650 users and 60 minutes (https://learn.microsoft.com/graph/changenotifications-for-presence), over real HTTPS."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer.emulator import EmulatorConfig


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    changes: dict[str, Any] = getattr(request, "param", {})
    return EmulatorConfig(seed=5).with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(graph: EmulatorClient, minutes: float) -> str:
    now = datetime.fromisoformat(graph.admin("GET", "clock").json()["now"].replace("Z", "+00:00"))
    return (now + timedelta(minutes=minutes)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sub(graph: EmulatorClient, url: str, resource: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "changeType": "updated", "notificationUrl": url, "clientState": "s",
            "expirationDateTime": _in(graph, 55), **extra}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(graph: EmulatorClient) -> list[dict[str, Any]]:
    return [graph.create_user(n) for n in ("ana", "bo", "cy")]


def _set(graph: EmulatorClient, user: str, availability: str, activity: str) -> dict[str, Any]:
    r = graph.admin("POST", f"users/{user}/presence", json={"availability": availability, "activity": activity})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_reads_and_writes(graph: EmulatorClient, people: list[dict[str, Any]]) -> None:
    ana, bo, _ = people
    first = graph.get(f"communications/presences/{ana['id']}").json()
    assert (first["availability"], first["activity"]) == ("PresenceUnknown", "PresenceUnknown")
    _set(graph, ana["id"], "Busy", "InAMeeting")
    assert graph.get(f"users/{ana['userPrincipalName']}/presence").json()["activity"] == "InAMeeting"
    assert graph.get(f"communications/presences/{ana['userPrincipalName']}").status_code == 400  # object ids only
    many = graph.post("communications/getPresencesByUserId", json={"ids": [ana["id"], bo["id"]]}).json()["value"]
    assert {p["id"]: p["availability"] for p in many} == {ana["id"]: "Busy", bo["id"]: "PresenceUnknown"}
    too_many = [ana["id"]] * 651
    assert graph.post("communications/getPresencesByUserId", json={"ids": too_many}).status_code == 400
    assert graph.admin("POST", f"users/{ana['id']}/presence", json={"availability": "Sleepy",
                                                                     "activity": "Away"}).status_code == 400
    # setPresence: the app's own session, Graph's allowed pairs only.
    good = {"sessionId": graph.info["client_id"], "availability": "Away", "activity": "Away",
            "expirationDuration": "PT1H"}
    assert graph.post(f"users/{bo['id']}/presence/setPresence", json=good).status_code == 200
    assert graph.get(f"communications/presences/{bo['id']}").json()["availability"] == "Away"
    assert graph.post(f"users/{bo['id']}/presence/setPresence",
                      json={**good, "activity": "InAMeeting"}).status_code == 400
    assert graph.post(f"users/{bo['id']}/presence/setPresence",
                      json={**good, "sessionId": "someone-else"}).status_code == 400
    # A user with Presence.Read sees only their own presence; personal accounts none.
    own = graph.user_token(ana["userPrincipalName"], "Presence.Read")
    assert graph.get("me/presence", headers=_bearer(own)).json()["availability"] == "Busy"
    assert graph.get(f"communications/presences/{bo['id']}", headers=_bearer(own)).status_code == 403


def test_subscriptions_are_delegated_only_and_bounded(graph: EmulatorClient, people: list[dict[str, Any]],
                                                      receiver: Receiver) -> None:
    ana, bo, cy = people
    url = receiver.url("presence")
    one = f"communications/presences/{bo['id']}"
    assert graph.post("subscriptions", json=_sub(graph, url, one)).status_code == 403  # app-only token
    reader = graph.user_token(ana["userPrincipalName"], "Presence.Read")
    assert graph.post("subscriptions", json=_sub(graph, url, one), headers=_bearer(reader)).status_code == 403
    token = graph.user_token(ana["userPrincipalName"], "Presence.Read.All")
    headers = _bearer(token)
    ids = ",".join(f"'{u['id']}'" for u in (bo, cy))
    listed = f"/communications/presences?$filter=id in ({ids})"
    assert graph.post("subscriptions", json=_sub(graph, url, listed, changeType="created"),
                      headers=headers).status_code == 400
    assert graph.post("subscriptions", json=_sub(graph, url, listed, expirationDateTime=_in(graph, 61)),
                      headers=headers).status_code == 400
    crowd = ",".join(f"'{bo['id']}'" for _ in range(651))
    assert graph.post("subscriptions", json=_sub(graph, url, f"communications/presences?$filter=id in ({crowd})"),
                      headers=headers).status_code == 400
    assert graph.post("subscriptions", json=_sub(graph, url, "communications/presences"),
                      headers=headers).status_code == 400
    rich = _sub(graph, url, listed, includeResourceData=True)  # no certificate
    assert graph.post("subscriptions", json=rich, headers=headers).status_code == 400
    made = graph.post("subscriptions", json=_sub(graph, url, listed), headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["creatorId"] == ana["id"]
    # One subscription per app and signed-in user.
    again = graph.post("subscriptions", json=_sub(graph, url, one), headers=headers)
    assert again.status_code == 403, again.text

    _set(graph, bo["id"], "Busy", "InACall")
    _set(graph, ana["id"], "Away", "Away")  # not in the filter: not notified
    _set(graph, cy["id"], "DoNotDisturb", "Presenting")
    items = receiver.wait_items(2, path="presence")
    assert sorted(i["resource"] for i in items) == sorted([f"communications/presences/{bo['id']}",
                                                           f"communications/presences/{cy['id']}"])
    assert {i["changeType"] for i in items} == {"updated"}
    _set(graph, bo["id"], "Available", "Available")  # later than ana's change: ana's would have come first
    items = receiver.wait_items(3, path="presence")
    assert not [i for i in items if ana["id"] in i["resource"]]
    got = next(i for i in items if i["resourceData"]["id"] == bo["id"])
    assert got["resourceData"] == {"@odata.type": "#microsoft.graph.presence", "id": bo["id"],
                                   "@odata.id": f"users/{bo['id']}/presence"}


@pytest.mark.parametrize("emulator_config", [{"presence_rich_required": True}], indirect=True)
def test_rich_can_be_required(graph: EmulatorClient, people: list[dict[str, Any]], receiver: Receiver) -> None:
    ana, bo, _ = people
    token = graph.user_token(ana["userPrincipalName"], "Presence.Read.All")
    r = graph.post("subscriptions", json=_sub(graph, receiver.url(), f"communications/presences/{bo['id']}"),
                   headers=_bearer(token))
    assert r.status_code == 400 and "includeResourceData" in r.text


def test_each_user_of_an_app_has_their_own_and_renewal_stays_within_an_hour(
        graph: EmulatorClient, people: list[dict[str, Any]], receiver: Receiver) -> None:
    ana, bo, cy = people
    listed = f"communications/presences?$filter=id in ('{cy['id']}')"
    made = []
    for user, path in ((ana, "ana"), (bo, "bo")):
        headers = _bearer(graph.user_token(user["userPrincipalName"], "Presence.Read.All"))
        r = graph.post("subscriptions", json=_sub(graph, receiver.url(path), listed), headers=headers)
        assert r.status_code == 201, r.text  # the same resource, another signed-in user: not a duplicate
        made.append((r.json()["id"], headers))
    _set(graph, cy["id"], "Away", "Away")
    assert len(receiver.wait_items(1, path="ana")) == 1 and len(receiver.wait_items(1, path="bo")) == 1
    sub_id, headers = made[0]
    too_long = graph.patch(f"subscriptions/{sub_id}", json={"expirationDateTime": _in(graph, 61)}, headers=headers)
    assert too_long.status_code == 400, too_long.text
    renewed = graph.patch(f"subscriptions/{sub_id}", json={"expirationDateTime": _in(graph, 59)}, headers=headers)
    assert renewed.status_code == 200, renewed.text


def _decrypt(content: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """Graph's documented decryption: RSA-OAEP(SHA-1) data key, AES-CBC with iv = key[:16], PKCS7."""
    data_key = key.decrypt(base64.b64decode(content["dataKey"]), asym_padding.OAEP(
        mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    decryptor = Cipher(algorithms.AES(data_key), modes.CBC(data_key[:16])).decryptor()
    padded = decryptor.update(base64.b64decode(content["data"])) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return dict(json.loads(unpadder.update(padded) + unpadder.finalize()))


def test_rich_notifications_carry_the_presence(graph: EmulatorClient, people: list[dict[str, Any]],
                                               receiver: Receiver) -> None:
    ana, bo, _ = people
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    body = _sub(graph, receiver.url("rich"), f"communications/presences/{bo['id']}", includeResourceData=True,
                encryptionCertificate=base64.b64encode(certificate.public_bytes(Encoding.DER)).decode(),
                encryptionCertificateId="k1")
    headers = _bearer(graph.user_token(ana["userPrincipalName"], "Presence.Read.All"))
    made = graph.post("subscriptions", json=body, headers=headers)
    assert made.status_code == 201, made.text
    _set(graph, bo["id"], "Busy", "InACall")
    (item,) = receiver.wait_items(1, path="rich")
    content = _decrypt(item["encryptedContent"], key)
    assert content["@odata.id"] == f"users/{bo['id']}/presence" and content["id"] == bo["id"]
    assert (content["availability"], content["activity"]) == ("Busy", "InACall")
