"""Typed calls on Graph's ``/subscriptions`` (https://learn.microsoft.com/en-us/graph/api/resources/subscription): create, get, list, update, delete, reauthorize.

Callers (reconcile, doctor) work with :class:`LiveSubscription` values, never with raw dicts. The
retry rules of :mod:`.retry` apply: create is a POST and is not repeated after a failure that may
have come after Graph acted (a second create would be a duplicate, 409); update sets absolute values
so it is marked idempotent; reauthorize has no effect beyond the first success, so it is too.
Errors keep their types: 404 on update/get means the subscription is gone (create a new one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from syncer.errors import GraphError
from syncer.graph.times import format_datetime, parse_datetime

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient


@dataclass(frozen=True)
class LiveSubscription:
    """A subscription as Graph reports it."""

    id: str
    resource: str
    change_types: tuple[str, ...]
    notification_url: str
    expiration: datetime
    client_state: str | None = None
    lifecycle_notification_url: str | None = None
    include_resource_data: bool = False
    encryption_certificate_id: str | None = None
    application_id: str | None = None
    creator_id: str | None = None
    latest_supported_tls_version: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, keep_raw: bool = True) -> LiveSubscription:
        """Parse Graph's subscription JSON; raises GraphError naming the missing field.

        ``keep_raw=False`` drops the JSON once parsed: a listing of 30,000 subscriptions keeps its typed fields only.
        """
        try:
            change_type = str(doc["changeType"])
            return cls(
                id=str(doc["id"]),
                resource=str(doc["resource"]),
                change_types=tuple(c.strip() for c in change_type.split(",") if c.strip()),
                notification_url=str(doc["notificationUrl"]),
                expiration=parse_datetime(str(doc["expirationDateTime"])),
                client_state=doc.get("clientState"),
                lifecycle_notification_url=doc.get("lifecycleNotificationUrl"),
                include_resource_data=bool(doc.get("includeResourceData") or False),
                encryption_certificate_id=doc.get("encryptionCertificateId"),
                application_id=doc.get("applicationId"),
                creator_id=doc.get("creatorId"),
                latest_supported_tls_version=doc.get("latestSupportedTlsVersion"),
                raw=doc if keep_raw else {},
            )
        except KeyError as e:
            raise GraphError(f"subscription from Graph lacks {e.args[0]!r}: {sorted(doc)}") from None
        except ValueError as e:
            raise GraphError(f"subscription from Graph has an unreadable field: {e}") from None


class Subscriptions:
    """``client.subscriptions``: the typed subscription calls of one :class:`GraphClient`."""

    def __init__(self, client: GraphClient) -> None:
        self._client = client

    def create(
        self,
        resource: str,
        change_types: tuple[str, ...] | list[str],
        notification_url: str,
        expiration: datetime,
        *,
        client_state: str | None = None,
        lifecycle_notification_url: str | None = None,
        include_resource_data: bool = False,
        encryption_certificate: str | None = None,
        encryption_certificate_id: str | None = None,
        latest_supported_tls_version: str | None = None,
    ) -> LiveSubscription:
        """``POST /subscriptions``: blocks while Graph runs the validation handshake; 201 → the new subscription."""
        body: dict[str, Any] = {
            "changeType": ",".join(change_types),
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": format_datetime(expiration),
        }
        optional = {
            "clientState": client_state,
            "lifecycleNotificationUrl": lifecycle_notification_url,
            "encryptionCertificate": encryption_certificate,
            "encryptionCertificateId": encryption_certificate_id,
            "latestSupportedTlsVersion": latest_supported_tls_version,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if include_resource_data:
            body["includeResourceData"] = True
        # The mailbox of the subscribed resource is not the mailbox of this call (/subscriptions).
        return LiveSubscription.from_json(self._client.request("POST", "/subscriptions", json=body).json())

    def get(self, subscription_id: str) -> LiveSubscription:
        """``GET /subscriptions/{id}``; NotFoundError when it expired or was deleted."""
        return LiveSubscription.from_json(self._client.get_json(_path(subscription_id)))

    def iter(self) -> Iterator[LiveSubscription]:
        """Every subscription visible to this app, following nextLinks (``clientState`` comes back null)."""
        for page in self._client.iter_pages("/subscriptions"):
            for doc in page.items:
                yield LiveSubscription.from_json(doc, keep_raw=False)

    def list(self) -> list[LiveSubscription]:
        """``GET /subscriptions``, all pages."""
        return list(self.iter())

    def update(
        self,
        subscription_id: str,
        *,
        expiration: datetime | None = None,
        notification_url: str | None = None,
        encryption_certificate: str | None = None,
        encryption_certificate_id: str | None = None,
    ) -> LiveSubscription:
        """``PATCH /subscriptions/{id}`` (renewing also reauthorizes); NotFoundError = gone, create a new one."""
        body: dict[str, Any] = {}
        if expiration is not None:
            body["expirationDateTime"] = format_datetime(expiration)
        if notification_url is not None:
            body["notificationUrl"] = notification_url
        if not body:
            raise ValueError(
                "a subscription update must change expiration or notification_url (Graph requires one)"
            )
        if encryption_certificate is not None:
            body["encryptionCertificate"] = encryption_certificate
        if encryption_certificate_id is not None:
            body["encryptionCertificateId"] = encryption_certificate_id
        # Absolute values: applying the same PATCH twice leaves the same state.
        response = self._client.request("PATCH", _path(subscription_id), json=body, idempotent=True)
        return LiveSubscription.from_json(response.json())

    def delete(self, subscription_id: str) -> None:
        """``DELETE /subscriptions/{id}`` (204)."""
        self._client.request("DELETE", _path(subscription_id))

    def reauthorize(self, subscription_id: str) -> None:
        """``POST /subscriptions/{id}/reauthorize`` (204; expiration unchanged)."""
        self._client.request("POST", f"{_path(subscription_id)}/reauthorize", idempotent=True)


def _path(subscription_id: str) -> str:
    if not subscription_id:
        raise ValueError("subscription id is empty")
    return f"/subscriptions/{quote(subscription_id, safe='')}"
