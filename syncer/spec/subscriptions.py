"""The subscriptions section of subscriptions.yaml: each declared subscription, checked against Graph's rules.

Apart from :mod:`syncer.spec.loader` (which reads the connection sections and owns the shared readers
for names, URLs and secrets) because this is where a declaration comes together: its defaults, tenant and lifetimes, and the
cross-subscription checks (names, tables, Graph's 409 duplicates). Four parts of a subscription have
modules of their own: its resource, change types and model (:mod:`syncer.spec.resource`), its mirror
(:mod:`syncer.spec.mirror`), its rich notifications (:mod:`syncer.spec.rich`) and what its sync
passes cover: users, calendar window, mail folders (:mod:`syncer.spec.scopes`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import yaml

from syncer import resources
from syncer.resources import MIN_LIFETIME, ResourceType
from syncer.spec.mirror import MirrorLoader
from syncer.spec.model import (
    DEFAULT_SYNC_INTERVAL,
    MAX_RENEW_BEFORE,
    GraphConnection,
    Receiver,
    Subscription,
    Tenant,
)
from syncer.spec.reader import Map, format_duration
from syncer.spec.resource import ResourceLoader
from syncer.spec.rich import RichLoader
from syncer.spec.scopes import ScopesLoader

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader

SUBSCRIPTION_KEYS = (
    "name",
    "tenant",
    "resource",
    "change_types",
    "include_resource_data",
    "encryption",
    "lifetime",
    "renew_before",
    "sync_interval",
    "mirror",
    "for_each",
    "window",
    "folders",
    "model",
    "history",
)


@dataclass
class _Defaults:
    """The defaults section: each value with the node it came from (None = built-in default)."""

    lifetime: tuple[timedelta | str, yaml.Node | None] = ("max", None)
    renew_before: tuple[timedelta | None, yaml.Node | None] = (None, None)
    sync_interval: tuple[timedelta, yaml.Node | None] = (DEFAULT_SYNC_INTERVAL, None)
    delete: str = "soft"


class SubscriptionsLoader:
    """Reads the ``defaults`` and ``subscriptions`` sections with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r
        self.mirrors = MirrorLoader(loader)
        self.rich = RichLoader(loader)
        self.scopes = ScopesLoader(loader)
        self.resource_checks = ResourceLoader(loader)

    def defaults(self, top: Map) -> _Defaults:
        r, d = self.r, _Defaults()
        dm = r.mapping(
            # concurrency is the tenants' (read with them by SpecLoader.default_concurrency).
            top.get("defaults"), "defaults", ("lifetime", "renew_before", "sync_interval", "delete", "concurrency")
        )
        if dm is None:
            return d
        if (node := dm.get("lifetime")) is not None:
            lifetime = r.duration(node, "defaults.lifetime", allow_max=True, low=MIN_LIFETIME)
            d.lifetime = (lifetime, node) if lifetime is not None else d.lifetime
        if (node := dm.get("renew_before")) is not None:
            renew = r.duration(node, "defaults.renew_before", low=timedelta(minutes=1))
            d.renew_before = (renew, node) if isinstance(renew, timedelta) else d.renew_before
        if (node := dm.get("sync_interval")) is not None:
            interval = r.duration(node, "defaults.sync_interval", low=timedelta(minutes=1))
            d.sync_interval = (interval, node) if isinstance(interval, timedelta) else d.sync_interval
        d.delete = r.choice(dm.get("delete"), "defaults.delete", ("soft", "hard")) or d.delete
        return d

    def load(
        self,
        top: Map,
        *,
        graph: GraphConnection | None,
        tenants: tuple[Tenant, ...] | None,
        receiver: Receiver | None,
    ) -> tuple[Subscription, ...] | None:
        r = self.r
        node = top.get("subscriptions")
        if node is None:
            r.error(top, "subscriptions", "a list of subscriptions", "nothing")
            return None
        defaults = self.defaults(top)
        subs: list[Subscription] = []
        names: dict[str, str] = {}
        tables: dict[str, str] = {}
        scopes: dict[tuple[str, str, tuple[str, ...]], str] = {}
        for path, item in r.sequence(node, "subscriptions", what="a list of subscriptions"):
            built = self.subscription(item, path, defaults, graph=graph, tenants=tenants, receiver=receiver)
            if built is None:
                continue
            sub, nodes = built
            repeated_name = sub.name in names
            if repeated_name:
                r.error(
                    nodes.get("name"),
                    f"{path}.name",
                    "a subscription name used once",
                    f"'{sub.name}' again (first at {names[sub.name]})",
                )
            names.setdefault(sub.name, path)
            if not repeated_name:  # a repeated name repeats its default table: one error is enough
                self.mirrors.claim_tables(sub, path, nodes, item, tables)
            # Teams allows one subscription of an app per chat, channel or team path, whatever its change types.
            per_path = sub.resource_type.quota.per_instance == 1
            # One scope per path: two declarations of it (an alerts filter differs in the query only, change types
            # differ) would share its sync state, and one of them would never sync.
            one_scope = sub.resource_type.key in ("alert", "callRecord", "printer", "printTaskDefinition")
            scope = (
                sub.tenant,
                resources.split_resource(sub.resource)[0].lower(),
                () if per_path or one_scope else tuple(sorted(sub.change_types)),
            )
            # Presence and conversations have a rule of their own, checked first (one error per declaration).
            if self.one_per_user_or_group(sub, path, nodes, scopes):
                pass
            elif scope in scopes and one_scope:
                r.error(nodes.get("resource"), f"{path}.resource", f"one declaration of {scope[1]} per tenant",
                        f"the same path as {scopes[scope]}", "both would sync one scope (join alert filters with 'or')")
            elif scope in scopes:
                r.error(
                    nodes.get("resource"),
                    f"{path}.resource",
                    "one subscription per Teams resource" if per_path else "one subscription per resource and change types",
                    f"the same as {scopes[scope]}",
                    "Graph allows one subscription of an app per chat, channel or team path"
                    if per_path
                    else "Graph answers 409 Conflict to a duplicate",
                )
            scopes.setdefault(scope, path)
            subs.append(sub)
        return tuple(subs)

    def one_per_user_or_group(
        self, sub: Subscription, path: str, nodes: dict[str, yaml.Node], seen: dict[tuple[str, str, tuple[str, ...]], str]
    ) -> bool:
        """Graph allows one presence subscription per app and signed-in user
        (https://learn.microsoft.com/graph/changenotifications-for-presence) and one conversation subscription per
        group (https://learn.microsoft.com/graph/change-notifications-overview): a second declaration is refused."""
        name = sub.resource_type.name
        if name not in ("presence", "conversation"):
            return False
        what = "presence" if name == "presence" else resources.split_resource(sub.resource)[0].lower()
        key = (sub.tenant, what, ("one per user or group",))
        if key in seen:
            self.r.error(
                nodes.get("resource"),
                f"{path}.resource",
                "one presence declaration per signed-in account (list every user in its $filter)"
                if name == "presence"
                else "one conversation subscription per group",
                f"another besides {seen[key]}",
            )
            return True
        seen.setdefault(key, path)
        return False

    def subscription(
        self,
        item: yaml.Node,
        path: str,
        defaults: _Defaults,
        *,
        graph: GraphConnection | None,
        tenants: tuple[Tenant, ...] | None,
        receiver: Receiver | None,
    ) -> tuple[Subscription, dict[str, yaml.Node]] | None:
        r = self.r
        s = r.mapping(item, path, SUBSCRIPTION_KEYS, what="a subscription (a mapping with name and resource)")
        if s is None:
            return None
        before = len(r.errors)
        name = self.loader.name(s.get("name"), s.sub("name"))
        if "name" not in s:
            r.error(s, s.sub("name"), "a subscription name", "nothing")
        tenant = self.sub_tenant(s, tenants)
        account = next((t for t in tenants or () if t.name == tenant), None)
        matched = self.resource_checks.resource(s, graph, account)
        if matched is None:
            self.mirrors.mirror(s, None, name, default_delete=defaults.delete)  # still report what is wrong in the mirror
            return None
        resource, rt, params = matched
        change_types = self.resource_checks.change_types(s, rt)
        rich = r.boolean(s.get("include_resource_data"), s.sub("include_resource_data")) or False
        encryption = self.rich.encryption_of(s, rt, rich=rich)
        lifetime, renew_before = self.lifetimes(s, rt, rich, defaults, receiver)
        interval_node = s.get("sync_interval")
        interval = (
            r.duration(interval_node, s.sub("sync_interval"), low=timedelta(minutes=1))
            if interval_node
            else defaults.sync_interval[0]
        )
        mirror = self.mirrors.mirror(s, rt, name, default_delete=defaults.delete, resource=resource)
        fan_out = self.scopes.fan_out(s, rt, params)
        if fan_out is not None and fan_out.all_teams and account is not None and account.delegated:
            # GET /teams lists every team of the organisation, most of which the user cannot read.
            r.error(s.get("for_each"), s.sub("for_each"), "for_each: {teams: [TEAM-ID, ...]} with auth: delegated",
                    "teams: all", "name the teams the signed-in user is a member of")
        window = self.scopes.window(s, rt)
        folders = self.scopes.folders(s, rt, params)
        model = self.resource_checks.model(s, rt, resource)
        if len(r.errors) > before or not (
            name and tenant and mirror and isinstance(interval, timedelta) and renew_before
        ):
            return None
        return Subscription(
            name=name,
            tenant=tenant,
            resource=resource,
            resource_type=rt,
            change_types=change_types,
            include_resource_data=rich,
            encryption=encryption,
            lifetime=lifetime,
            renew_before=renew_before,
            mirror=mirror,
            fan_out=fan_out,
            sync_interval=interval,
            line=s.line,
            window_past=window[0] if window else None,
            window_future=window[1] if window else None,
            folders=folders,
            model=model,
        ), s.values

    def sub_tenant(self, s: Map, tenants: tuple[Tenant, ...] | None) -> str | None:
        r, path, node = self.r, s.sub("tenant"), s.get("tenant")
        names = [t.name for t in tenants or ()]
        if node is None:
            if len(names) > 1:
                r.error(
                    s, path, "tenant: one of " + ", ".join(names), f"nothing (there are {len(names)} tenants)"
                )
                return None
            return names[0] if names else None
        text = r.string(node, path, expected="a tenant name")
        if text is not None and tenants is not None and text not in names:
            close = difflib.get_close_matches(text, names, n=1)
            r.error(
                node,
                path,
                "one of the tenants: " + ", ".join(names),
                f"'{text}'",
                f"did you mean '{close[0]}'?" if close else "",
            )
            return None
        return text

    def lifetimes(
        self, s: Map, rt: ResourceType, rich: bool, defaults: _Defaults, receiver: Receiver | None
    ) -> tuple[timedelta | None, timedelta | None]:
        r, path = self.r, s.sub("lifetime")
        node = s.get("lifetime")
        value = r.duration(node, path, allow_max=True, low=MIN_LIFETIME) if node else defaults.lifetime[0]
        where = node or s
        from_defaults = defaults.lifetime[1]
        hint = (
            f"from defaults.lifetime, line {from_defaults.start_mark.line + 1}"
            if not node and from_defaults
            else ""
        )
        limit = rt.max_lifetime_for(rich=rich) or rt.max_lifetime
        lifetime = value if isinstance(value, timedelta) else None
        if lifetime is not None and lifetime > limit:
            minutes = int(limit.total_seconds() // 60)
            r.error(
                where,
                path,
                f"at most {format_duration(limit)} ({minutes} minutes), Graph's maximum for {rt.name}"
                + (" with include_resource_data" if rich else ""),
                format_duration(lifetime),
                hint,
            )
        effective = lifetime or limit
        over = rt.lifecycle_url_over
        if over is not None and receiver is not None and receiver.lifecycle_url is None and effective > over:
            r.error(
                where,
                path,
                f"at most {format_duration(over)} when receiver.lifecycle_url is null",
                format_duration(effective),
                f"Graph needs a lifecycle URL for {rt.name} past {format_duration(over)}",
            )
        renew_node = s.get("renew_before")
        if renew_node is not None:
            renew = r.duration(renew_node, s.sub("renew_before"), low=timedelta(minutes=1))
        else:
            renew_node = defaults.renew_before[1]
            renew = defaults.renew_before[0] or min(MAX_RENEW_BEFORE, effective / 4)
        if isinstance(renew, timedelta) and renew >= effective:
            r.error(
                renew_node or s,
                s.sub("renew_before"),
                f"less than the lifetime ({format_duration(effective)})",
                format_duration(renew),
            )
            return lifetime, None
        return lifetime, renew if isinstance(renew, timedelta) else None
