"""What a Graph subscription is and which resources accept one, with no HTTP in sight.

See https://learn.microsoft.com/graph/api/resources/subscription and
https://learn.microsoft.com/graph/api/subscription-post-subscriptions.

:mod:`syncer.emulator.subscriptions` turns requests into calls on :class:`SubscriptionRegistry`; the dispatcher asks
the registry which subscriptions an item change concerns. Each family declares its :class:`SubscribableResource`
entries (:attr:`syncer.emulator.resources.Family.subscribable`): which paths can be subscribed to, which change types
are allowed, the maximum lifetime, the permission needed and whether rich notifications exist.
"""

from __future__ import annotations

import bisect
import heapq
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote

from syncer.emulator.rich import EncryptionCertificate

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import ChangeEvent, TenantStore

ChangeType = Literal["created", "updated", "deleted"]
ALL_CHANGE_TYPES: frozenset[str] = frozenset({"created", "updated", "deleted"})
QuotaScope = Literal["mailbox", "directory", "none"]
#: (state, tenant, user id) -> the container id it made or found.
Provision = Callable[["EmulatorState", "TenantStore", str], object]


@dataclass(frozen=True)
class SubscriptionDraft:
    """A subscription as create or renew would make it, for a resource's own checks (:attr:`SubscribableResource.check`)."""

    tenant_id: str
    application_id: str
    parsed: ParsedResource
    change_types: frozenset[str]
    expiration: datetime
    lifecycle_url: str | None
    #: None on create; the subscription's id on renewal (PATCH), which must not count against quotas twice.
    existing_id: str | None = None
    #: The signed-in user of a delegated caller (None: app-only), for rules on what that user may watch.
    user_id: str | None = None


#: Whether one change reaches one subscription beyond path and change type (Teams: `$search`, mention `$filter`).
DeliveryFilter = Callable[["EmulatorState", "Subscription", "ChangeEvent"], bool]

#: Checks Graph makes only for some resources (Teams: lifecycle URL past one hour, quotas, `model`); raises
#: :class:`~syncer.emulator.errors.GraphHTTPError`.
SubscriptionCheck = Callable[["EmulatorState", SubscriptionDraft], None]

OUTLOOK_RICH_REFUSAL = "Rich notifications require a '$select' query option in the resource for this resource type."


@dataclass(frozen=True)
class SubscribableResource:
    """One resource type that accepts subscriptions."""

    resource_type: str
    #: Lower-case collection path shapes; ``*`` stands for one id segment.
    shapes: tuple[tuple[str, ...], ...]
    change_types: frozenset[str]
    #: Maximum lifetime in minutes (https://learn.microsoft.com/graph/api/resources/subscription#subscription-lifetime).
    max_minutes: int
    #: Maximum lifetime with includeResourceData, or None when Graph has no rich notifications for the type.
    max_minutes_rich: int | None
    #: Application permissions, any one of which allows subscribing (least privileged first).
    permissions: tuple[str, ...]
    #: What Graph says when includeResourceData is asked for a type without rich notifications.
    rich_refusal: str
    quota: QuotaScope
    #: Lifecycle events Graph sends for this type besides reauthorizationRequired (https://learn.microsoft.com/graph/change-notifications-lifecycle-events).
    lifecycle_events: frozenset[str] = frozenset({"reauthorizationRequired"})
    #: Item shapes (``users/*``) a subscription may name besides the collections.
    item_shapes: tuple[tuple[str, ...], ...] = ()
    #: The family's own checks on create (the named object exists, notificationQueryOptions, per-organisation quotas):
    #: (state, tenant, parsed resource, request body) -> the parsed resource with the canonical key its changes name.
    admit: Callable[[EmulatorState, TenantStore, ParsedResource, dict[str, Any]], ParsedResource] | None = None
    #: Change types Graph reports as ``updated`` for this type: "created", "deleted", and "softDeleted" (a delete
    #: that keeps the item restorable).
    reported_as_updated: frozenset[str] = frozenset()
    #: The notification item carries its own ``id`` (Outlook, as the docs' message sample shows).
    notification_id: bool = False
    #: The first id of a ``users/{id}/...`` path names the mailbox (per-mailbox quota and provisioning).
    mailbox_path: bool = False
    #: Makes the user's container (mailbox, drive) exist before subscribing, so its changes can match.
    provision: Provision | None = None
    #: The resource's own rules, run on create (after the shared checks and quotas, before the handshake) and on renewal.
    check: SubscriptionCheck | None = None
    #: Options in the resource that narrow what is delivered (read by the dispatcher); None = everything that matches.
    deliver: DeliveryFilter | None = None
    #: Delegated permissions, any one of which lets a signed-in user subscribe, when the path's own table differs from
    #: the resource type's reads (Teams); empty = application permissions only. None = the resource type's reads.
    delegated_permissions: frozenset[str] | None = None


_ODATA_KEY = re.compile(r"\(\s*'([^']*)'\s*\)|\(\s*\"([^\"]*)\"\s*\)")


@dataclass(frozen=True)
class ParsedResource:
    """A subscription ``resource`` resolved against the families' subscribable entries."""

    spec: SubscribableResource
    #: Normalised key the dispatcher matches against ChangeEvent.collections (lower-case, no leading "/", no query).
    key: str
    #: Id segments as written (case kept), in path order.
    ids: tuple[str, ...]
    #: The owning user segment for Outlook/To Do paths (quota per mailbox), as written.
    mailbox: str | None
    #: ``$select`` of the resource's query string (rich Outlook notifications), lower-case property names kept as written.
    select: tuple[str, ...] | None
    query: dict[str, str]


def split_segments(resource: str) -> tuple[list[str], str]:
    """Path segments of *resource* (OData keys ``x('id')`` become ``x/id``) and its raw query string."""
    text = resource.strip()
    path, _, query = text.partition("?")
    path = _ODATA_KEY.sub(lambda m: "/" + (m.group(1) if m.group(1) is not None else m.group(2)), path)
    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    return segments, query


def parse_resource(resource: str, specs: Iterable[SubscribableResource]) -> ParsedResource | None:
    """Resolve *resource* against *specs* (the first that accepts the path), or ``None`` when none does."""
    segments, query = split_segments(resource)
    lowered = [s.lower() for s in segments]
    for spec in specs:
        for shape in (*spec.shapes, *spec.item_shapes):
            if len(shape) != len(lowered):
                continue
            if all(want == "*" or want == got for want, got in zip(shape, lowered, strict=True)):
                ids = tuple(seg for seg, want in zip(segments, shape, strict=True) if want == "*")
                mailbox = ids[0] if spec.mailbox_path else None
                options = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}
                select = None
                if "$select" in options:
                    select = tuple(p.strip() for p in options["$select"].split(",") if p.strip())
                return ParsedResource(
                    spec=spec,
                    key="/".join(lowered),
                    ids=ids,
                    mailbox=mailbox,
                    select=select,
                    query=options,
                )
    return None


def graph_datetime(dt: datetime) -> str:
    """Graph's DateTimeOffset with seven fractional digits, as its subscription responses show it."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def notification_datetime(dt: datetime) -> str:
    """``subscriptionExpirationDateTime`` as the notification samples write it (``...0000000+00:00``)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


@dataclass
class Subscription:
    """One live subscription (mutable: PATCH renews it, rotation swaps its certificate)."""

    id: str
    seq: int
    tenant_id: str
    application_id: str
    creator_id: str
    resource: str
    parsed: ParsedResource
    change_type: str
    change_types: frozenset[str]
    notification_url: str
    expiration: datetime
    lifecycle_url: str | None = None
    client_state: str | None = None
    include_resource_data: bool = False
    encryption_certificate: str = ""
    encryption_certificate_id: str | None = None
    certificate: EncryptionCertificate | None = None
    latest_supported_tls_version: str = "v1_2"
    notification_url_app_id: str | None = None
    notification_query_options: str | None = None
    #: Emulator-clock time of the last reauthorizationRequired sent (or of creation/renewal).
    last_reauthorization_notice: float = 0.0
    #: Set when the subscription is gone (deleted, expired, removed): queued notifications for it are discarded.
    removed: bool = False
    #: Emulator time since which delivery is paused until the app reauthorizes (access revoked or lapsed).
    held_since: float | None = None

    @property
    def resource_type(self) -> str:
        """The subscribed resource type (``user``, ``message``...)."""
        return self.parsed.spec.resource_type

    def to_json(self, *, base_url: str, hide_client_state: bool = False) -> dict[str, Any]:
        """Graph's rendering of the subscription (List hides clientState, https://learn.microsoft.com/graph/api/subscription-list)."""
        return {
            "@odata.context": f"{base_url}/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": None if hide_client_state else self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": self.notification_query_options,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_datetime(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": self.include_resource_data,
            "latestSupportedTlsVersion": self.latest_supported_tls_version,
            "encryptionCertificate": self.encryption_certificate,
            "encryptionCertificateId": self.encryption_certificate_id,
            "notificationUrlAppId": self.notification_url_app_id,
            "notificationContentType": "application/json",
        }


@dataclass(frozen=True)
class QuotaLimits:
    """Active-subscription quotas (https://learn.microsoft.com/graph/api/subscription-post-subscriptions; small values make them testable)."""

    per_mailbox: int = 1_000
    directory_per_app: int = 50_000
    directory_per_tenant: int = 1_000
    directory_per_app_tenant: int = 100


@dataclass
class SubscriptionRegistry:
    """Every live subscription of one emulator, indexed for the dispatcher's per-change lookup."""

    quotas: QuotaLimits = field(default_factory=QuotaLimits)
    _by_id: dict[str, Subscription] = field(default_factory=dict)
    #: (tenant, key) -> subscriptions on that collection or item
    _by_key: dict[tuple[str, str], dict[str, Subscription]] = field(default_factory=dict)
    #: (tenant, mailbox lower-cased) -> how many live subscriptions count against that mailbox's quota
    _per_mailbox: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: directory-quota subscriptions by id (a few hundred at most: their quotas are that small)
    _directory: dict[str, Subscription] = field(default_factory=dict)
    #: seqs in creation order (removed ones dropped lazily) and seq -> live subscription: List pages from a seq
    #: without sorting or scanning the whole registry, so listing 30,000 costs linear time, not quadratic
    _order: list[int] = field(default_factory=list)
    _by_seq: dict[int, Subscription] = field(default_factory=dict)
    #: (expirationDateTime, seq, id), one entry per expiration a subscription had (outdated ones skipped when
    #: popped): the per-request and per-sweep expiry costs what expires, not a pass over every subscription
    _expiry: list[tuple[datetime, int, str]] = field(default_factory=list)
    #: (when reauthorizationRequired is next due, seq, id) for subscriptions with a lifecycle URL, with the
    #: (lead, interval) the times were computed for and each subscription's current entry time (others are stale)
    _reauth: list[tuple[float, int, str]] = field(default_factory=list)
    _reauth_at: dict[str, float] = field(default_factory=dict)
    _reauth_rule: tuple[float, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def next_seq(self) -> int:
        """A creation counter (List orders by it, paging continues from it)."""
        with self._lock:
            self._seq += 1
            return self._seq

    def add(self, subscription: Subscription) -> Subscription | None:
        """Register a subscription that passed every check and its handshake.

        Returns the existing duplicate instead (and adds nothing) when a twin request won the race meanwhile.
        """
        with self._lock:
            duplicate = self.duplicate_of(
                tenant_id=subscription.tenant_id,
                application_id=subscription.application_id,
                resource_key=subscription.parsed.key,
                change_types=subscription.change_types,
                creator_id=subscription.creator_id,
            )
            if duplicate is not None:
                return duplicate
            self._by_id[subscription.id] = subscription
            self._by_key.setdefault((subscription.tenant_id, subscription.parsed.key), {})[subscription.id] = subscription
            if (mailbox := _mailbox_quota_key(subscription)) is not None:
                self._per_mailbox[mailbox] += 1
            if subscription.parsed.spec.quota == "directory":
                self._directory[subscription.id] = subscription
            if self._order and subscription.seq < self._order[-1]:
                bisect.insort(self._order, subscription.seq)  # a create that overtook an older one's handshake
            else:
                self._order.append(subscription.seq)
            self._by_seq[subscription.seq] = subscription
            heapq.heappush(self._expiry, (subscription.expiration, subscription.seq, subscription.id))
            self._schedule_reauth_locked(subscription)
            return None

    def renewed(self, subscription: Subscription) -> None:
        """*subscription*'s expirationDateTime or last reauthorization notice changed (PATCH, reauthorize): index
        the new times (an earlier expiration must not wait behind its old entry)."""
        with self._lock:
            if self._by_id.get(subscription.id) is not subscription:
                return
            heapq.heappush(self._expiry, (subscription.expiration, subscription.seq, subscription.id))
            self._schedule_reauth_locked(subscription)
            if len(self._expiry) > 2 * len(self._by_id) + 64:
                self._expiry = [(s.expiration, s.seq, s.id) for s in self._by_id.values()]
                heapq.heapify(self._expiry)

    def get(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id, if it exists."""
        return self._by_id.get(subscription_id)

    def remove(self, subscription_id: str) -> Subscription | None:
        """Forget a subscription (delete, expiry, removal); returns it when it existed."""
        with self._lock:
            subscription = self._by_id.pop(subscription_id, None)
            if subscription is None:
                return None
            subscription.removed = True
            bucket = self._by_key.get((subscription.tenant_id, subscription.parsed.key))
            if bucket is not None:
                bucket.pop(subscription_id, None)
                if not bucket:
                    del self._by_key[(subscription.tenant_id, subscription.parsed.key)]
            if (mailbox := _mailbox_quota_key(subscription)) is not None:
                self._per_mailbox[mailbox] -= 1
                if self._per_mailbox[mailbox] <= 0:
                    del self._per_mailbox[mailbox]
            self._directory.pop(subscription_id, None)
            self._by_seq.pop(subscription.seq, None)
            self._reauth_at.pop(subscription_id, None)
            if len(self._order) > 2 * len(self._by_seq) + 64:
                self._order = [seq for seq in self._order if seq in self._by_seq]
            return subscription

    def clear(self) -> list[Subscription]:
        """Forget everything (admin reset)."""
        with self._lock:
            gone = list(self._by_id.values())
            for subscription in gone:
                subscription.removed = True
            self._by_id.clear()
            self._by_key.clear()
            self._per_mailbox.clear()
            self._directory.clear()
            self._order.clear()
            self._by_seq.clear()
            self._expiry.clear()
            self._reauth.clear()
            self._reauth_at.clear()
            return gone

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Subscription]:
        """Every live subscription, in creation order."""
        with self._lock:
            return [self._by_seq[seq] for seq in self._order if seq in self._by_seq]

    def page_for_app(self, *, tenant_id: str, application_id: str, after: int, size: int,
                     creator_id: str | None = None) -> tuple[list[Subscription], bool]:
        """The next *size* of an app's subscriptions created after seq *after* (of *creator_id* when given), and
        whether more follow: from a bisect into the creation order, never a pass over the whole registry."""
        page: list[Subscription] = []
        with self._lock:
            for seq in self._order[bisect.bisect_right(self._order, after):]:
                s = self._by_seq.get(seq)
                if s is None or s.tenant_id != tenant_id or s.application_id != application_id:
                    continue
                if creator_id is not None and s.creator_id != creator_id:
                    continue
                if len(page) == size:
                    return page, True
                page.append(s)
        return page, False

    def expire(self, now: datetime) -> list[Subscription]:
        """Remove every subscription whose expirationDateTime has passed; returns them (in creation order).

        Every API call and every dispatcher sweep asks, so this pops the expiry heap rather than passing over the
        whole registry: with nothing due it costs one comparison.
        """
        due: list[tuple[int, str]] = []
        with self._lock:
            heap = self._expiry
            while heap and heap[0][0] <= now:
                _, seq, subscription_id = heapq.heappop(heap)
                subscription = self._by_id.get(subscription_id)
                # Skip entries of gone subscriptions and of expirations a renewal replaced (it pushed its own).
                if subscription is not None and subscription.expiration <= now:
                    due.append((seq, subscription_id))
        due.sort()
        return [s for s in (self.remove(sid) for _, sid in due) if s is not None]

    def reauthorization_due(self, now: float, *, lead: float, interval: float) -> list[Subscription]:
        """Subscriptions with a lifecycle URL that owe a ``reauthorizationRequired`` at *now* (in creation order):
        less than *lead* seconds from expiry and at least *interval* seconds since the last notice. Each one's
        notice time is set to *now* and its next due time indexed, so a sweep costs what is due."""
        due: list[Subscription] = []
        with self._lock:
            if self._reauth_rule != (lead, interval):
                self._reauth_rule = (lead, interval)
                self._reauth_at.clear()
                self._reauth = []
                for live in self._by_id.values():
                    self._schedule_reauth_locked(live)
            heap = self._reauth
            popped: list[Subscription] = []
            # The heap time is a float sum: take entries a hair early too, and decide by the test the sweep always
            # made (a popped one that fails it is scheduled again, for a later sweep).
            while heap and heap[0][0] <= now + 1e-3:
                at, _, subscription_id = heapq.heappop(heap)
                found = self._by_id.get(subscription_id)
                if found is None or self._reauth_at.get(subscription_id) != at:
                    continue  # gone, or rescheduled since
                popped.append(found)
                remaining = found.expiration.timestamp() - now
                if remaining <= lead and now - found.last_reauthorization_notice >= interval:
                    found.last_reauthorization_notice = now
                    due.append(found)
            for subscription in popped:
                self._schedule_reauth_locked(subscription)
            if len(heap) > 2 * len(self._reauth_at) + 64:
                self._reauth = [(at, self._by_id[sid].seq, sid) for sid, at in self._reauth_at.items()]
                heapq.heapify(self._reauth)
        due.sort(key=lambda s: s.seq)
        return due

    def _schedule_reauth_locked(self, subscription: Subscription) -> None:
        rule = self._reauth_rule
        if rule is None or subscription.lifecycle_url is None:
            return
        lead, interval = rule
        at = max(subscription.expiration.timestamp() - lead, subscription.last_reauthorization_notice + interval)
        self._reauth_at[subscription.id] = at
        heapq.heappush(self._reauth, (at, subscription.seq, subscription.id))

    def duplicate_of(self, *, tenant_id: str, application_id: str, resource_key: str, change_types: Iterable[str],
                     creator_id: str | None = None) -> Subscription | None:
        """An existing subscription of the same app with the same resource and changeType set (409) [OBS].

        Graph does not say whether order or case matter: we compare the normalised resource and the *set* of
        change types, per app and tenant.
        """
        wanted = frozenset(change_types)
        bucket = self._by_key.get((tenant_id, resource_key), {})
        for subscription in list(bucket.values()):
            # A delegated subscription belongs to the app and its user (https://learn.microsoft.com/graph/api/subscription-list):
            # two users of one app each have their own.
            if subscription.application_id == application_id and subscription.change_types == wanted \
                    and (creator_id is None or subscription.creator_id == creator_id):
                return subscription
        return None

    def quota_exceeded(self, *, tenant_id: str, application_id: str, parsed: ParsedResource) -> str | None:
        """Name of the quota a new subscription would exceed, or None."""
        limits = self.quotas
        # Counted as subscriptions come and go: checking one create must not cost a pass over 30,000.
        mailbox = (tenant_id, parsed.mailbox.lower()) if parsed.spec.quota == "mailbox" and parsed.mailbox else None
        if mailbox is not None and self._per_mailbox.get(mailbox, 0) >= limits.per_mailbox:
            return f"{limits.per_mailbox} active subscriptions per mailbox"
        if parsed.spec.quota == "directory":
            with self._lock:
                directory = list(self._directory.values())
            if sum(1 for s in directory if s.application_id == application_id) >= limits.directory_per_app:
                return f"{limits.directory_per_app} directory subscriptions per app"
            if sum(1 for s in directory if s.tenant_id == tenant_id) >= limits.directory_per_tenant:
                return f"{limits.directory_per_tenant} directory subscriptions per tenant"
            if (
                sum(1 for s in directory if s.tenant_id == tenant_id and s.application_id == application_id)
                >= limits.directory_per_app_tenant
            ):
                return f"{limits.directory_per_app_tenant} directory subscriptions per app and tenant"
        return None

    def matching(self, tenant_id: str, keys: Iterable[str]) -> Iterator[Subscription]:
        """Live subscriptions of *tenant_id* on any of *keys* (each at most once)."""
        seen: set[str] = set()
        for key in keys:
            bucket = self._by_key.get((tenant_id, key))
            if not bucket:
                continue
            for subscription in list(bucket.values()):
                if subscription.id not in seen and not subscription.removed:
                    seen.add(subscription.id)
                    yield subscription


def _mailbox_quota_key(subscription: Subscription) -> tuple[str, str] | None:
    """The (tenant, mailbox) whose quota *subscription* counts against, if any."""
    parsed = subscription.parsed
    if parsed.spec.quota == "mailbox" and parsed.mailbox is not None:
        return (subscription.tenant_id, parsed.mailbox.lower())
    return None
