"""The desired state: one :class:`Desired` per Graph subscription the spec asks for, fan-out expanded.

This is the first of the planner's three inputs (:mod:`syncer.reconcile.plan`), and what a repair
recreates from. Turning a declaration into what Graph will be asked for is where the spec meets
Graph's limits: the lifetime is capped just under the resource's maximum, change types are put in
the form Graph compares, and a rich subscription's certificate is read into the base64 Graph takes.
Pure apart from reading certificate files, which tests can replace.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from syncer.resources import MIN_LIFETIME, ResourceType, split_resource

if TYPE_CHECKING:
    from syncer.spec import Spec

SKEW_MARGIN = timedelta(minutes=5)
"""Asking for exactly the maximum lifetime fails if Graph's clock is behind ours; stay this far under it."""


@dataclass(frozen=True)
class Desired:
    """One subscription the spec asks for, fan-out expanded. Carries no secret."""

    name: str  # the declaration in subscriptions.yaml
    tenant_id: str
    resource: str  # as sent to Graph, placeholders filled
    change_types: tuple[str, ...]  # sorted
    notification_url: str
    resource_type: ResourceType
    lifetime: timedelta  # what we ask for at create and renew (already capped, see effective_lifetime)
    renew_before: timedelta
    lifecycle_url: str | None = None
    include_resource_data: bool = False
    encryption_certificate_id: str | None = None
    encryption_certificate: str | None = field(default=None, repr=False)  # base64 DER, public
    previous_certificate_id: str | None = None  # rotating out: subscriptions on it move at renewal
    user: str | None = None  # the fan-out user this one is for
    query_options: str | None = None  # notificationQueryOptions (required by Universal Print's printer jobs)

    @property
    def scope_key(self) -> str:
        """The expanded scope: the resource path without its query (``users/{id}/messages``)."""
        return split_resource(self.resource)[0]

    @property
    def key(self) -> tuple[str, str, str]:
        """What links a declaration to our row: tenant, name and scope (scope compared case-blind)."""
        return (self.tenant_id, self.name, self.scope_key.lower())

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...]]:
        """What Graph's duplicate check (409) looks at: tenant, resource and change types."""
        return (self.tenant_id, normalise_resource(self.resource), self.change_types)


@dataclass(frozen=True)
class Expansion:
    """How a fan-out declaration expanded: which users (or teams, or teams' channels), found how."""

    name: str
    tenant_id: str
    source: str  # "users: [..]", "group <id>", "filter <expr>", "all teams"
    users: tuple[str, ...]  # for {user}; for {team}: one label per binding ("team" or "team/channel")
    bindings: tuple[tuple[tuple[str, str], ...], ...] = ()
    """For ``{team}`` (and ``{channel}``): the placeholder values of each Graph subscription; empty for ``{user}``."""
    noun: str = "users"
    resources: tuple[str, ...] = ()
    """A declaration that names its target indirectly (:mod:`syncer.resolve`): the canonical path subscribed instead."""


def fill_placeholders(resource: str, binding: Iterable[tuple[str, str]]) -> str:
    """*resource* with each ``{name}`` of *binding* replaced by its value (as Graph takes it in a path)."""
    for name, value in binding:
        resource = resource.replace("{" + name + "}", value)
    return resource


def desired_from_spec(
    spec: Spec,
    expansions: Mapping[str, Expansion] | None = None,
    *,
    read_certificate: Callable[[Path], str] | None = None,
) -> list[Desired]:
    """One :class:`Desired` per subscription the spec asks for; fan-out declarations need their expansion."""
    expansions = expansions or {}
    read = read_certificate or certificate_base64
    out: list[Desired] = []
    for sub in spec.subscriptions:
        tenant = spec.tenant(sub.tenant)
        lifetime = effective_lifetime(
            sub.resource_type, declared=sub.lifetime, rich=sub.include_resource_data
        )
        cert_id = sub.encryption.id if sub.encryption else None
        cert = read(sub.encryption.certificate) if sub.encryption else None
        previous = sub.encryption.previous.id if sub.encryption and sub.encryption.previous else None
        resource = sub.graph_resource
        bindings: tuple[tuple[tuple[str, str], ...], ...]
        resolved = expansions.get(sub.name)
        if sub.fan_out is None and resolved is not None and resolved.resources:
            resource, bindings = resolved.resources[0], ((),)
        elif sub.fan_out is None and resolved is None:
            bindings = ((),)
        else:
            expansion = expansions.get(sub.name)
            if expansion is None:
                raise ValueError(f"subscription {sub.name!r} fans out but was not expanded")
            bindings = expansion.bindings or tuple((("user", user),) for user in expansion.users)
        for binding in bindings:
            user = dict(binding).get("user")
            out.append(
                Desired(
                    name=sub.name,
                    tenant_id=tenant.tenant_id,
                    resource=fill_placeholders(resource, binding),
                    change_types=change_set(sub.change_types),
                    notification_url=spec.receiver.notification_url,
                    lifecycle_url=spec.receiver.lifecycle_url,
                    resource_type=sub.resource_type,
                    lifetime=lifetime,
                    renew_before=sub.renew_before,
                    include_resource_data=sub.include_resource_data,
                    encryption_certificate_id=cert_id,
                    encryption_certificate=cert,
                    previous_certificate_id=previous,
                    user=user,
                    query_options=sub.resource_type.query_options,
                )
            )
    return out


def certificate_base64(path: Path) -> str:
    """A PEM or DER certificate file as the base64 DER string Graph's ``encryptionCertificate`` takes."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        body = b"".join(
            line.strip() for line in data.splitlines() if line.strip() and not line.startswith(b"-----")
        )
        return body.decode("ascii")
    return base64.b64encode(data).decode("ascii")


def normalise_resource(resource: str) -> str:
    """A resource as compared for identity: path lower-cased without a leading ``/``, query kept as is."""
    path, query = split_resource(resource)
    return f"{path.lower()}?{query}" if query else path.lower()


def effective_lifetime(rt: ResourceType, *, declared: timedelta | None, rich: bool) -> timedelta:
    """The lifetime to ask for: the declared one (None = the maximum), capped just under Graph's maximum."""
    maximum = rt.max_lifetime_for(rich=rich) or rt.max_lifetime
    ceiling = maximum - SKEW_MARGIN if maximum - SKEW_MARGIN >= MIN_LIFETIME else maximum
    wanted = declared if declared is not None else ceiling
    return min(max(wanted, MIN_LIFETIME), ceiling)


def change_set(change_types: Iterable[str]) -> tuple[str, ...]:
    """Change types as compared and sent: trimmed, unique, sorted."""
    return tuple(sorted({c.strip() for c in change_types if c.strip()}))
