"""syncer.receiver.notifications and checks: parsing, clientState, validation tokens and decryption, with no server."""

from __future__ import annotations

import base64
import threading
from collections.abc import Collection, Mapping
from typing import Any

import notification_builders as nb
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from syncer.errors import NotificationError
from syncer.receiver.checks import SubscriptionInfo, check_collection, client_state_matches
from syncer.receiver.notifications import (
    DecryptionKey,
    EncryptedContent,
    JwksCache,
    KeyRing,
    Limits,
    StaticKeys,
    TokenValidator,
    parse_collection,
)

SUB = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
RICH_SUB = "76222963-cc7b-42d2-882d-8aaa69cb2ba3"


def lookup_of(*infos: SubscriptionInfo) -> Any:
    table = {i.subscription_id: i for i in infos}

    def lookup(ids: Collection[str]) -> Mapping[str, SubscriptionInfo]:
        return {i: table[i] for i in ids if i in table}

    return lookup


BASIC = SubscriptionInfo(SUB, nb.TENANT, nb.CLIENT_STATE, "users")
RICH = SubscriptionInfo(RICH_SUB, nb.TENANT, nb.CLIENT_STATE, "teams/chats", include_resource_data=True)


def validator(**kwargs: Any) -> TokenValidator:
    keys = StaticKeys({"graph-key-1": nb.rsa_key("graph-signing").public_key()})
    return TokenValidator(keys, app_ids=[nb.APP_ID], **kwargs)


def keyring() -> KeyRing:
    return KeyRing(
        [
            DecryptionKey("cert-2026-01", nb.rsa_key("cert-old")),
            DecryptionKey("cert-2026-02", nb.rsa_key("cert-new")),
        ]
    )


# --- parsing ---------------------------------------------------------------------------------------


def test_parses_the_documented_outlook_example() -> None:
    document = {
        "value": [
            {
                "id": "lsgTZMr9KwAAA",
                "subscriptionId": SUB,
                "subscriptionExpirationDateTime": "2026-03-20T11:00:00.0000000+00:00",
                "changeType": "created",
                "clientState": "s3cr3t-state-123",
                "tenantId": nb.TENANT,
                "resource": "Users/622eaaff/Messages/AAMkAGUwNjQ4ZjIxAAA=",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": "Users/622eaaff/Messages/AAMkAGUwNjQ4ZjIxAAA=",
                    "@odata.etag": 'W/"CQAAABYAAACQ2fKdhq8oSKEDSVrdi3lRAAGDUUXn"',
                    "id": "AAMkAGUwNjQ4ZjIxAAA=",
                },
            }
        ]
    }
    collection = parse_collection(orjson.dumps(document))
    (n,) = collection.notifications
    assert (n.kind, n.event, n.resource_id) == ("change", "created", "AAMkAGUwNjQ4ZjIxAAA=")
    assert n.etag == 'W/"CQAAABYAAACQ2fKdhq8oSKEDSVrdi3lRAAGDUUXn"'
    assert n.notification_id == "lsgTZMr9KwAAA"
    payload = n.payload()
    assert "clientState" not in payload, "the secret is never stored"
    assert payload["resourceData"]["id"] == "AAMkAGUwNjQ4ZjIxAAA="


def test_drive_item_shoulder_tap_without_resource_data() -> None:
    item = nb.change_item(SUB)
    item["resource"], item["resourceData"] = "drives/b!fakeDriveId123/root", None
    (n,) = parse_collection(nb.body(item)).notifications
    assert n.resource_id is None and n.resource == "drives/b!fakeDriveId123/root"


@pytest.mark.parametrize("event", ["reauthorizationRequired", "subscriptionRemoved", "missed"])
def test_lifecycle_items(event: str) -> None:
    (n,) = parse_collection(nb.body(nb.lifecycle_item(SUB, event))).notifications
    assert (n.kind, n.event, n.resource) == ("lifecycle", event, None)


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"value": {}}', b'{"values": []}', b'"x"', b'{"value": [], "validationTokens": "x"}',
     b'{"value": [], "validationTokens": [1]}', b"\xff\xfe"],
)
def test_malformed_envelopes_raise(raw: bytes) -> None:
    with pytest.raises(NotificationError) as info:
        parse_collection(raw)
    assert info.value.reason == "malformed_body"


def test_depth_and_size_limits() -> None:
    deep: Any = "x"
    for _ in range(50):
        deep = {"a": deep}
    item = nb.change_item(SUB)
    item["resourceData"]["nested"] = deep
    with pytest.raises(NotificationError) as info:
        parse_collection(nb.body(item))
    assert info.value.reason == "too_deep"
    with pytest.raises(NotificationError) as info:
        parse_collection(nb.body(*[nb.change_item(SUB)] * 3), limits=Limits(max_items=2))
    assert info.value.reason == "too_many_items"
    with pytest.raises(NotificationError) as info:
        parse_collection(b'{"value": [' + b",".join([b"1"] * 1000) + b"]}", limits=Limits(max_nodes=500))
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda i: i.pop("subscriptionId"),
        lambda i: i.update(subscriptionId=7),
        lambda i: i.update(subscriptionId="x" * 65),
        lambda i: i.pop("tenantId"),
        lambda i: i.update(changeType="exploded"),
        lambda i: i.update(changeType=["updated"]),  # unhashable: must not reach a set lookup
        lambda i: (i.pop("changeType"), i.update(lifecycleEvent={"x": 1})),
        lambda i: i.update(lifecycleEvent="missed"),  # both changeType and lifecycleEvent
        lambda i: i.pop("changeType"),  # neither
        lambda i: i.update(resource=None),
        lambda i: i.update(resource="r" * 2001),
        lambda i: i.update(resourceData=[1]),
        lambda i: i.update(clientState=["x"]),
        lambda i: i.update(encryptedContent={"data": "!!", "dataKey": "", "dataSignature": ""}),
    ],
)
def test_a_malformed_item_is_refused_alone(mutate: Any) -> None:
    bad = nb.change_item(SUB)
    mutate(bad)
    collection = parse_collection(nb.body(nb.change_item(SUB), bad, "not an object"))  # type: ignore[arg-type]
    assert len(collection.notifications) == 1
    assert [(r.index, r.reason) for r in collection.rejected] == [(1, "malformed_item"), (2, "malformed_item")]


def test_dedupe_key_is_stable_and_discriminating() -> None:
    a = nb.change_item(SUB, user_id="u1", etag="e1")
    (n1,) = parse_collection(nb.body(a)).notifications
    (n2,) = parse_collection(nb.body(dict(a, subscriptionExpirationDateTime="2030-01-01T00:00:00Z"))).notifications
    assert n1.dedupe_key == n2.dedupe_key and len(n1.dedupe_key) == 64
    others = [
        nb.change_item(SUB, user_id="u1", etag="e2"),
        nb.change_item(SUB, user_id="u2", etag="e1"),
        nb.change_item(SUB, user_id="u1", etag="e1", change_type="deleted"),
        nb.change_item("other-sub", user_id="u1", etag="e1"),
    ]
    keys = {n.dedupe_key for n in parse_collection(nb.body(*others)).notifications}
    assert len(keys) == 4 and n1.dedupe_key not in keys


# --- clientState ------------------------------------------------------------------------------------


def test_client_state_comparison() -> None:
    assert client_state_matches("abc", "abc")
    assert not client_state_matches("abc", "abd")
    assert not client_state_matches("abc", None)
    assert not client_state_matches("", "")
    assert not client_state_matches("", None)
    assert client_state_matches("é\u2603", "é\u2603")


def test_check_refuses_unknown_subscription_wrong_state_and_tenant() -> None:
    items = [
        nb.change_item(SUB),
        nb.change_item("unknown-subscription"),
        nb.change_item(SUB, client_state="guess"),
        nb.change_item(SUB, client_state=None),
        nb.change_item(SUB, tenant="99999999-0000-0000-0000-000000000000"),
        nb.lifecycle_item(SUB, "missed"),
    ]
    verdict = check_collection(parse_collection(nb.body(*items)), lookup=lookup_of(BASIC))
    assert [a.notification.index for a in verdict.accepted] == [0, 5]
    assert [(r.index, r.reason) for r in verdict.rejected] == [
        (1, "unknown_subscription"),
        (2, "client_state_mismatch"),
        (3, "client_state_mismatch"),
        (4, "tenant_mismatch"),
    ]


# --- rich notifications ------------------------------------------------------------------------------


def rich_body(*, cert: str = "cert-2026-02", key_name: str = "cert-new", tokens: list[str] | None = None) -> bytes:
    item = nb.rich_item(RICH_SUB, public_key=nb.rsa_key(key_name).public_key(), certificate_id=cert,
                        resource={"id": "m1", "body": {"content": "hi"}})
    return nb.body(item, tokens=[nb.validation_token()] if tokens is None else tokens)


def test_rich_notification_is_verified_and_decrypted_with_either_key_during_rotation() -> None:
    for cert, key_name in [("cert-2026-01", "cert-old"), ("cert-2026-02", "cert-new")]:
        verdict = check_collection(
            parse_collection(rich_body(cert=cert, key_name=key_name)),
            lookup=lookup_of(RICH), tokens=validator(), keys=keyring(),
        )
        assert not verdict.rejected
        (accepted,) = verdict.accepted
        assert accepted.decrypted == {"id": "m1", "body": {"content": "hi"}}
        payload = accepted.notification.payload(accepted.decrypted)
        assert payload["decryptedContent"]["body"]["content"] == "hi"
        assert "encryptedContent" not in payload and payload["encryptionCertificateId"] == cert


def tampered(field: str) -> bytes:
    document = orjson.loads(rich_body())
    content = document["value"][0]["encryptedContent"]
    raw = bytearray(base64.b64decode(content[field]))
    raw[-1] ^= 0x01
    content[field] = base64.b64encode(bytes(raw)).decode()
    return orjson.dumps(document)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (lambda: rich_body(tokens=[]), "token_missing"),
        (lambda: rich_body(tokens=[nb.validation_token(signing_key=nb.rsa_key("forger"))]), "token_signature"),
        # a token for another app is ignored: nothing covers the item
        (lambda: rich_body(tokens=[nb.validation_token(audience="someone-else")]), "token_tenant"),
        (lambda: rich_body(tokens=[nb.validation_token(appid="forger-app")]), "token_appid"),
        (lambda: rich_body(tokens=[nb.validation_token(issued_ago=7200)]), "token_expired"),
        (lambda: rich_body(tokens=[nb.validation_token(issuer="https://evil.example/")]), "token_issuer"),
        (lambda: rich_body(tokens=[nb.validation_token(kid="unknown-kid")]), "token_key_unknown"),
        (lambda: rich_body(tokens=[nb.validation_token(tenant="other-tenant")]), "token_tenant"),
        (lambda: rich_body(tokens=[nb.validation_token(), "not-a-jwt"]), "token_malformed"),
    ],
)
def test_each_rich_forgery_is_refused(raw: Any, reason: str) -> None:
    verdict = check_collection(parse_collection(raw()), lookup=lookup_of(RICH), tokens=validator(), keys=keyring())
    assert not verdict.accepted
    assert [r.reason for r in verdict.rejected] == [reason]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (lambda: tampered("data"), "hmac_mismatch"),
        (lambda: tampered("dataSignature"), "hmac_mismatch"),
        (lambda: tampered("dataKey"), "decrypt_failed"),
        (lambda: rich_body(cert="cert-unknown"), "unknown_certificate"),
        # encrypted for the old key but labelled with the new id: the wrapped key does not decrypt
        (lambda: rich_body(cert="cert-2026-02", key_name="cert-old"), "decrypt_failed"),
    ],
)
def test_content_that_does_not_decrypt_keeps_the_item_without_it(raw: Any, reason: str) -> None:
    # clientState and token are good: the change is true, only its content is unusable. Kept as a basic
    # item (the worker reads the resource by id), its content never trusted.
    verdict = check_collection(parse_collection(raw()), lookup=lookup_of(RICH), tokens=validator(), keys=keyring())
    (accepted,) = verdict.accepted
    assert not verdict.rejected and accepted.decrypted is None and accepted.undecrypted == reason
    payload = accepted.notification.payload(accepted.decrypted, undecrypted=accepted.undecrypted)
    assert "decryptedContent" not in payload and payload["undecrypted"] == reason


def test_hmac_is_checked_before_decrypting() -> None:
    # A ciphertext that is not even whole AES blocks but has a valid MAC reaches the decryptor (and fails
    # there); the same with a bad MAC is refused as hmac_mismatch: the MAC decides first.
    import os

    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

    key = os.urandom(32)
    data = b"not-blocks"
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    oaep = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    wrapped = nb.rsa_key("cert-new").public_key().encrypt(key, oaep)
    good = EncryptedContent(data, wrapped, mac.finalize(), "cert-2026-02", None)
    with pytest.raises(NotificationError) as info:
        keyring().decrypt(good)
    assert info.value.reason == "decrypt_failed"
    bad = EncryptedContent(data, wrapped, b"\0" * 32, "cert-2026-02", None)
    with pytest.raises(NotificationError) as info:
        keyring().decrypt(bad)
    assert info.value.reason == "hmac_mismatch"


OTHER_TENANT = "99999999-0000-0000-0000-000000000000"


def rich_item(sub: str = RICH_SUB, *, tenant: str = nb.TENANT) -> dict[str, Any]:
    return nb.rich_item(sub, public_key=nb.rsa_key("cert-new").public_key(), certificate_id="cert-2026-02",
                        resource={"id": "m1"}, tenant=tenant)


def test_a_token_for_another_app_sharing_the_url_spoils_nothing() -> None:
    # Graph batches the items of several apps sharing one URL, one token per (app, tenant).
    raw = nb.body(nb.change_item(SUB), rich_item(), tokens=[nb.validation_token(audience="another-app"),
                                                           nb.validation_token()])
    verdict = check_collection(parse_collection(raw), lookup=lookup_of(BASIC, RICH), tokens=validator(), keys=keyring())
    assert [a.notification.index for a in verdict.accepted] == [0, 1] and not verdict.rejected


def test_a_bad_token_for_our_app_refuses_the_rich_items_of_its_tenant_only() -> None:
    other_rich = SubscriptionInfo("sub-other-tenant", OTHER_TENANT, nb.CLIENT_STATE, "chats", include_resource_data=True)
    forged = nb.validation_token(signing_key=nb.rsa_key("forger"))
    raw = nb.body(
        nb.change_item(SUB), rich_item(), rich_item("sub-other-tenant", tenant=OTHER_TENANT),
        tokens=[nb.validation_token(), forged, nb.validation_token(tenant=OTHER_TENANT)],
    )
    verdict = check_collection(
        parse_collection(raw), lookup=lookup_of(BASIC, RICH, other_rich), tokens=validator(), keys=keyring()
    )
    # The basic item is judged alone; the other tenant's rich item has its own valid token; ours is
    # suspicious even though a valid token covers it too (a badly signed token claiming our app).
    assert [a.notification.index for a in verdict.accepted] == [0, 2]
    assert [(r.index, r.reason) for r in verdict.rejected] == [(1, "token_signature")]


def test_a_bad_token_does_not_touch_items_that_need_none() -> None:
    raw = nb.body(nb.change_item(SUB), nb.lifecycle_item(SUB, "missed"), tokens=[nb.validation_token(audience=nb.APP_ID, appid="x"), "junk"])
    verdict = check_collection(parse_collection(raw), lookup=lookup_of(BASIC), tokens=validator(), keys=keyring())
    assert len(verdict.accepted) == 2 and not verdict.rejected


def test_tokens_without_a_validator_are_unverifiable() -> None:
    verdict = check_collection(parse_collection(rich_body()), lookup=lookup_of(RICH))
    assert [r.reason for r in verdict.rejected] == ["token_unverifiable"]


def test_thumbprint_mismatch_is_not_decrypted() -> None:
    ring = KeyRing([DecryptionKey("cert-2026-02", nb.rsa_key("cert-new"), thumbprint="AA" * 20)])
    verdict = check_collection(parse_collection(rich_body()), lookup=lookup_of(RICH), tokens=validator(), keys=ring)
    assert [a.undecrypted for a in verdict.accepted] == ["certificate_mismatch"] and not verdict.rejected


# --- the JWKS cache ------------------------------------------------------------------------------------


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    import jwt

    data = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig"}


def test_jwks_cache_follows_openid_configuration_and_refetches_on_rotation_rate_limited() -> None:
    published = {"keys": [jwk(nb.rsa_key("graph-signing"), "graph-key-1")]}
    calls: list[str] = []
    lock = threading.Lock()

    def fetch(url: str) -> Mapping[str, Any]:
        with lock:
            calls.append(url)
        if url.endswith("openid-configuration"):
            return {"jwks_uri": "https://idp.test/keys"}
        return published

    cache = JwksCache("https://idp.test/.well-known/openid-configuration", fetch=fetch, min_refresh_interval=0)
    tokens = TokenValidator(cache, app_ids=[nb.APP_ID])
    assert tokens.validate(nb.validation_token()).tenant_id == nb.TENANT
    assert calls == ["https://idp.test/.well-known/openid-configuration", "https://idp.test/keys"]
    tokens.validate(nb.validation_token())
    assert len(calls) == 2, "keys are cached"
    # The identity platform rotates: a token signed with a new key triggers one refetch.
    published["keys"].append(jwk(nb.rsa_key("graph-signing-2"), "graph-key-2"))
    token = nb.validation_token(signing_key=nb.rsa_key("graph-signing-2"), kid="graph-key-2")
    assert tokens.validate(token).tenant_id == nb.TENANT
    assert len(calls) == 4
    # Unknown kids (forgeries) cannot make it fetch more than once per interval.
    slow = JwksCache("https://idp.test/keys", fetch=fetch, min_refresh_interval=3600)
    for i in range(5):
        with pytest.raises(NotificationError):
            slow.key_for(f"forged-{i}")
    assert len(calls) == 5


def test_jwks_unreachable_is_a_token_failure_not_a_crash() -> None:
    def fetch(url: str) -> Mapping[str, Any]:
        raise ConnectionError("down")

    with pytest.raises(NotificationError) as info:
        JwksCache("https://idp.test/keys", fetch=fetch).key_for("k")
    assert info.value.reason == "token_keys_unavailable"


# --- clock skew and unreachable keys ----------------------------------------------------------------


def test_a_token_from_a_clock_minutes_ahead_is_accepted() -> None:
    # This host's clock 2 minutes behind the issuer's: within Microsoft's default 5-minute skew.
    verdict = check_collection(parse_collection(rich_body(tokens=[nb.validation_token(issued_ago=-120)])),
                               lookup=lookup_of(RICH), tokens=validator(), keys=keyring())
    assert len(verdict.accepted) == 1 and not verdict.rejected and not verdict.deferred


def test_a_token_not_yet_valid_beyond_the_leeway_defers_its_items_and_names_the_skew() -> None:
    raw = nb.body(nb.change_item(SUB), rich_item(), tokens=[nb.validation_token(issued_ago=-600)])
    verdict = check_collection(parse_collection(raw), lookup=lookup_of(BASIC, RICH), tokens=validator(), keys=keyring())
    assert [a.notification.index for a in verdict.accepted] == [0]
    assert not verdict.rejected and [(r.index, r.reason) for r in verdict.deferred] == [(1, "token_not_yet_valid")]
    (problem,) = verdict.problems
    assert "s in the future" in problem and "clock" in problem
    assert 590 <= int(problem.split("is ")[1].split(" s")[0]) <= 610


def test_an_expired_token_is_still_refused() -> None:
    token = nb.validation_token(issued_ago=3600 + 400, lifetime=3600)
    verdict = check_collection(parse_collection(rich_body(tokens=[token])), lookup=lookup_of(RICH),
                               tokens=validator(), keys=keyring())
    assert [r.reason for r in verdict.rejected] == ["token_expired"] and not verdict.deferred


def test_unreachable_signing_keys_defer_rich_items() -> None:
    def fetch(url: str) -> Mapping[str, Any]:
        raise ConnectionError("down")

    tokens = TokenValidator(JwksCache("https://idp.test/keys", fetch=fetch), app_ids=[nb.APP_ID])
    verdict = check_collection(parse_collection(rich_body()), lookup=lookup_of(RICH), tokens=tokens, keys=keyring())
    assert not verdict.accepted and not verdict.rejected
    assert [r.reason for r in verdict.deferred] == ["token_keys_unavailable"]


def test_a_new_signing_key_within_the_refetch_interval_is_transient_not_a_refusal() -> None:
    published = {"keys": [jwk(nb.rsa_key("graph-signing"), "graph-key-1")]}
    cache = JwksCache("https://idp.test/keys", fetch=lambda url: published, min_refresh_interval=3600)
    tokens = TokenValidator(cache, app_ids=[nb.APP_ID])
    assert tokens.validate(nb.validation_token()).tenant_id == nb.TENANT
    # The identity platform rotates moments after our fetch (or a forged kid made us refetch) ...
    published["keys"].append(jwk(nb.rsa_key("graph-signing-2"), "graph-key-2"))
    raw = rich_body(tokens=[nb.validation_token(signing_key=nb.rsa_key("graph-signing-2"), kid="graph-key-2")])
    verdict = check_collection(parse_collection(raw), lookup=lookup_of(RICH), tokens=tokens, keys=keyring())
    # ... so the real token cannot be checked yet: 503 and Graph retries, not a silent refusal.
    assert not verdict.rejected and [r.reason for r in verdict.deferred] == ["token_keys_unavailable"]
    # A kid absent from a set fetched just now is unknown for good.
    fresh = JwksCache("https://idp.test/keys", fetch=lambda url: published, min_refresh_interval=0)
    with pytest.raises(NotificationError) as info:
        fresh.key_for("forged-kid")
    assert info.value.reason == "token_key_unknown"
