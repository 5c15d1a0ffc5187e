"""What Graph POSTs to a webhook, as pure functions of a subscription and a change
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks, https://learn.microsoft.com/graph/change-notifications-lifecycle-events, https://learn.microsoft.com/graph/change-notifications-with-resource-data).

The dispatcher (:mod:`syncer.emulator.delivery`) decides when and where to send; this module decides what one
``changeNotification`` or lifecycle item looks like. Kept apart so the shapes can be read (and tested) without the
threads and queues around them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncer.emulator.subscription_model import Subscription, notification_datetime

if TYPE_CHECKING:
    from syncer.emulator.store import ChangeEvent



def notified_change_type(subscription: Subscription, event: ChangeEvent) -> str:
    """The changeType Graph reports for *event* on this subscription's resource type.

    Which change types read as ``updated`` is the type's :attr:`SubscribableResource.reported_as_updated` (directory
    creations and soft deletes; everything on a drive root). The store sends a soft delete as ``deleted`` with the
    item's last snapshot; a permanent delete has none.
    """
    change_type = event.change_type
    kind = "softDeleted" if change_type == "deleted" and event.item is not None else change_type
    return "updated" if kind in subscription.parsed.spec.reported_as_updated else change_type


def change_notification(
    subscription: Subscription,
    event: ChangeEvent,
    change_type: str,
    *,
    notification_id: str,
) -> dict[str, Any]:
    """One basic ``changeNotification`` item (rich content is added by the caller)."""
    payload: dict[str, Any] = {
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": notification_datetime(subscription.expiration),
        "changeType": change_type,
        "clientState": subscription.client_state,
        "tenantId": subscription.tenant_id,
        "resource": event.resource,
        # driveItem: null, no item id [OBS]; others: @odata.type, @odata.id, (Outlook) @odata.etag, id
        "resourceData": dict(event.resource_data) if event.resource_data is not None else None,
    }
    if subscription.parsed.spec.notification_id:
        payload = {"id": notification_id, **payload}
    return payload


def lifecycle_notification(subscription: Subscription, event: str) -> dict[str, Any]:
    """One lifecycle item: no resource, no resourceData, ``lifecycleEvent`` instead of ``changeType`` (https://learn.microsoft.com/graph/change-notifications-lifecycle-events)."""
    return {
        "subscriptionId": subscription.id,
        "subscriptionExpirationDateTime": notification_datetime(subscription.expiration),
        "tenantId": subscription.tenant_id,
        "clientState": subscription.client_state,
        "lifecycleEvent": event,
    }


def rich_resource(event: ChangeEvent, subscription: Subscription) -> dict[str, Any]:
    """The resource JSON Graph encrypts: annotations, ``id`` and the subscription's ``$select`` (all properties
    without one, as for Teams resources)."""
    item = event.item or {}
    select = subscription.parsed.select
    if select:
        wanted = {name.lower() for name in select}
        properties = {k: v for k, v in item.items() if k.lower() in wanted or k == "id"}
    else:
        properties = {k: v for k, v in item.items() if not k.startswith("@")}
    data = event.resource_data or {}
    annotations: dict[str, Any] = {k: data[k] for k in ("@odata.type", "@odata.id", "@odata.etag") if k in data}
    return {**annotations, **properties}
