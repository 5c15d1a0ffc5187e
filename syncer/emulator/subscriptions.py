"""``/v1.0/subscriptions``: Graph's subscription API, validation handshake included (notes §1-2).

Create checks the body the way Graph does (required fields, change types per resource, lifetimes, rich-notification
rules, URL schemes, quotas, duplicates), then blocks on the validation handshake against ``notificationUrl`` and
``lifecycleNotificationUrl`` before answering ``201``. Get/List/Update/Delete/Reauthorize follow §1.3. Subscriptions
live in :class:`~syncer.emulator.subscription_model.SubscriptionRegistry` (``state.subscriptions``) and expire on the
emulator clock: every call here sweeps expired ones first, and the dispatcher sweeps between deliveries.

Messages marked "observed" are the ones users reported from Graph; the others are our best guess (listed in the
emulator notes) and clients must branch on status and ``code``, never on messages.
"""

from __future__ import annotations

import base64
import ipaddress
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson
import requests
from flask import Blueprint, Response, current_app, request

from syncer.emulator.clock import parse_iso
from syncer.emulator.drive import ensure_user_drive
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import require_app
from syncer.emulator.mailbox import ensure_mailbox
from syncer.emulator.rich import CertificateError, load_encryption_certificate
from syncer.emulator.subscription_model import (
    ALL_CHANGE_TYPES,
    ParsedResource,
    Subscription,
    SubscriptionRegistry,
    parse_resource,
)

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("emulator_subscriptions", __name__)

#: Properties a create body may carry (read-only ones are tolerated the way OData ignores computed values).
_CREATABLE = {
    "resource", "changeType", "notificationUrl", "lifecycleNotificationUrl", "expirationDateTime", "clientState",
    "includeResourceData", "encryptionCertificate", "encryptionCertificateId", "latestSupportedTlsVersion",
    "notificationQueryOptions", "notificationUrlAppId",
}
_READ_ONLY = {"id", "applicationId", "creatorId", "notificationContentType", "@odata.type", "@odata.context"}
_WEB_PUSH = {"vapidPublicKey", "webPushEncryptionP256dhPublicKey", "webPushEncryptionSecret"}
_PATCHABLE = {"expirationDateTime", "notificationUrl", "encryptionCertificate", "encryptionCertificateId"}
_TLS_VERSIONS = {"v1_0", "v1_1", "v1_2", "v1_3"}
_MAX_CLIENT_STATE = 128
_MAX_CERTIFICATE_ID = 128

# Observed handshake failures (notes §1.2).
HANDSHAKE_NOT_200 = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)
HANDSHAKE_MISMATCH = "Subscription validation request failed. Response must exactly match validationToken query parameter."
HANDSHAKE_TIMEOUT = "Subscription validation request timed out."


# --- wiring --------------------------------------------------------------------------------------------------


def install(state: EmulatorState) -> SubscriptionRegistry:
    """Give *state* its subscription registry (idempotent)."""
    if state.subscriptions is None:
        state.subscriptions = SubscriptionRegistry(quotas=state.config.subscription_quotas)
        state.on_reset(state.subscriptions.clear)
    registry: SubscriptionRegistry = state.subscriptions
    return registry


def _state() -> EmulatorState:
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    install(state)
    return state


@dataclass(frozen=True)
class Caller:
    """The app behind the current request's token."""

    tenant_id: str
    client_id: str
    roles: frozenset[str]
    service_principal_id: str


def _caller() -> Caller:
    # No permission here: which one is needed depends on the resource in the body (checked later).
    app = require_app()
    return Caller(
        tenant_id=app.tenant_id,
        client_id=app.client_id,
        roles=frozenset(app.roles),
        service_principal_id=app.service_principal_id,
    )


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json; odata.metadata=minimal")


def _base_url() -> str:
    return request.host_url.rstrip("/")


def _extension_error(status: int, reason: str, *, operation: str = "Create") -> GraphHTTPError:
    """Graph's wrapped workload error: ``ExtensionError`` with "Operation: ...; Exception: [Status Code: ...]"."""
    phrase = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(status, str(status))
    return GraphHTTPError(
        status, "ExtensionError", f"Operation: {operation}; Exception: [Status Code: {phrase}; Reason: {reason}]"
    )


def _invalid(message: str, code: str = "InvalidRequest") -> GraphHTTPError:
    return GraphHTTPError(400, code, message)


def _sweep(state: EmulatorState) -> None:
    registry: SubscriptionRegistry = state.subscriptions
    expired = registry.expire(state.clock.now())
    if expired and state.delivery is not None:
        state.delivery.forget(expired)


# --- validation of the request body ----------------------------------------------------------------------------


def _body() -> dict[str, Any]:
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


def _check_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name in allowed or name in _READ_ONLY or name.startswith("@odata."):
            continue
        raise GraphHTTPError(
            400,
            "BadRequest",
            f"The property '{name}' does not exist on type 'microsoft.graph.subscription'. "
            "Make sure to only use property names that are defined by the type.",
        )


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(f"{name} is a required property for subscription creation.")
        return None
    if not isinstance(value, str):
        raise GraphHTTPError(400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
    if required and not value.strip():
        raise _invalid(f"{name} is a required property for subscription creation.")
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
    raise _invalid(f"Invalid '{field}' value '{url}': the URL must be an absolute https URL.")


def _expiration(state: EmulatorState, value: str | None, parsed: ParsedResource, *, rich: bool) -> datetime:
    """Apply the 45-minute floor and the per-resource maximum (notes §2)."""
    if value is None:
        raise _invalid("expirationDateTime is a required property for subscription creation.")
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


def _change_types(text: str, parsed: ParsedResource) -> frozenset[str]:
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in ALL_CHANGE_TYPES or name not in parsed.spec.change_types:
            raise _invalid(f"Invalid 'changeType' attribute: '{name}'.")
    return frozenset(names)


def _resolve(state: EmulatorState, caller: Caller, resource: str) -> ParsedResource:
    """Parse the resource path and check that what it names exists in the tenant."""
    if resource.strip().lstrip("/").lower().startswith("me/") or resource.strip().lstrip("/").lower() == "me":
        raise GraphHTTPError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    parsed = parse_resource(resource)
    if parsed is None:
        raise _extension_error(400, f"The value '{resource}' of parameter 'Resource' is invalid.")
    tenant = state.store.tenant(caller.tenant_id)
    if parsed.key.startswith("drives/") and parsed.ids[0] not in tenant.drives:
        raise _extension_error(404, "The specified drive was not found.")
    family_user = parsed.mailbox if parsed.mailbox is not None else None
    if parsed.spec.resource_type == "driveItem" and parsed.key.startswith("users/"):
        family_user = parsed.ids[0]
    if family_user is not None:
        with state.lock:
            user = tenant.find_user(family_user)
        if user is None:
            raise _extension_error(404, "The specified object was not found in the store.")
        user_id = str(user["id"])
        uid = user_id.lower()
        key = parsed.key
        # The mailbox (well-known folders) and the drive exist in Graph before anyone asks; the emulator makes
        # them on first use, so make them now or the subscription could never match their changes.
        if parsed.spec.resource_type == "driveItem":
            ensure_user_drive(state, tenant, user_id)
        else:
            ensure_mailbox(state, tenant, user_id)
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


def _check_permission(caller: Caller, parsed: ParsedResource, *, operation: str = "Create") -> None:
    if not caller.roles.intersection(parsed.spec.permissions):
        # Observed body (outer status not shown in reports; 403 is our guess, notes §1.4).
        raise _extension_error(403, "Access denied", operation=operation)


def _check_rich(state: EmulatorState, body: dict[str, Any], parsed: ParsedResource) -> tuple[bool, Any]:
    include = body.get("includeResourceData", False)
    if include is None:
        include = False
    if not isinstance(include, bool):
        raise GraphHTTPError(400, "BadRequest", f"Cannot convert the literal '{include}' to the expected type 'Edm.Boolean'.")
    certificate_text = _string(body, "encryptionCertificate")
    certificate_id = _string(body, "encryptionCertificateId")
    if certificate_id is not None and len(certificate_id) > _MAX_CERTIFICATE_ID:
        raise _invalid(f"encryptionCertificateId cannot be longer than {_MAX_CERTIFICATE_ID} characters.")
    if not include:
        return False, None
    if parsed.spec.max_minutes_rich is None:
        raise _extension_error(400, parsed.spec.rich_refusal)
    if not certificate_text:
        raise _invalid("A valid encryptionCertificate value was not provided for a subscription with includeResourceData set to true.")
    if not certificate_id:
        raise _invalid("A valid encryptionCertificateId value was not provided for a subscription with includeResourceData set to true.")
    if parsed.spec.quota == "mailbox" and not parsed.select:
        raise _invalid(parsed.spec.rich_refusal)
    try:
        return True, load_encryption_certificate(certificate_text)
    except CertificateError as exc:
        raise _invalid(str(exc)) from exc


# --- the handshake ---------------------------------------------------------------------------------------------


def new_validation_token(state: EmulatorState) -> str:
    """An opaque token shaped like Graph's (spaces and colons included, so receivers must URL-decode it)."""
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


def handshake(state: EmulatorState, url: str) -> str | None:
    """POST ``url?validationToken=...`` and check the echo; returns Graph's failure message or None on success."""
    token = new_validation_token(state)
    parts = urlsplit(url)
    if parts.query and not state.config.handshake_keeps_query:
        url = parts._replace(query="").geturl()
    separator = "&" if urlsplit(url).query else "?"
    target = f"{url}{separator}validationToken={quote(token, safe='')}"
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= (local-facts.md)
    started = time.monotonic()
    try:
        response = session.post(
            target,
            data=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=state.config.handshake_timeout_s,
            verify=state.config.notification_tls_verify,
            allow_redirects=False,  # a redirect is not a 200 (guess: Graph does not follow them)
        )
    except requests.Timeout:
        return HANDSHAKE_TIMEOUT
    except requests.RequestException:
        return HANDSHAKE_NOT_200
    finally:
        session.close()
    if time.monotonic() - started > state.config.handshake_timeout_s:
        return HANDSHAKE_TIMEOUT
    if response.status_code != 200:
        return HANDSHAKE_NOT_200
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "text/plain" or response.content.decode("utf-8", errors="replace") != token:
        return HANDSHAKE_MISMATCH
    return None


def _validate_endpoints(state: EmulatorState, urls: list[str]) -> None:
    for url in urls:
        failure = handshake(state, url)
        if failure is not None:
            raise GraphHTTPError(400, "ValidationError", failure)


# --- views -----------------------------------------------------------------------------------------------------


@bp.post("/v1.0/subscriptions")
def create_subscription() -> Response:
    """Create: check, handshake, 201."""
    state = _state()
    caller = _caller()
    _sweep(state)
    body = _body()
    for name in _WEB_PUSH:
        if body.get(name) is not None:
            raise _invalid(f"'{name}' can only be used with Web Push subscriptions.")
    _check_unknown(body, _CREATABLE)
    resource = _string(body, "resource", required=True)
    change_type = _string(body, "changeType", required=True)
    notification_url = _string(body, "notificationUrl", required=True)
    expiration_text = _string(body, "expirationDateTime", required=True)
    assert resource is not None and change_type is not None and notification_url is not None
    parsed = _resolve(state, caller, resource)
    change_types = _change_types(change_type, parsed)
    _check_permission(caller, parsed)
    rich, certificate = _check_rich(state, body, parsed)
    expiration = _expiration(state, expiration_text, parsed, rich=rich)
    client_state = _string(body, "clientState")
    if client_state is not None and len(client_state) > _MAX_CLIENT_STATE:
        raise _invalid(f"clientState cannot be longer than {_MAX_CLIENT_STATE} characters.")
    tls = _string(body, "latestSupportedTlsVersion") or "v1_2"
    if tls not in _TLS_VERSIONS:
        raise _invalid(f"Invalid 'latestSupportedTlsVersion' value '{tls}'.")
    check_url(state, notification_url, field="notificationUrl")
    lifecycle_url = _string(body, "lifecycleNotificationUrl")
    if lifecycle_url is not None:
        check_url(state, lifecycle_url, field="lifecycleNotificationUrl")
    registry: SubscriptionRegistry = state.subscriptions
    _refuse_duplicate(registry, caller, parsed, change_types)
    exceeded = registry.quota_exceeded(tenant_id=caller.tenant_id, application_id=caller.client_id, parsed=parsed)
    if exceeded is not None:
        raise _extension_error(403, f"Maximum number of subscriptions has been reached ({exceeded})")
    _validate_endpoints(state, [notification_url, *([lifecycle_url] if lifecycle_url else [])])
    now = state.clock.time()
    subscription = Subscription(
        id=str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
        seq=registry.next_seq(),
        tenant_id=caller.tenant_id,
        application_id=caller.client_id,
        creator_id=caller.service_principal_id,
        resource=resource,
        parsed=parsed,
        change_type=change_type,
        change_types=change_types,
        notification_url=notification_url,
        expiration=expiration,
        lifecycle_url=lifecycle_url,
        client_state=client_state,
        include_resource_data=rich,
        encryption_certificate=_string(body, "encryptionCertificate") or "",
        encryption_certificate_id=_string(body, "encryptionCertificateId"),
        certificate=certificate,
        latest_supported_tls_version=tls,
        notification_url_app_id=_string(body, "notificationUrlAppId"),
        notification_query_options=_string(body, "notificationQueryOptions"),
        last_reauthorization_notice=now,
    )
    # The handshake took time without a lock: a twin request may have won meanwhile.
    winner = registry.add(subscription)
    if winner is not None:
        raise GraphHTTPError(409, "Conflict", f"Subscription Id {winner.id} already exists for the requested combination")
    if state.delivery is not None:
        state.delivery.subscription_added(subscription)
    return _json(subscription.to_json(base_url=_base_url()), 201)


def _refuse_duplicate(
    registry: SubscriptionRegistry, caller: Caller, parsed: ParsedResource, change_types: frozenset[str]
) -> None:
    duplicate = registry.duplicate_of(
        tenant_id=caller.tenant_id, application_id=caller.client_id, resource_key=parsed.key, change_types=change_types
    )
    if duplicate is not None:
        raise GraphHTTPError(
            409, "Conflict", f"Subscription Id {duplicate.id} already exists for the requested combination"
        )


def _own(state: EmulatorState, caller: Caller, subscription_id: str) -> Subscription:
    registry: SubscriptionRegistry = state.subscriptions
    subscription = registry.get(subscription_id)
    if subscription is None or subscription.tenant_id != caller.tenant_id or subscription.application_id != caller.client_id:
        # Observed for unknown/expired ids (notes §1.3); another app's subscription is hidden the same way (guess).
        raise GraphHTTPError(404, "ResourceNotFound", "The object was not found.")
    return subscription


@bp.get("/v1.0/subscriptions")
def list_subscriptions() -> Response:
    """List this app's subscriptions in the caller's tenant, paged, with clientState null."""
    state = _state()
    caller = _caller()
    _sweep(state)
    for name in request.args:
        if name != "$skiptoken":
            raise GraphHTTPError(400, "BadRequest", f"The query parameter '{name}' is not supported.")
    after = 0
    token = request.args.get("$skiptoken")
    if token is not None:
        try:
            after = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise GraphHTTPError(400, "BadRequest", "The $skiptoken is invalid.") from exc
    registry: SubscriptionRegistry = state.subscriptions
    mine = [s for s in registry.for_app(tenant_id=caller.tenant_id, application_id=caller.client_id) if s.seq > after]
    size = state.config.subscription_page_size
    page = mine[:size]
    base = _base_url()
    payload: dict[str, Any] = {"@odata.context": f"{base}/v1.0/$metadata#subscriptions"}
    if len(mine) > size:
        next_token = base64.urlsafe_b64encode(str(page[-1].seq).encode()).decode().rstrip("=")
        payload["@odata.nextLink"] = f"{base}/v1.0/subscriptions?$skiptoken={next_token}"
    values = []
    for subscription in page:
        item = subscription.to_json(base_url=base, hide_client_state=True)
        item.pop("@odata.context")
        values.append(item)
    payload["value"] = values
    return _json(payload)


@bp.get("/v1.0/subscriptions/<subscription_id>")
def get_subscription(subscription_id: str) -> Response:
    """Get one subscription (404 once it is gone)."""
    state = _state()
    caller = _caller()
    _sweep(state)
    return _json(_own(state, caller, subscription_id).to_json(base_url=_base_url()))


@bp.patch("/v1.0/subscriptions/<subscription_id>")
def update_subscription(subscription_id: str) -> Response:
    """Renew (expirationDateTime), move (notificationUrl, re-validated) or rotate the certificate."""
    state = _state()
    caller = _caller()
    _sweep(state)
    subscription = _own(state, caller, subscription_id)
    body = _body()
    _check_unknown(body, _CREATABLE)
    _check_permission(caller, subscription.parsed, operation="Update")
    for name in body:
        if name in _CREATABLE and name not in _PATCHABLE:
            raise _invalid(f"The property '{name}' cannot be updated.")
    if "expirationDateTime" not in body and "notificationUrl" not in body:
        raise _invalid("The request must include expirationDateTime or notificationUrl.")
    expiration = subscription.expiration
    if "expirationDateTime" in body:
        expiration = _expiration(
            state,
            _string(body, "expirationDateTime", required=True),
            subscription.parsed,
            rich=subscription.include_resource_data,
        )
    new_url = _string(body, "notificationUrl") if "notificationUrl" in body else None
    if "notificationUrl" in body and not new_url:
        raise _invalid("notificationUrl cannot be empty.")
    if new_url is not None:
        check_url(state, new_url, field="notificationUrl")
    certificate = subscription.certificate
    certificate_text = subscription.encryption_certificate
    certificate_id = subscription.encryption_certificate_id
    if "encryptionCertificate" in body:
        certificate_text = _string(body, "encryptionCertificate") or ""
        if subscription.include_resource_data:
            try:
                certificate = load_encryption_certificate(certificate_text)
            except CertificateError as exc:
                raise _invalid(str(exc)) from exc
    if "encryptionCertificateId" in body:
        certificate_id = _string(body, "encryptionCertificateId")
        if subscription.include_resource_data and not certificate_id:
            raise _invalid("A valid encryptionCertificateId value was not provided for a subscription with includeResourceData set to true.")
    if new_url is not None and new_url != subscription.notification_url and state.config.revalidate_on_patch:
        _validate_endpoints(state, [new_url])
    # mutate only after every check passed, so a failed PATCH leaves the subscription as it was
    subscription.expiration = expiration
    if new_url is not None:
        subscription.notification_url = new_url
    subscription.certificate = certificate
    subscription.encryption_certificate = certificate_text
    subscription.encryption_certificate_id = certificate_id
    # renewing also reauthorizes (notes §1.3)
    subscription.last_reauthorization_notice = state.clock.time()
    if state.delivery is not None:
        state.delivery.release(subscription)
    return _json(subscription.to_json(base_url=_base_url()))


@bp.delete("/v1.0/subscriptions/<subscription_id>")
def delete_subscription(subscription_id: str) -> Response:
    """Delete: 204, and nothing more is delivered for it."""
    state = _state()
    caller = _caller()
    _sweep(state)
    subscription = _own(state, caller, subscription_id)
    registry: SubscriptionRegistry = state.subscriptions
    registry.remove(subscription.id)
    if state.delivery is not None:
        state.delivery.forget([subscription])
    return Response(status=204)


@bp.post("/v1.0/subscriptions/<subscription_id>/reauthorize")
def reauthorize_subscription(subscription_id: str) -> Response:
    """Reauthorize: 204, expiration unchanged (notes §1.3, §4)."""
    state = _state()
    caller = _caller()
    _sweep(state)
    subscription = _own(state, caller, subscription_id)
    # Reauthorizing fails while the app lacks the permission the resource needs (notes §4: "may fail if access
    # is gone"); delivery stays paused then.
    _check_permission(caller, subscription.parsed, operation="Reauthorize")
    subscription.last_reauthorization_notice = state.clock.time()
    if state.delivery is not None:
        state.delivery.release(subscription)
    return Response(status=204)
