"""The reconcile plan: what must happen to Graph's subscriptions so that they match the spec.

:func:`plan` is a pure function of three views of the world and a time:

- *desired*: one :class:`~syncer.reconcile.desired.Desired` per subscription the spec asks for, fan-out
  already expanded (:mod:`syncer.reconcile.desired`);
- *live*: what ``GET /subscriptions`` returned, per tenant (clientState always null there);
- *recorded*: syncer's own table (``syncer_subscriptions``), which alone knows each clientState;

and returns a :class:`~syncer.reconcile.actions.Plan`, a value one can print, serialise and test
(:mod:`syncer.reconcile.actions`), which :mod:`syncer.reconcile.apply` then applies. Nothing here does I/O, so every decision below is covered by tests with no server.

Decisions (the documented rules of ``syncer reconcile``):

- A declaration is linked to a live subscription through our table (name + scope). When we have no
  row for it, a live subscription with the same resource, change types and notification URL is the
  candidate. If our table knows its id (e.g. the declaration was renamed) we **adopt** it: only our
  row changes. If it does not, Graph will not tell us its clientState (List returns null), so its
  notifications could never be verified: we **replace** it (delete + create with a fresh secret).
- **renew** when the expiry is within ``renew_before``; the new expiry is ``now + lifetime`` where the
  lifetime is the declared one capped at the resource's maximum minus :data:`~syncer.reconcile.desired.SKEW_MARGIN`.
- **update** (PATCH) the notificationUrl, the only identity field Graph lets us change, and the
  encryption certificate of rich subscriptions (rotation: both certificate fields).
- **replace** (delete + create) for what Graph cannot change: change types, lifecycle URL,
  includeResourceData. When the resource or change types change, the
  new subscription is created first (Graph's 409 only forbids two with the same ones), so a failed
  create leaves the old one working; otherwise the old one must go first.
- **prune** only with ``prune=True``, and only subscriptions syncer can prove are its own: a row in
  our table, or created by our application id *and* pointing at one of our notification URLs.
  Without ``prune`` they are reported as orphans; anything else is left alone and only counted.
- **forget**: a row of ours whose subscription Graph no longer has (expired or removed).
- Quotas (https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions) are checked on the state the plan would leave; a plan over a quota carries a
  problem with the numbers and :mod:`syncer.reconcile.apply` refuses to apply it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncer.graph.subscriptions import LiveSubscription
from syncer.reconcile.actions import Action, Kind, Plan
from syncer.reconcile.desired import Desired, Expansion, change_set, normalise_resource
from syncer.reconcile.quotas import Placed, QuotaProblem, check_quotas


@dataclass(frozen=True)
class Recorded:
    """A row of ``syncer_subscriptions`` as the planner sees it: everything except the clientState."""

    subscription_id: str
    tenant_id: str
    name: str
    scope_key: str
    resource: str
    change_types: tuple[str, ...]
    notification_url: str
    expires_at: datetime
    lifecycle_url: str | None = None
    include_resource_data: bool = False
    encryption_certificate_id: str | None = None
    status: str = "active"

    @property
    def key(self) -> tuple[str, str, str]:
        """Same shape as :attr:`Desired.key`."""
        return (self.tenant_id, self.name, self.scope_key.lower())


def _live_identity(tenant_id: str, live: LiveSubscription) -> tuple[str, str, tuple[str, ...]]:
    return (tenant_id, normalise_resource(live.resource), change_set(live.change_types))


def _replace_fields(d: Desired, live: LiveSubscription) -> tuple[str, ...]:
    """Fields that differ and that Graph cannot PATCH."""
    changed = []
    if normalise_resource(live.resource) != normalise_resource(d.resource):
        changed.append("resource")
    if change_set(live.change_types) != d.change_types:
        changed.append("changeType")
    if (live.lifecycle_notification_url or None) != (d.lifecycle_url or None):
        changed.append("lifecycleNotificationUrl")
    if bool(live.include_resource_data) != d.include_resource_data:
        changed.append("includeResourceData")
    return tuple(changed)


def plan(
    desired: Sequence[Desired],
    live: Mapping[str, Sequence[LiveSubscription]],
    recorded: Sequence[Recorded],
    now: datetime,
    *,
    prune: bool = False,
    app_ids: Mapping[str, str] | None = None,
    own_urls: Iterable[str] = (),
    expansions: Sequence[Expansion] = (),
) -> Plan:
    """Compute the actions that make *live* match *desired* at time *now* (pure).

    *live* maps a tenant id to the subscriptions Graph listed for it; *app_ids* maps a tenant id to
    our application (client) id there; *own_urls* are our notification and lifecycle URLs. The last
    two only serve to prove ownership of subscriptions missing from our table (for prune).
    """
    app_ids = app_ids or {}
    urls = (
        frozenset(own_urls)
        | {d.notification_url for d in desired}
        | {d.lifecycle_url for d in desired if d.lifecycle_url}
    )
    problems: list[QuotaProblem | str] = list(_duplicate_problems(desired))

    # Live subscriptions by id, per tenant; expired ones are gone for every purpose.
    live_by_id: dict[str, tuple[str, LiveSubscription]] = {}
    for tenant_id, subs in live.items():
        for sub in subs:
            if sub.expiration > now:
                live_by_id[sub.id] = (tenant_id, sub)
    recorded_by_id = {r.subscription_id: r for r in recorded}
    claimed: set[str] = set()

    # Our rows per declaration key, the row whose subscription lives longest first.
    rows_by_key: dict[tuple[str, str, str], list[Recorded]] = defaultdict(list)
    for row in recorded:
        if row.subscription_id in live_by_id:
            rows_by_key[row.key].append(row)
    for rows in rows_by_key.values():
        rows.sort(key=lambda r: live_by_id[r.subscription_id][1].expiration, reverse=True)

    # Unlinked live subscriptions by Graph identity, for adoption.
    linked_ids = {r.subscription_id for rows in rows_by_key.values() for r in rows}
    by_identity: dict[tuple[str, str, tuple[str, ...]], list[LiveSubscription]] = defaultdict(list)
    for tenant_id, sub in live_by_id.values():
        by_identity[_live_identity(tenant_id, sub)].append(sub)
    desired_keys = {d.key for d in desired}

    actions: list[Action] = []
    for d in desired:
        rows = rows_by_key.get(d.key, [])
        if rows:
            row = rows[0]
            sub = live_by_id[row.subscription_id][1]
            claimed.add(sub.id)
            actions.append(_linked_action(d, sub, now))
            continue
        candidates = [
            s
            for s in by_identity.get(d.identity, [])
            if s.id not in claimed and not _linked_elsewhere(s.id, recorded_by_id, linked_ids, desired_keys)
        ]
        same_url = [s for s in candidates if s.notification_url == d.notification_url]
        if same_url:
            sub = max(same_url, key=lambda s: s.expiration)
            claimed.add(sub.id)
            if sub.id in recorded_by_id:
                actions.append(_adopt_action(d, sub, now))
            else:
                actions.append(
                    _replace(
                        d,
                        sub,
                        now,
                        ("clientState",),
                        "adopting a live subscription syncer has no record of: Graph does not reveal its "
                        "clientState, so its notifications could not be verified; replacing it",
                    )
                )
            continue
        ours_other_url = [
            s
            for s in candidates
            if _provably_ours(s, live_by_id[s.id][0], recorded_by_id, app_ids, urls, any_url=True)
        ]
        if ours_other_url:
            # Graph refuses a second subscription on the same resource and change types (409).
            sub = max(ours_other_url, key=lambda s: s.expiration)
            claimed.add(sub.id)
            actions.append(
                _replace(
                    d,
                    sub,
                    now,
                    ("clientState", "notificationUrl"),
                    "a subscription of this app holds the resource with another URL and no record",
                )
            )
            continue
        actions.append(
            Action(
                Kind.CREATE,
                d.tenant_id,
                d.resource,
                name=d.name,
                new_expires_at=now + d.lifetime,
                reason="declared, not live",
                desired=d,
            )
        )

    orphans: list[Action] = []
    ignored = 0
    for sub_id, (tenant_id, sub) in sorted(
        live_by_id.items(), key=lambda item: (item[1][0], item[1][1].resource)
    ):
        if sub_id in claimed:
            continue
        own_row = recorded_by_id.get(sub_id)
        if not _provably_ours(sub, tenant_id, recorded_by_id, app_ids, urls, any_url=False):
            ignored += 1
            continue
        why = (
            "recorded in syncer's table"
            if own_row
            else "created by this app for one of our notification URLs"
        )
        action = Action(
            Kind.PRUNE,
            tenant_id,
            sub.resource,
            name=own_row.name if own_row else None,
            subscription_id=sub_id,
            expires_at=sub.expiration,
            changes=(why,),
            reason="no longer declared",
        )
        (actions if prune else orphans).append(action)

    for row in recorded:
        if row.subscription_id not in live_by_id:
            actions.append(
                Action(
                    Kind.FORGET,
                    row.tenant_id,
                    row.resource,
                    name=row.name,
                    subscription_id=row.subscription_id,
                    expires_at=row.expires_at,
                    reason="Graph no longer has it (expired or removed)",
                )
            )

    order = {kind: i for i, kind in enumerate(Kind)}
    actions.sort(key=lambda a: (order[a.kind], a.tenant_id, a.name or "", a.resource.lower()))
    pruned = {a.subscription_id for a in actions if a.kind == Kind.PRUNE}
    after = [
        Placed(a.tenant_id, a.resource, a.desired.resource_type if a.desired else None)
        for a in actions
        if a.kind not in (Kind.PRUNE, Kind.FORGET)
    ]
    # Live subscriptions the plan neither claims nor prunes keep their place in the quota.
    after += [
        Placed(tenant_id, sub.resource)
        for sub_id, (tenant_id, sub) in live_by_id.items()
        if sub_id not in claimed and sub_id not in pruned
    ]
    before = [Placed(tenant_id, sub.resource) for tenant_id, sub in live_by_id.values()]
    problems.extend(check_quotas(before, after))
    return Plan(
        now=now,
        actions=tuple(actions),
        orphans=tuple(orphans),
        expansions=tuple(expansions),
        problems=tuple(problems),
        ignored=ignored,
        prune=prune,
    )


def _linked_elsewhere(
    sub_id: str,
    recorded_by_id: Mapping[str, Recorded],
    linked_ids: set[str],
    desired_keys: set[tuple[str, str, str]],
) -> bool:
    # A live subscription our table links to another declaration that is still declared belongs to it.
    row = recorded_by_id.get(sub_id)
    return sub_id in linked_ids and row is not None and row.key in desired_keys


def _provably_ours(
    sub: LiveSubscription,
    tenant_id: str,
    recorded_by_id: Mapping[str, Recorded],
    app_ids: Mapping[str, str],
    urls: frozenset[str],
    *,
    any_url: bool,
) -> bool:
    if sub.id in recorded_by_id:
        return True
    app_id = app_ids.get(tenant_id)
    if not app_id or (sub.application_id or "").lower() != app_id.lower():
        return False
    return any_url or sub.notification_url in urls


def _linked_action(d: Desired, sub: LiveSubscription, now: datetime) -> Action:
    """The action for a declaration whose live subscription our table knows."""
    immutable = _replace_fields(d, sub)
    if immutable:
        return _replace(d, sub, now, immutable, "Graph cannot change " + ", ".join(immutable))
    due = sub.expiration - now <= d.renew_before
    moved = sub.notification_url != d.notification_url
    # Certificate rotation is a PATCH of both certificate fields (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data).
    rotated = d.include_resource_data and (sub.encryption_certificate_id or None) != (
        d.encryption_certificate_id or None
    )
    if rotated and not due and not moved and sub.encryption_certificate_id == d.previous_certificate_id:
        # On the certificate being rotated out, whose key the receiver still holds: it moves to the new one
        # with its renewal's PATCH, not in a burst of PATCHes the day the new certificate is declared.
        return _on_live(Kind.KEEP, d, sub, changes=("encryptionCertificate",),
                        reason=f"on the previous certificate {sub.encryption_certificate_id}, until its renewal")
    if moved or rotated:
        # Graph wants expirationDateTime or notificationUrl in every PATCH: a rotation alone renews too.
        renews = due or not moved
        changes = (
            *(("notificationUrl",) if moved else ()),
            *(("encryptionCertificate",) if rotated else ()),
            *(("expirationDateTime",) if renews else ()),
        )
        return _on_live(
            Kind.UPDATE,
            d,
            sub,
            new_expires_at=now + d.lifetime if renews else None,
            changes=changes,
            reason=" and ".join(
                what
                for what, yes in (("notificationUrl changed", moved), ("certificate rotated", rotated))
                if yes
            ),
        )
    if due:
        return _on_live(
            Kind.RENEW,
            d,
            sub,
            new_expires_at=now + d.lifetime,
            changes=("expirationDateTime",),
            reason=f"expires within {_human(d.renew_before)}",
        )
    return _on_live(Kind.KEEP, d, sub)


def _adopt_action(d: Desired, sub: LiveSubscription, now: datetime) -> Action:
    due = sub.expiration - now <= d.renew_before
    return _on_live(
        Kind.ADOPT,
        d,
        sub,
        new_expires_at=now + d.lifetime if due else None,
        changes=("expirationDateTime",) if due else (),
        reason="live subscription with a known clientState, recorded under another declaration",
    )


def _replace(
    d: Desired, sub: LiveSubscription, now: datetime, changes: tuple[str, ...], reason: str
) -> Action:
    return _on_live(Kind.REPLACE, d, sub, new_expires_at=now + d.lifetime, changes=changes, reason=reason)


def _on_live(
    kind: Kind,
    d: Desired,
    sub: LiveSubscription,
    *,
    new_expires_at: datetime | None = None,
    changes: tuple[str, ...] = (),
    reason: str = "",
) -> Action:
    """An action on declaration *d* and the live subscription *sub* it is linked or adopted to."""
    return Action(
        kind,
        d.tenant_id,
        d.resource,
        name=d.name,
        subscription_id=sub.id,
        expires_at=sub.expiration,
        new_expires_at=new_expires_at,
        changes=changes,
        reason=reason,
        desired=d,
    )


def _duplicate_problems(desired: Sequence[Desired]) -> Iterable[str]:
    groups: dict[tuple[str, str, tuple[str, ...]], list[Desired]] = defaultdict(list)
    for d in desired:
        groups[d.identity].append(d)
    for (tenant_id, _resource, change_types), same in groups.items():
        if len(same) > 1:
            names = ", ".join(sorted({repr(d.name) for d in same}))
            yield (
                f"{names} subscribe {len(same)} times to {same[0].resource} for {','.join(change_types)} in tenant "
                f"{tenant_id}: Graph allows one subscription per resource and change types (409)"
            )


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes % 1440 == 0 and minutes:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0 and minutes:
        return f"{minutes // 60}h"
    return f"{minutes}m"
