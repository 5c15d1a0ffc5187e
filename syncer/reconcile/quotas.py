"""Graph's subscription quotas (https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions), checked on the state a reconcile plan would leave.

Graph answers ``403`` once a quota is full, part-way through an apply. Checking the plan first turns
that into one refusal, before any call, that says which bucket, its limit and the numbers. The
limits come from :mod:`syncer.resources` (``ResourceType.quota``); buckets:

- per app and tenant, per tenant, per app (all tenants) for directory resources: user and group
  subscriptions share these ("user/group" in Graph's table);
- per mailbox for Outlook resources (all apps together, though we only see ours);
- one pool per organisation shared by every Teams type; one subscription of an app per Teams chat,
  channel or team path, and ten per user on the user-scoped paths (``users/{id}/chats/getAllMessages``).

We can only count the subscriptions we see (our app's). A quota shared with other apps may still be
reached at Graph: the 403 then comes back per subscription, with a hint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from syncer.resources import ResourceType, match_resource, split_resource

_DIRECTORY = frozenset({"user", "group"})


@dataclass(frozen=True)
class Placed:
    """A subscription that occupies quota: where, on what, of which type (None = not in our catalogue)."""

    tenant_id: str
    resource: str
    resource_type: ResourceType | None = None


@dataclass(frozen=True)
class QuotaProblem:
    """The plan would hold more subscriptions than Graph allows in one bucket."""

    bucket: str  # e.g. "directory subscriptions of this app in tenant t1"
    limit: int
    planned: int
    existing: int

    def __str__(self) -> str:
        return (
            f"quota exceeded: the plan needs {self.planned} {self.bucket} "
            f"({self.existing} exist now); Graph allows {self.limit}"
        )


Bucket = tuple[str, str]


def buckets(placed: Placed) -> list[tuple[Bucket, int, str]]:
    """The quota buckets *placed* counts against: (key, limit, label)."""
    rt = placed.resource_type
    if rt is None:
        matched = match_resource(placed.resource)
        rt = matched[0] if matched else None
    if rt is None:
        return []
    q = rt.quota
    kind = q.pool or ("directory" if rt.name in _DIRECTORY else rt.name)
    tenant = placed.tenant_id
    out: list[tuple[Bucket, int, str]] = []
    if q.per_app_tenant is not None:
        out.append(
            (
                (f"app:{kind}", tenant),
                q.per_app_tenant,
                f"{kind} subscriptions of this app in tenant {tenant}",
            )
        )
    if q.per_tenant is not None:
        out.append(((f"tenant:{kind}", tenant), q.per_tenant, f"{kind} subscriptions in tenant {tenant}"))
    if q.per_app is not None:
        out.append(((f"app-all:{kind}", ""), q.per_app, f"{kind} subscriptions of this app (all tenants)"))
    if q.per_instance is not None:
        path = split_resource(placed.resource)[0].lower()  # ?model= does not make another instance
        out.append(
            ((f"instance:{path}", tenant), q.per_instance, f"subscriptions of this app on {path}")
        )
    if q.per_user is not None:
        matched = match_resource(placed.resource)
        user = matched[1].get("user") if matched else None
        if user:
            out.append(
                ((f"user:{kind}:{user.lower()}", tenant), q.per_user, f"{kind} subscriptions of user {user}")
            )
    if q.per_mailbox is not None:
        matched = match_resource(placed.resource)
        mailbox = matched[1].get("user") if matched else None
        if mailbox:
            out.append(
                ((f"mailbox:{mailbox.lower()}", tenant), q.per_mailbox, f"subscriptions on mailbox {mailbox}")
            )
    return out


def check_quotas(before: Iterable[Placed], after: Iterable[Placed]) -> list[QuotaProblem]:
    """Problems of the *after* state (what the plan leaves), with the *before* counts for context."""
    now_count: Counter[Bucket] = Counter()
    after_count: Counter[Bucket] = Counter()
    limits: dict[Bucket, tuple[int, str]] = {}
    for placed in before:
        for key, limit, label in buckets(placed):
            now_count[key] += 1
            limits[key] = (limit, label)
    for placed in after:
        for key, limit, label in buckets(placed):
            after_count[key] += 1
            limits[key] = (limit, label)
    problems = []
    for key, count in sorted(after_count.items()):
        limit, label = limits[key]
        if count > limit:
            problems.append(
                QuotaProblem(bucket=label, limit=limit, planned=count, existing=now_count.get(key, 0))
            )
    return problems
