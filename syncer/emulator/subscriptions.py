"""``/v1.0/subscriptions``: Graph's subscription API, validation handshake included
(https://learn.microsoft.com/graph/api/resources/subscription).

Create checks the body the way Graph does (:mod:`syncer.emulator.subscription_checks`: required fields, change types
per resource, lifetimes, rich-notification rules, URL schemes; then quotas and duplicates here), then blocks on the
validation handshake (:mod:`syncer.emulator.handshake`) against ``notificationUrl`` and ``lifecycleNotificationUrl``
before answering ``201``. Get/List/Update/Delete/Reauthorize follow their pages
(https://learn.microsoft.com/graph/api/subscription-get and siblings). Subscriptions
live in :class:`~syncer.emulator.subscription_model.SubscriptionRegistry` (``state.subscriptions``) and expire on the
emulator clock: every call here sweeps expired ones first, and the dispatcher sweeps between deliveries.

Messages marked "observed" are the ones users reported from Graph; the others are our best guess (listed in
docs/emulator-subscriptions-delivery.md) and clients must branch on status and ``code``, never on messages.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, request

from syncer.emulator import subscription_checks as checks
from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.handshake import validate_endpoints
from syncer.emulator.rich import CertificateError, load_encryption_certificate
from syncer.emulator.subscription_model import (
    ParsedResource,
    Subscription,
    SubscriptionDraft,
    SubscriptionRegistry,
)

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("emulator_subscriptions", __name__)

def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json; odata.metadata=minimal")


def _begin() -> tuple[EmulatorState, checks.Caller]:
    """Every call: who is calling, and the registry swept of expired subscriptions first."""
    state = emulator_state()
    caller = checks.caller()
    _sweep(state)
    return state, caller


def _sweep(state: EmulatorState) -> None:
    registry = state.subscriptions
    expired = registry.expire(state.clock.now())
    if expired and state.delivery is not None:
        state.delivery.forget(expired)


# --- views -----------------------------------------------------------------------------------------------------


@bp.post("/v1.0/subscriptions")
def create_subscription() -> Response:
    """Create: check, handshake, 201."""
    state, caller = _begin()
    body = checks.json_body()
    for name in checks.WEB_PUSH:
        if body.get(name) is not None:
            raise checks.invalid(f"'{name}' can only be used with Web Push subscriptions.")
    checks.check_unknown(body, checks.CREATABLE)
    resource = checks.string(body, "resource", required=True)
    change_type = checks.string(body, "changeType", required=True)
    notification_url = checks.string(body, "notificationUrl", required=True)
    expiration_text = checks.string(body, "expirationDateTime", required=True)
    assert resource is not None and change_type is not None and notification_url is not None
    parsed = checks.resolve(state, caller, resource)
    change_types = checks.change_types(change_type, parsed)
    checks.check_permission(caller, parsed, tenant=state.store.tenant(caller.tenant_id))
    rich, certificate = checks.check_rich(state, body, parsed)
    expiration = checks.expiration(state, expiration_text, parsed, rich=rich)
    client_state = checks.string(body, "clientState")
    if client_state is not None and len(client_state) > checks.MAX_CLIENT_STATE:
        raise checks.invalid(f"clientState cannot be longer than {checks.MAX_CLIENT_STATE} characters.")
    tls = checks.string(body, "latestSupportedTlsVersion") or "v1_2"
    if tls not in checks.TLS_VERSIONS:
        raise checks.invalid(f"Invalid 'latestSupportedTlsVersion' value '{tls}'.")
    checks.check_url(state, notification_url, field="notificationUrl")
    lifecycle_url = checks.string(body, "lifecycleNotificationUrl")
    if lifecycle_url is not None:
        checks.check_url(state, lifecycle_url, field="lifecycleNotificationUrl")
    if parsed.spec.admit is not None:  # the family's own checks; the key its changes name
        parsed = parsed.spec.admit(state, state.store.tenant(caller.tenant_id), parsed, body)
    registry = state.subscriptions
    _refuse_duplicate(registry, caller, parsed, change_types)
    exceeded = registry.quota_exceeded(tenant_id=caller.tenant_id, application_id=caller.client_id, parsed=parsed)
    if exceeded is not None:
        raise checks.extension_error(403, f"Maximum number of subscriptions has been reached ({exceeded})")
    if parsed.spec.check is not None:
        parsed.spec.check(state, SubscriptionDraft(caller.tenant_id, caller.client_id, parsed, change_types, expiration,
                                                   lifecycle_url, user_id=caller.user_id))
    validate_endpoints(state, [notification_url, *([lifecycle_url] if lifecycle_url else [])])
    now = state.clock.time()
    subscription = Subscription(
        id=str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
        seq=registry.next_seq(),
        tenant_id=caller.tenant_id,
        application_id=caller.client_id,
        creator_id=caller.creator_id,
        resource=resource,
        parsed=parsed,
        change_type=change_type,
        change_types=change_types,
        notification_url=notification_url,
        expiration=expiration,
        lifecycle_url=lifecycle_url,
        client_state=client_state,
        include_resource_data=rich,
        encryption_certificate=checks.string(body, "encryptionCertificate") or "",
        encryption_certificate_id=checks.string(body, "encryptionCertificateId"),
        certificate=certificate,
        latest_supported_tls_version=tls,
        notification_url_app_id=checks.string(body, "notificationUrlAppId"),
        notification_query_options=checks.string(body, "notificationQueryOptions"),
        last_reauthorization_notice=now,
    )
    checks.authorize_delegation(state, caller, subscription.id, operation="Create")
    # The handshake took time without a lock: a twin request may have won meanwhile.
    winner = registry.add(subscription)
    if winner is not None:
        raise GraphHTTPError(409, "Conflict", f"Subscription Id {winner.id} already exists for the requested combination")
    if state.delivery is not None:
        state.delivery.subscription_added(subscription)
    return _json(subscription.to_json(base_url=base_url()), 201)


def _refuse_duplicate(
    registry: SubscriptionRegistry, caller: checks.Caller, parsed: ParsedResource, change_types: frozenset[str]
) -> None:
    duplicate = registry.duplicate_of(
        tenant_id=caller.tenant_id, application_id=caller.client_id, resource_key=parsed.key, change_types=change_types,
        creator_id=caller.creator_id,
    )
    if duplicate is not None:
        raise GraphHTTPError(
            409, "Conflict", f"Subscription Id {duplicate.id} already exists for the requested combination"
        )


def _own(state: EmulatorState, caller: checks.Caller, subscription_id: str) -> Subscription:
    registry = state.subscriptions
    subscription = registry.get(subscription_id)
    if subscription is None or subscription.tenant_id != caller.tenant_id or subscription.application_id != caller.client_id \
            or (caller.user_id is not None and subscription.creator_id != caller.creator_id):
        # A signed-in user sees only the subscriptions the app made for them (https://learn.microsoft.com/graph/api/subscription-list);
        # another user's is hidden like an unknown id [UNCONFIRMED: 404].
        # Observed for unknown/expired ids (https://learn.microsoft.com/graph/api/subscription-get); another app's subscription is hidden the same way (guess).
        raise GraphHTTPError(404, "ResourceNotFound", "The object was not found.")
    return subscription


@bp.get("/v1.0/subscriptions")
def list_subscriptions() -> Response:
    """List this app's subscriptions in the caller's tenant, paged, with clientState null."""
    state, caller = _begin()
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
    size = state.config.subscription_page_size
    page, more = state.subscriptions.page_for_app(
        tenant_id=caller.tenant_id, application_id=caller.client_id, after=after, size=size,
        creator_id=caller.creator_id if caller.user_id is not None else None)
    base = base_url()
    payload: dict[str, Any] = {"@odata.context": f"{base}/v1.0/$metadata#subscriptions"}
    if more:
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
    state, caller = _begin()
    return _json(_own(state, caller, subscription_id).to_json(base_url=base_url()))


@bp.patch("/v1.0/subscriptions/<subscription_id>")
def update_subscription(subscription_id: str) -> Response:
    """Renew (expirationDateTime), move (notificationUrl, re-validated) or rotate the certificate."""
    state, caller = _begin()
    registry = state.subscriptions
    subscription = _own(state, caller, subscription_id)
    body = checks.json_body()
    checks.check_unknown(body, checks.CREATABLE)
    checks.check_permission(caller, subscription.parsed, operation="Update",
                            tenant=state.store.tenant(caller.tenant_id))
    for name in body:
        if name in checks.CREATABLE and name not in checks.PATCHABLE:
            raise checks.invalid(f"The property '{name}' cannot be updated.")
    if "expirationDateTime" not in body and "notificationUrl" not in body:
        raise checks.invalid("The request must include expirationDateTime or notificationUrl.")
    expiration = subscription.expiration
    if "expirationDateTime" in body:
        expiration = checks.expiration(
            state,
            checks.string(body, "expirationDateTime", required=True),
            subscription.parsed,
            rich=subscription.include_resource_data,
        )
        if subscription.parsed.spec.check is not None:
            subscription.parsed.spec.check(state, SubscriptionDraft(
                subscription.tenant_id, subscription.application_id, subscription.parsed, subscription.change_types,
                expiration, subscription.lifecycle_url, existing_id=subscription.id, user_id=caller.user_id))
    new_url = checks.string(body, "notificationUrl") if "notificationUrl" in body else None
    if "notificationUrl" in body and not new_url:
        raise checks.invalid("notificationUrl cannot be empty.")
    if new_url is not None:
        checks.check_url(state, new_url, field="notificationUrl")
    certificate = subscription.certificate
    certificate_text = subscription.encryption_certificate
    certificate_id = subscription.encryption_certificate_id
    if "encryptionCertificate" in body:
        certificate_text = checks.string(body, "encryptionCertificate") or ""
        if subscription.include_resource_data:
            try:
                certificate = load_encryption_certificate(certificate_text)
            except CertificateError as exc:
                raise checks.invalid(str(exc)) from exc
    if "encryptionCertificateId" in body:
        certificate_id = checks.string(body, "encryptionCertificateId")
        if subscription.include_resource_data and not certificate_id:
            raise checks.invalid("A valid encryptionCertificateId value was not provided for a subscription with includeResourceData set to true.")
    if new_url is not None and new_url != subscription.notification_url and state.config.revalidate_on_patch:
        validate_endpoints(state, [new_url])
    checks.authorize_delegation(state, caller, subscription.id, operation="Update")
    # mutate only after every check passed, so a failed PATCH leaves the subscription as it was
    subscription.expiration = expiration
    if new_url is not None:
        subscription.notification_url = new_url
    subscription.certificate = certificate
    subscription.encryption_certificate = certificate_text
    subscription.encryption_certificate_id = certificate_id
    # renewing also reauthorizes (https://learn.microsoft.com/graph/api/subscription-update)
    subscription.last_reauthorization_notice = state.clock.time()
    registry.renewed(subscription)
    if state.delivery is not None:
        state.delivery.release(subscription)
    return _json(subscription.to_json(base_url=base_url()))


@bp.delete("/v1.0/subscriptions/<subscription_id>")
def delete_subscription(subscription_id: str) -> Response:
    """Delete: 204, and nothing more is delivered for it."""
    state, caller = _begin()
    subscription = _own(state, caller, subscription_id)
    registry = state.subscriptions
    registry.remove(subscription.id)
    if state.delivery is not None:
        state.delivery.forget([subscription])
    return Response(status=204)


@bp.post("/v1.0/subscriptions/<subscription_id>/reauthorize")
def reauthorize_subscription(subscription_id: str) -> Response:
    """Reauthorize: 204, expiration unchanged (https://learn.microsoft.com/graph/api/subscription-reauthorize)."""
    state, caller = _begin()
    subscription = _own(state, caller, subscription_id)
    # Reauthorizing fails while the app lacks the permission the resource needs (https://learn.microsoft.com/graph/change-notifications-lifecycle-events: "may fail if access
    # is gone"); delivery stays paused then.
    checks.check_permission(caller, subscription.parsed, operation="Reauthorize",
                            tenant=state.store.tenant(caller.tenant_id))
    checks.authorize_delegation(state, caller, subscription.id, operation="Reauthorize")
    subscription.last_reauthorization_notice = state.clock.time()
    state.subscriptions.renewed(subscription)
    if state.delivery is not None:
        state.delivery.release(subscription)
    return Response(status=204)
