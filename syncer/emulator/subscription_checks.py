"""What Graph checks in a subscription request before it runs the validation handshake
(https://learn.microsoft.com/graph/api/subscription-post-subscriptions).

Each function takes the parsed request and either returns the checked value or raises
:class:`~syncer.emulator.errors.GraphHTTPError` with Graph's status, code and (observed or guessed) message: the
views in :mod:`syncer.emulator.subscriptions` only call these in Graph's order. Guesses are listed in
docs/emulator-subscriptions-delivery.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from flask import request

from syncer.emulator.clock import parse_iso
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families import RESOURCE_TYPES, SUBSCRIBABLE
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.identity import require_app
from syncer.emulator.rich import CertificateError, EncryptionCertificate, load_encryption_certificate
from syncer.emulator.subscription_model import ALL_CHANGE_TYPES, ParsedResource, parse_resource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import TenantStore

#: Properties a create body may carry (read-only ones are tolerated the way OData ignores computed values).
CREATABLE = {
    "resource", "changeType", "notificationUrl", "lifecycleNotificationUrl", "expirationDateTime", "clientState",
    "includeResourceData", "encryptionCertificate", "encryptionCertificateId", "latestSupportedTlsVersion",
    "notificationQueryOptions", "notificationUrlAppId",
}
READ_ONLY = {"id", "applicationId", "creatorId", "notificationContentType", "@odata.type", "@odata.context"}
WEB_PUSH = {"vapidPublicKey", "webPushEncryptionP256dhPublicKey", "webPushEncryptionSecret"}
PATCHABLE = {"expirationDateTime", "notificationUrl", "encryptionCertificate", "encryptionCertificateId"}
TLS_VERSIONS = {"v1_0", "v1_1", "v1_2", "v1_3"}
MAX_CLIENT_STATE = 128
MAX_CERTIFICATE_ID = 128


@dataclass(frozen=True)
class Caller:
    """The app behind the current request's token (and the signed-in user, for a delegated token)."""

    tenant_id: str
    client_id: str
    roles: frozenset[str]
    service_principal_id: str
    user_id: str | None = None
    scopes: frozenset[str] = frozenset()
    personal: bool = False
    token_serial: int = 0

    @property
    def creator_id(self) -> str:
        """The subscription's `creatorId`: the signed-in user, or the app's service principal
        (https://learn.microsoft.com/graph/api/resources/subscription#properties)."""
        return self.user_id or self.service_principal_id


def caller() -> Caller:
    """The app behind the request's token (no permission yet: which one depends on the resource)."""
    # No permission here: which one is needed depends on the resource in the body (checked later).
    app = require_app()
    return Caller(
        tenant_id=app.tenant_id,
        client_id=app.client_id,
        roles=frozenset(app.roles),
        service_principal_id=app.service_principal_id,
        user_id=app.user_id,
        scopes=app.scopes,
        personal=app.personal,
        token_serial=app.token_serial,
    )


def extension_error(status: int, reason: str, *, operation: str = "Create") -> GraphHTTPError:
    """Graph's wrapped workload error: ``ExtensionError`` with "Operation: ...; Exception: [Status Code: ...]"."""
    phrase = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(status, str(status))
    return GraphHTTPError(
        status, "ExtensionError", f"Operation: {operation}; Exception: [Status Code: {phrase}; Reason: {reason}]"
    )


def invalid(message: str, code: str = "InvalidRequest") -> GraphHTTPError:
    """A 400 with Graph's usual code for a bad subscription property."""
    return GraphHTTPError(400, code, message)


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or Graph's 400 for an empty or malformed one."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise GraphHTTPError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GraphHTTPError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from exc
    if not isinstance(body, dict):
        raise GraphHTTPError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
    return body


def check_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    """OData refuses properties the type does not define."""
    for name in body:
        if name in allowed or name in READ_ONLY or name.startswith("@odata."):
            continue
        raise GraphHTTPError(
            400,
            "BadRequest",
            f"The property '{name}' does not exist on type 'microsoft.graph.subscription'. "
            "Make sure to only use property names that are defined by the type.",
        )


def string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string property (None when absent), or 400 when it has another type or a required one is missing."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is a required property for subscription creation.")
        return None
    if not isinstance(value, str):
        raise GraphHTTPError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
    if required and not value.strip():
        raise invalid(f"{name} is a required property for subscription creation.")
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(state: EmulatorState, url: str, *, field: str) -> None:
    """Graph needs absolute HTTPS URLs; the emulator also accepts plain HTTP on loopback (configurable)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and state.config.allow_http_loopback and _is_loopback(parts.hostname):
        return
    raise invalid(f"Invalid '{field}' value '{url}': the URL must be an absolute https URL.")


def expiration(state: EmulatorState, value: str | None, parsed: ParsedResource, *, rich: bool) -> datetime:
    """Apply the 45-minute floor and the per-resource maximum (https://learn.microsoft.com/graph/api/resources/subscription#subscription-lifetime)."""
    if value is None:
        raise invalid("expirationDateTime is a required property for subscription creation.")
    try:
        requested = parse_iso(value)
    except ValueError as exc:
        raise GraphHTTPError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.") from exc
    now = state.clock.now()
    floor = now + timedelta(minutes=state.config.subscription_min_minutes)
    if requested < floor:
        return floor
    max_minutes = max_lifetime_minutes(state, parsed, rich=rich)
    ceiling = now + timedelta(minutes=max_minutes)
    if requested > ceiling:
        if state.config.subscription_expiry_overflow == "clamp":
            return ceiling
        raise GraphHTTPError(400, "ExtensionError", f"Subscription expiration can only be {max_minutes} minutes in the future.")
    return requested


def max_lifetime_minutes(state: EmulatorState, parsed: ParsedResource, *, rich: bool) -> int:
    """Maximum lifetime for the type (config overrides first), rich or basic."""
    spec = parsed.spec
    overrides = state.config.subscription_max_minutes
    key = f"{spec.resource_type}:rich" if rich else spec.resource_type
    if key in overrides:
        return int(overrides[key])
    if rich and spec.max_minutes_rich is not None:
        return spec.max_minutes_rich
    return spec.max_minutes


def change_types(text: str, parsed: ParsedResource) -> frozenset[str]:
    """The comma list of change types, each one allowed for the resource type (observed message)."""
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in ALL_CHANGE_TYPES or name not in parsed.spec.change_types:
            raise invalid(f"Invalid 'changeType' attribute: '{name}'.")
    return frozenset(names)


def resolve(state: EmulatorState, caller: Caller, resource: str) -> ParsedResource:
    """Parse the resource path and check that what it names exists in the tenant."""
    trimmed = resource.strip().lstrip("/")
    if trimmed.lower().startswith("me/") or trimmed.lower() == "me":
        if caller.user_id is None:
            raise GraphHTTPError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        resource = f"users/{caller.user_id}{trimmed[2:]}"
    parsed = parse_resource(resource, SUBSCRIBABLE)
    if parsed is None:
        raise extension_error(400, f"The value '{resource}' of parameter 'Resource' is invalid.")
    tenant = state.store.tenant(caller.tenant_id)
    if parsed.key.startswith("drives/") and parsed.ids[0] not in tenant.drives:
        raise extension_error(404, "The specified drive was not found.")
    provision = parsed.spec.provision
    family_user = parsed.ids[0] if provision is not None and parsed.key.startswith("users/") else None
    if provision is not None and family_user is not None:
        with state.lock:
            user = find_user(tenant, family_user)
        if user is None:
            raise extension_error(404, "The specified object was not found in the store.")
        user_id = str(user["id"])
        uid = user_id.lower()
        key = parsed.key
        # The mailbox (well-known folders) and the drive exist in Graph before anyone asks; the emulator makes
        # them on first use, so make them now or the subscription could never match their changes.
        provision(state, tenant, user_id)
        for segment in ("mailfolders", "contactfolders"):
            if f"/{segment}/" in key:
                folder = parsed.ids[1].lower()
                well_known = tenant.well_known.get((user_id, folder))
                if well_known is not None:
                    key = key.replace(f"/{segment}/{folder}/", f"/{segment}/{well_known.lower()}/", 1)
        # the store names items by user id; a UPN in the path is matched through the store's UPN aliases
        key = key.replace(f"users/{family_user.lower()}/", f"users/{uid}/", 1)
        parsed = ParsedResource(
            spec=parsed.spec, key=key, ids=parsed.ids, mailbox=uid, select=parsed.select, query=parsed.query
        )
    return parsed


def check_permission(caller: Caller, parsed: ParsedResource, *, operation: str = "Create",
                     tenant: TenantStore | None = None) -> None:
    """403 unless the token holds one of the permissions the resource needs.

    A signed-in user needs a delegated permission that reads the type, may watch only their own data (mailbox,
    To Do, OneDrive), and a personal account only the types Graph serves to personal accounts
    (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions).
    """
    if caller.user_id is None:
        if not caller.roles.intersection(parsed.spec.permissions):
            # Observed body (outer status not shown in reports; 403 is our guess).
            raise extension_error(403, "Access denied", operation=operation)
        return
    rtype = RESOURCE_TYPES.get(parsed.spec.resource_type)
    wanted = parsed.spec.delegated_permissions
    if wanted is None:
        wanted = rtype.delegated_read if rtype is not None else frozenset()
    allowed = rtype is not None and bool(caller.scopes & wanted) \
        and (rtype.personal_accounts or not caller.personal)
    owner = parsed.mailbox
    if owner is None and parsed.key.startswith("drives/") and tenant is not None:
        owner = tenant.drives.get(parsed.ids[0])
    if not allowed or (owner is not None and owner.lower() != caller.user_id.lower()):
        raise extension_error(403, "Access denied", operation=operation)


def authorize_delegation(state: EmulatorState, caller: Caller, subscription_id: str, *, operation: str) -> None:
    """A user's subscription runs on the user's authorization: creating, renewing or reauthorizing it with a token
    issued before the user's sessions were revoked is refused [UNCONFIRMED: Graph keeps a token per subscription and
    fails to refresh it, https://learn.microsoft.com/graph/change-notifications-lifecycle-events]; a fresh token
    of the same user records a new authorization (delivery resumes)."""
    if caller.user_id is None:
        return
    with state.lock:
        if state.grants.revoked_since(caller.tenant_id, caller.user_id, caller.token_serial) is not None:
            raise extension_error(403, "The user's sessions were revoked; sign in again to authorize this subscription.",
                                  operation=operation)
        state.grants.subscription_tokens[subscription_id] = caller.token_serial


def check_rich(state: EmulatorState, body: dict[str, Any], parsed: ParsedResource) -> tuple[bool, EncryptionCertificate | None]:
    """includeResourceData rules (https://learn.microsoft.com/graph/change-notifications-with-resource-data): supported type, certificate and id, $select for Outlook."""
    include = body.get("includeResourceData", False)
    if include is None:
        include = False
    if not isinstance(include, bool):
        raise GraphHTTPError(400, "BadRequest", f"Cannot convert the literal '{include}' to the expected type 'Edm.Boolean'.")
    certificate_text = string(body, "encryptionCertificate")
    certificate_id = string(body, "encryptionCertificateId")
    if certificate_id is not None and len(certificate_id) > MAX_CERTIFICATE_ID:
        raise invalid(f"encryptionCertificateId cannot be longer than {MAX_CERTIFICATE_ID} characters.")
    if not include:
        return False, None
    if parsed.spec.max_minutes_rich is None:
        raise extension_error(400, parsed.spec.rich_refusal)
    if not certificate_text:
        raise invalid("A valid encryptionCertificate value was not provided for a subscription with includeResourceData set to true.")
    if not certificate_id:
        raise invalid("A valid encryptionCertificateId value was not provided for a subscription with includeResourceData set to true.")
    if parsed.spec.quota == "mailbox" and not parsed.select:
        raise invalid(parsed.spec.rich_refusal)
    try:
        return True, load_encryption_certificate(certificate_text)
    except CertificateError as exc:
        raise invalid(str(exc)) from exc
