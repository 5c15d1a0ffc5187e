"""Reading what Graph POSTs to the receiver: pure functions of bytes, no Flask.

The receiver (``syncer.receiver.receive``) only adapts HTTP to this module and :mod:`syncer.receiver.checks`:
it hands over the body and gets back which notifications may be stored as work and which were refused,
and why. Keeping the parsing and the checks here means they are tested without a server and that
nothing about trust is decided in a view function.

What is checked (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks and https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data):

* here, the envelope (``changeNotificationCollection``): JSON, bounded size and depth, ``value`` a list,
  and each item's shape;
* in :mod:`syncer.receiver.checks`, each item's ``clientState`` against the subscription's secret
  (constant time) and ``tenantId`` against the subscription's tenant;
* rich notifications: the JWTs of ``validationTokens`` that concern our apps and each
  ``encryptedContent``, with the checks and cryptography of :mod:`syncer.receiver.rich`.

Every refusal carries a short ``reason`` that is a metric label; none carries a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from syncer import resources
from syncer.errors import NotificationError

# Rich notifications (tokens, keys, decryption) live in syncer.receiver.rich; the names callers used to
# import from here are re-exported so that they keep working.
from syncer.receiver.rich import DEFAULT_ISSUER_TEMPLATE as DEFAULT_ISSUER_TEMPLATE
from syncer.receiver.rich import GRAPH_PUBLISHER_APP_ID as GRAPH_PUBLISHER_APP_ID
from syncer.receiver.rich import DecryptionKey as DecryptionKey
from syncer.receiver.rich import EncryptedContent as EncryptedContent
from syncer.receiver.rich import JwksCache as JwksCache
from syncer.receiver.rich import KeyRing as KeyRing
from syncer.receiver.rich import StaticKeys as StaticKeys
from syncer.receiver.rich import TokenCheck as TokenCheck
from syncer.receiver.rich import TokenValidator as TokenValidator
from syncer.receiver.rich import load_private_key as load_private_key
from syncer.storable import has_nul

# The values Graph sends; syncer.resources holds the one list (and which types accept which).
CHANGE_TYPES = frozenset(resources.CHANGE_TYPES)
LIFECYCLE_EVENTS = resources.ALL_LIFECYCLE

Kind = Literal["change", "lifecycle"]

# Field length caps follow the inbox columns (syncer.schema.inbox) so that an accepted item always fits
# its row: an over-long field must be refused here, not fail a whole group commit later.
_MAX_ID = 64
_MAX_RESOURCE = 2000
_MAX_RESOURCE_ID = 500
_MAX_CLIENT_STATE = 255
_MAX_CERT_ID = 128


@dataclass(frozen=True)
class Limits:
    """Sanity bounds on a POST body, beyond the byte cap the HTTP layer enforces."""

    max_items: int = 1000  # Graph batches notifications, but never thousands per POST
    max_depth: int = 32  # Graph's documents are a few levels deep; deeper is an attack on the parser
    max_nodes: int = 200_000  # total JSON values (objects, arrays, scalars)
    max_tokens: int = 100  # one validationToken per (app, tenant) pair in the POST
    max_token_length: int = 16_384


# --- parsing ----------------------------------------------------------------------------------


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made building one
# per item a measurable share of the receiver's CPU. Treat instances as immutable all the same.
@dataclass(slots=True)
class Notification:
    """One well-formed item of a collection; not yet trusted."""

    index: int
    subscription_id: str
    tenant_id: str
    client_state: str | None
    kind: Kind
    event: str  # changeType or lifecycleEvent
    resource: str | None
    resource_id: str | None
    etag: str | None
    notification_id: str | None
    encrypted: EncryptedContent | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def dedupe_key(self) -> str:
        """Hash that makes Graph's duplicate deliveries of this item collapse to one inbox row.

        subscriptionId + changeType/lifecycleEvent + resource + (etag or notification id): a
        redelivery hashes the same; a new version of an Outlook item carries a new etag.
        """
        parts = (
            self.subscription_id,
            self.kind,
            self.event,
            self.resource or "",
            self.etag or self.notification_id or "",
        )
        return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def payload(self, decrypted: Mapping[str, Any] | None = None, *, undecrypted: str | None = None) -> dict[str, Any]:
        """The item as stored in the inbox: without ``clientState`` (a secret) and without the ciphertext,
        with the decrypted resource under ``decryptedContent`` when there was one, or why it could not be
        decrypted (``undecrypted``: the worker then reads the resource by id)."""
        out = {k: v for k, v in self.raw.items() if k not in ("clientState", "encryptedContent")}
        if self.encrypted is not None:
            out["encryptionCertificateId"] = self.encrypted.certificate_id
        if decrypted is not None:
            out["decryptedContent"] = dict(decrypted)
        if undecrypted is not None:
            out["undecrypted"] = undecrypted
        return out


@dataclass(frozen=True)
class Rejection:
    """An item (or a whole POST, ``index`` = -1) refused, with a metric-label ``reason``."""

    index: int
    reason: str
    subscription_id: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class NotificationCollection:
    """A parsed ``changeNotificationCollection``: well-formed items, refused items, the raw tokens."""

    notifications: tuple[Notification, ...]
    rejected: tuple[Rejection, ...]
    validation_tokens: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.notifications) + len(self.rejected)



# A JSON string, escapes included (the unrolled form: sre's tight loops, no per-character alternation).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _check_size(raw: bytes | bytearray, limits: Limits) -> int:
    """Refuse, before parsing, a body holding more JSON values than ``max_nodes``; return its bracket count.

    A parse builds one Python object per value (~60 bytes for an empty list), so a 4 MiB body of
    ``[[],[],...]`` would cost ~100 MB and seconds of CPU to parse and walk. A document has at most
    1 + commas + opening brackets values; brackets and commas inside strings only overcount, so a
    body over the bound is counted again with its strings blanked (C speed, still no parse).
    """
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets + raw.count(b",") + 1 <= limits.max_nodes:
        return brackets
    bare = _JSON_STRING.sub(b"", raw)
    brackets = bare.count(b"{") + bare.count(b"[")
    if brackets + bare.count(b",") + 1 > limits.max_nodes:
        raise NotificationError("too_large", "the JSON document has too many values")
    return brackets


def _check_depth(document: Any, brackets: int, limits: Limits) -> None:
    # Bounded by _check_size: at most max_nodes containers. Skipped when there are too few brackets to
    # nest that deep. Iterative: a recursive walk would itself be the stack overflow a deep document aims for.
    if brackets <= limits.max_depth:
        return
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth >= limits.max_depth and node:
            raise NotificationError("too_deep", f"the JSON document nests deeper than {limits.max_depth}")
        children = node.values() if type(node) is dict else node
        stack.extend((v, depth + 1) for v in children if type(v) is dict or type(v) is list)


def _opt_str(item: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(key)
    return value


def _req_str(item: Mapping[str, Any], key: str, limit: int) -> str:
    value = _opt_str(item, key, limit)
    if not value:
        raise ValueError(key)
    return value


def _b64(value: Any, key: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError(key)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(key) from None


def _parse_encrypted(value: Any) -> EncryptedContent:
    if not isinstance(value, dict):
        raise ValueError("encryptedContent")
    return EncryptedContent(
        data=_b64(value.get("data"), "encryptedContent.data"),
        data_key=_b64(value.get("dataKey"), "encryptedContent.dataKey"),
        data_signature=_b64(value.get("dataSignature"), "encryptedContent.dataSignature"),
        certificate_id=_req_str(value, "encryptionCertificateId", _MAX_CERT_ID),
        thumbprint=_opt_str(value, "encryptionCertificateThumbprint", 256),
    )


def _parse_item(index: int, item: Any) -> Notification:
    # The hot path of the receiver (every item of every POST): checks are inlined on purpose.
    if type(item) is not dict:
        raise ValueError("item")
    get = item.get
    subscription_id = get("subscriptionId")
    if type(subscription_id) is not str or not 0 < len(subscription_id) <= _MAX_ID:
        raise ValueError("subscriptionId")
    tenant_id = get("tenantId")
    if type(tenant_id) is not str or not 0 < len(tenant_id) <= _MAX_ID:
        raise ValueError("tenantId")
    client_state = get("clientState")
    if client_state is not None and (type(client_state) is not str or len(client_state) > _MAX_CLIENT_STATE):
        raise ValueError("clientState")
    change_type = get("changeType")
    lifecycle_event = get("lifecycleEvent")
    kind: Kind
    if change_type is not None and lifecycle_event is None:
        if type(change_type) is not str or change_type not in CHANGE_TYPES:  # a list is unhashable
            raise ValueError("changeType")
        kind, event = "change", change_type
    elif lifecycle_event is not None and change_type is None:
        if type(lifecycle_event) is not str or lifecycle_event not in LIFECYCLE_EVENTS:
            raise ValueError("lifecycleEvent")
        kind, event = "lifecycle", lifecycle_event
    else:
        raise ValueError("changeType/lifecycleEvent")
    resource = get("resource")
    if resource is not None and (type(resource) is not str or len(resource) > _MAX_RESOURCE):
        raise ValueError("resource")
    if kind == "change" and not resource:
        raise ValueError("resource")
    resource_data = get("resourceData")
    resource_id = etag = None
    if resource_data is not None:
        if type(resource_data) is not dict:
            raise ValueError("resourceData")
        resource_id = _opt_str(resource_data, "id", _MAX_RESOURCE_ID)
        etag = _opt_str(resource_data, "@odata.etag", 500)
    encrypted_value = get("encryptedContent")
    return Notification(
        index,
        subscription_id,
        tenant_id,
        client_state,
        kind,
        event,
        resource,
        resource_id,
        etag,
        _opt_str(item, "id", 500),
        None if encrypted_value is None else _parse_encrypted(encrypted_value),
        item,
    )


def parse_collection(body: bytes | bytearray | str, *, limits: Limits = Limits()) -> NotificationCollection:
    """Parse a notification POST body.

    Raises :class:`NotificationError` (reason ``malformed_body``, ``too_deep``, ``too_large``,
    ``too_many_items``) when the envelope itself is unusable: the receiver answers 400. A malformed
    *item* does not spoil its neighbours: it comes back in ``rejected`` with reason ``malformed_item``.
    """
    brackets = _check_size(body.encode() if isinstance(body, str) else body, limits)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotificationError("malformed_body", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise NotificationError("malformed_body", "expected a JSON object with a 'value' array")
    _check_depth(document, brackets, limits)
    items = document["value"]
    if len(items) > limits.max_items:
        raise NotificationError("too_many_items", f"more than {limits.max_items} notifications in one POST")
    raw_tokens = document.get("validationTokens")
    tokens: tuple[str, ...] = ()
    if raw_tokens is not None:
        if (
            not isinstance(raw_tokens, list)
            or len(raw_tokens) > limits.max_tokens
            or not all(isinstance(t, str) and 0 < len(t) <= limits.max_token_length for t in raw_tokens)
        ):
            raise NotificationError("malformed_body", "'validationTokens' must be a short list of strings")
        tokens = tuple(raw_tokens)
    parsed: list[Notification] = []
    rejected: list[Rejection] = []
    # Tested once on the body: a U+0000 anywhere is rare, and only then are the ids looked at.
    nul = has_nul(body.encode() if isinstance(body, str) else body)
    for index, item in enumerate(items):
        try:
            notification = _parse_item(index, item)
            if nul and ("\x00" in notification.subscription_id or "\x00" in notification.tenant_id):
                # Our subscription and tenant ids never hold U+0000, and PostgreSQL could not even
                # look one up: refused here, without a query (other fields follow syncer.storable).
                raise ValueError("subscriptionId/tenantId")
            parsed.append(notification)
        except ValueError:
            sub = item.get("subscriptionId") if isinstance(item, dict) else None
            known = isinstance(sub, str) and len(sub) <= _MAX_ID and "\x00" not in sub
            rejected.append(Rejection(index, "malformed_item", sub if known else None))
    return NotificationCollection(tuple(parsed), tuple(rejected), tokens)
