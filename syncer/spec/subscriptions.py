"""The subscriptions section of subscriptions.yaml: each declared subscription, checked against Graph's rules.

Apart from :mod:`syncer.spec.loader` (which reads the connection sections and owns the shared readers
for names, URLs and secrets) because this is where most of the rules live: resource paths and
change types from :mod:`syncer.resources`, lifetimes, rich notifications, the mirror's SQL names,
fan-out over users, and the cross-subscription checks (names, tables, Graph's 409 duplicates).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import yaml

from syncer import resources
from syncer.resources import MIN_LIFETIME, ResourceType
from syncer.spec.model import (
    CLOUDS,
    COLUMN_TYPES,
    DEFAULT_SYNC_INTERVAL,
    MAX_RENEW_BEFORE,
    SPEC_VERSION,
    Column,
    EncryptionCert,
    FanOut,
    GraphConnection,
    Mirror,
    Receiver,
    Subscription,
    Tenant,
)
from syncer.spec.reader import Map, format_duration

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
)
DEFAULT_WINDOW_PAST = timedelta(days=30)
DEFAULT_WINDOW_FUTURE = timedelta(days=180)
MAX_GROUP_TABLE = 63 - len("_members")
_FIELD_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _Defaults:
    """The defaults section: each value with the node it came from (None = built-in default)."""

    lifetime: tuple[timedelta | str, yaml.Node | None] = ("max", None)
    renew_before: tuple[timedelta | None, yaml.Node | None] = (None, None)
    sync_interval: tuple[timedelta, yaml.Node | None] = (DEFAULT_SYNC_INTERVAL, None)
    delete: str = "soft"


def column_name(field: str) -> str:
    """The default SQL column of a Graph property: ``from.emailAddress.address`` -> ``from_email_address_address``."""
    return "_".join(re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", part).lower() for part in field.split("."))


def default_table(name: str) -> str:
    """The default mirror table of a subscription: its name as a SQL identifier."""
    table = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return table if table[:1].isalpha() else f"t_{table}"


class SubscriptionsLoader:
    """Reads the ``defaults`` and ``subscriptions`` sections with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def defaults(self, top: Map) -> _Defaults:
        r, d = self.r, _Defaults()
        dm = r.mapping(
            top.get("defaults"), "defaults", ("lifetime", "renew_before", "sync_interval", "delete")
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
                self.claim_tables(sub, path, nodes, item, tables)
            scope = (
                sub.tenant,
                resources.split_resource(sub.resource)[0].lower(),
                tuple(sorted(sub.change_types)),
            )
            if scope in scopes:
                r.error(
                    nodes.get("resource"),
                    f"{path}.resource",
                    "one subscription per resource and change types",
                    f"the same as {scopes[scope]}",
                    "Graph answers 409 Conflict to a duplicate",
                )
            scopes.setdefault(scope, path)
            subs.append(sub)
        return tuple(subs)

    def claim_tables(
        self,
        sub: Subscription,
        path: str,
        nodes: dict[str, yaml.Node],
        item: yaml.Node,
        tables: dict[str, str],
    ) -> None:
        """Record the tables *sub* writes to, refusing one another subscription already writes to."""
        mirror_node = nodes.get("mirror")
        table_node = (
            next((v for k, v in mirror_node.value if k.value == "table"), None)
            if isinstance(mirror_node, yaml.MappingNode)
            else None
        )
        where = table_node or nodes.get("name") or item
        claimed = {sub.mirror.table: path}
        if sub.resource_type.name == "group":  # syncer.mirror keeps group membership in <table>_members
            claimed[f"{sub.mirror.table}_members"] = f"the members table of {path}"
            if len(sub.mirror.table) > MAX_GROUP_TABLE:
                self.r.error(
                    where,
                    f"{path}.mirror.table",
                    f"a group table name of at most {MAX_GROUP_TABLE} characters (<table>_members must fit in 63)",
                    f"'{sub.mirror.table}'",
                )
        for table, owner in claimed.items():
            if table in tables:
                self.r.error(
                    where,
                    f"{path}.mirror.table",
                    "a table used by one subscription",
                    f"'{table}' (also {tables[table]})",
                )
            tables.setdefault(table, owner)

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
        matched = self.resource(s, graph)
        if matched is None:
            self.mirror(s, None, name, defaults)  # still report what is wrong in the mirror
            return None
        resource, rt, params = matched
        change_types = self.change_types(s, rt)
        rich = r.boolean(s.get("include_resource_data"), s.sub("include_resource_data")) or False
        encryption = self.rich(s, rt, rich)
        lifetime, renew_before = self.lifetimes(s, rt, rich, defaults, receiver)
        interval_node = s.get("sync_interval")
        interval = (
            r.duration(interval_node, s.sub("sync_interval"), low=timedelta(minutes=1))
            if interval_node
            else defaults.sync_interval[0]
        )
        mirror = self.mirror(s, rt, name, defaults)
        fan_out = self.fan_out(s, rt, params)
        window = self.window(s, rt)
        folders = self.folders(s, rt, params)
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

    def resource(
        self, s: Map, graph: GraphConnection | None
    ) -> tuple[str, ResourceType, dict[str, str]] | None:
        r, path, node = self.r, s.sub("resource"), s.get("resource")
        expected = "a Graph resource path like users or users/{user}/messages"
        if node is None:
            r.error(s, path, expected, "nothing")
            return None
        text = r.string(node, path, expected=expected)
        if text is None:
            return None
        if re.match(r"^[A-Za-z]+://", text):
            relative = re.sub(r"^[A-Za-z]+://[^/]+/(v1\.0/|beta/)?", "", text)
            r.error(
                node, path, "a path relative to the Graph root, not a URL", f"'{text}'", f"write '{relative}'"
            )
            return None
        bare, _query = resources.split_resource(text)
        others = [b for b in re.findall(r"\{[^}]*\}", bare) if b != "{user}"]
        if others:
            r.error(
                node, path, "no placeholder but {user} (expanded by for_each)", f"{others[0]} in '{text}'"
            )
            return None
        matched = resources.match_resource(text)
        if matched is None:
            r.error(
                node,
                path,
                "a resource Graph sends change notifications for (see docs/spec.md)",
                f"'{text}'",
                _suggest(bare),
            )
            return None
        rt, params = matched
        if params.get("user", "").lower() == "me":
            r.error(
                node, path, "users/{id} or users/{user}: app-only auth has no signed-in user", f"'{text}'"
            )
        elif rt.delegated_only:
            r.error(
                node,
                path,
                "a resource Graph lets an app subscribe to with application permissions",
                f"'{text}' ({rt.name}: delegated permissions only, not supported by spec version {SPEC_VERSION})",
            )
        elif rt.global_only and graph is not None and graph.cloud in CLOUDS and graph.cloud != "global":
            r.error(
                node,
                path,
                f"a resource available in the {graph.cloud} cloud",
                f"'{text}' ({rt.name}: global cloud only)",
            )
        else:
            return text, rt, params
        return None

    def change_types(self, s: Map, rt: ResourceType) -> tuple[str, ...]:
        r, path, node = self.r, s.sub("change_types"), s.get("change_types")
        allowed = tuple(ct for ct in resources.CHANGE_TYPES if ct in rt.change_types)
        if node is None:
            return allowed
        items: list[tuple[str, yaml.Node, str]] = []
        if isinstance(node, yaml.ScalarNode):
            joined = r.string(node, path, expected="a list of change types") or ""
            items = [
                (part.strip(), node, path) for part in joined.split(",") if part.strip()
            ]  # Graph's "created,updated"
        else:
            for item_path, child in r.sequence(node, path, what="a list of change types"):
                text = r.string(child, item_path, expected="created, updated or deleted")
                if text is not None:
                    items.append((text.strip(), child, item_path))
        found: list[str] = []
        for value, where, item_path in items:
            if value not in resources.CHANGE_TYPES:
                close = difflib.get_close_matches(value, resources.CHANGE_TYPES, n=1)
                r.error(
                    where,
                    item_path,
                    "created, updated or deleted",
                    f"'{value}'",
                    f"did you mean '{close[0]}'?" if close else "",
                )
            elif value not in rt.change_types:
                hint = (
                    "Graph sends creation and soft deletion as updated"
                    if rt.name in ("user", "group")
                    else ""
                )
                r.error(
                    where,
                    item_path,
                    f"a change type Graph accepts for {rt.name}: {', '.join(allowed)}",
                    f"'{value}'",
                    hint,
                )
            elif value not in found:
                found.append(value)
        if isinstance(node, yaml.SequenceNode) and not node.value:
            r.error(node, path, "at least one change type", "an empty list")
        return tuple(ct for ct in resources.CHANGE_TYPES if ct in found)

    def rich(self, s: Map, rt: ResourceType, rich: bool) -> EncryptionCert | None:
        r, path = self.r, s.sub("include_resource_data")
        if rich and rt.max_lifetime_rich is None:
            r.error(
                s.get("include_resource_data"),
                path,
                f"false: Graph has no rich notifications for {rt.name}",
                "true",
            )
            return None
        if rt.rich_required and not rich:
            r.error(
                s.get("include_resource_data") or s,
                path,
                f"true: Graph only sends {rt.name} notifications with resource data",
                str(rich).lower(),
            )
        node = s.get("encryption")
        if rich and node is None:
            r.error(
                s,
                s.sub("encryption"),
                "encryption (certificate, private_key, id) with include_resource_data: true",
                "nothing",
            )
        elif node is not None and not rich:
            r.error(
                node,
                s.sub("encryption"),
                "encryption only with include_resource_data: true",
                "include_resource_data: false",
            )
        elif node is not None:
            return self.encryption(node, s.sub("encryption"), rotation=True)
        return None

    def encryption(self, node: yaml.Node, path: str, *, rotation: bool) -> EncryptionCert | None:
        r = self.r
        keys = (
            ("certificate", "private_key", "id", "previous")
            if rotation
            else ("certificate", "private_key", "id")
        )
        e = r.mapping(node, path, keys)
        if e is None:
            return None
        cert = self.loader.file_path(e.get("certificate"), e.sub("certificate"))
        if "certificate" not in e:
            r.error(e, e.sub("certificate"), "the certificate (a PEM path) Graph encrypts with", "nothing")
        elif cert is not None and self.loader.check_secrets and not cert.is_file():
            r.error(
                e.get("certificate"),
                e.sub("certificate"),
                "an existing certificate file",
                f"no file at {cert}",
            )
        key = self.loader.secret(e, "private_key")
        cert_id = r.string(e.get("id"), e.sub("id"), expected="a certificate id (at most 128 characters)")
        if "id" not in e:
            r.error(e, e.sub("id"), "a certificate id (at most 128 characters)", "nothing")
        elif cert_id is not None and len(cert_id) > 128:
            r.error(
                e.get("id"),
                e.sub("id"),
                "a certificate id of at most 128 characters",
                f"{len(cert_id)} characters",
            )
            cert_id = None
        previous_node = e.get("previous")
        previous = (
            self.encryption(previous_node, e.sub("previous"), rotation=False) if previous_node else None
        )
        if cert is None or key is None or cert_id is None:
            return None
        return EncryptionCert(cert, key, cert_id, previous)

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

    def mirror(self, s: Map, rt: ResourceType | None, name: str | None, defaults: _Defaults) -> Mirror | None:
        r, path = self.r, s.sub("mirror")
        mm = r.mapping(s.get("mirror"), path, ("table", "columns", "delete"))
        if s.get("mirror") is not None and mm is None:
            return None
        table_node = mm.get("table") if mm else None
        table_text = (
            r.string(table_node, f"{path}.table", expected="a table name")
            if table_node
            else (default_table(name) if name else None)
        )
        table = (
            self.loader.sql_name(table_node or s.get("name"), f"{path}.table", table_text, column=False)
            if table_text
            else None
        )
        columns = (
            r.list_of(mm.get("columns"), f"{path}.columns", lambda n, p: self.column(n, p, rt))
            if mm
            else None
        ) or []
        seen: dict[str, str] = {}
        for index, column in enumerate(columns):
            if column.name in seen:
                r.error(
                    mm.get("columns") if mm else s,
                    f"{path}.columns[{index}]",
                    "each column name once",
                    f"'{column.name}' again (also {seen[column.name]})",
                )
            seen.setdefault(column.name, column.field)
        delete = (
            r.choice(mm.get("delete"), f"{path}.delete", ("soft", "hard"))
            if mm and mm.get("delete")
            else defaults.delete
        )
        if table is None or delete is None:
            return None
        return Mirror(table, tuple(columns), delete)

    def column(self, node: yaml.Node, path: str, rt: ResourceType | None) -> Column | None:
        r = self.r
        expected = "a property name or {field, column, type}"
        name_node: yaml.Node | None = None
        field_node: yaml.Node
        column_type: str | None = None
        if isinstance(node, yaml.ScalarNode):
            field, field_node = r.string(node, path, expected=expected), node
        else:
            c = r.mapping(node, path, ("field", "column", "type"), what=expected)
            if c is None:
                return None
            field_node = c.get("field") or node
            field = r.string(
                c.get("field"), c.sub("field"), expected="a Graph property, dotted for nested ones"
            )
            if "field" not in c:
                r.error(c, c.sub("field"), "the Graph property to copy (field)", "nothing")
            name_node = c.get("column")
            column_type = r.choice(c.get("type"), c.sub("type"), COLUMN_TYPES) if c.get("type") else None
            if c.get("type") and column_type is None:
                return None
        if field is None:
            return None
        path_field = path if isinstance(node, yaml.ScalarNode) else f"{path}.field"
        segments = field.split(".")
        if not _FIELD_SEGMENT.match(segments[0]) or not all(
            _FIELD_SEGMENT.match(p) or p.isdigit() for p in segments[1:]
        ):
            r.error(
                field_node,
                path_field,
                "a Graph property name, dotted for nested ones (from.emailAddress.address)",
                f"'{field}'",
            )
            return None
        if field == "id":
            r.error(
                field_node,
                path_field,
                "a property other than id",
                "'id'",
                "every mirror table has an id column already",
            )
            return None
        if name_node is not None:
            text = r.string(name_node, f"{path}.column", expected="a column name")
            name = self.loader.sql_name(name_node, f"{path}.column", text, column=True) if text else None
        else:
            name = self.loader.sql_name(field_node, path_field, column_name(field), column=True)
            if name is None:
                return None
        if name is None:
            return None
        if column_type is None:
            known = rt.field_type(field) if rt is not None and len(segments) == 1 else None
            column_type = known or ("datetime" if segments[-1].endswith("DateTime") else "text")
        return Column(field, name, column_type)

    def fan_out(self, s: Map, rt: ResourceType, params: dict[str, str]) -> FanOut | None:
        r, path, node = self.r, s.sub("for_each"), s.get("for_each")
        placeholder = params.get("user") == "{user}"
        if node is None:
            if placeholder:
                r.error(
                    s.get("resource"),
                    s.sub("resource"),
                    "a for_each saying which users {user} stands for",
                    "{user} without for_each",
                    "add for_each: {users: [...]} | {group: ID} | {filter: ...} | {users: all}",
                )
            return None
        if not placeholder:
            r.error(
                node, path, "for_each only with a {user} placeholder in resource", "a resource without {user}"
            )
            return None
        f = r.mapping(
            node,
            path,
            ("users", "group", "filter"),
            what="{users: [...] | all}, {group: ID} or {filter: ...}",
        )
        if f is None:
            return None
        if len(f.values) != 1:
            r.error(f, path, "exactly one of users, group, filter", ", ".join(f.values) or "none")
            return None
        if (users := f.get("users")) is not None:
            if isinstance(users, yaml.ScalarNode) and r.raw(users) == "all":
                return FanOut(all_users=True)
            ids = r.list_of(
                users,
                f.sub("users"),
                lambda n, p: r.string(n, p, expected="a user id or UPN"),
                what="a list of user ids or all",
            )
            if ids is not None and not ids and isinstance(users, yaml.SequenceNode):
                r.error(users, f.sub("users"), "at least one user", "an empty list")
            return FanOut(users=tuple(ids)) if ids else None
        if f.get("group") is not None:
            group = r.string(f.get("group"), f.sub("group"), expected="a group id")
            return FanOut(group=group) if group else None
        query = r.string(f.get("filter"), f.sub("filter"), expected="an OData $filter on users")
        return FanOut(filter=query) if query else None

    def window(self, s: Map, rt: ResourceType) -> tuple[timedelta, timedelta] | None:
        r, path, node = self.r, s.sub("window"), s.get("window")
        if rt.sync != resources.CALENDAR_VIEW:
            if node is not None:
                r.error(node, path, "window only for event resources (calendarView)", f"a {rt.name} resource")
            return None
        w = r.mapping(node, path, ("past", "future"), what="{past: DURATION, future: DURATION}")
        past = r.duration(w.get("past"), f"{path}.past") if w and w.get("past") else DEFAULT_WINDOW_PAST
        future = (
            r.duration(w.get("future"), f"{path}.future") if w and w.get("future") else DEFAULT_WINDOW_FUTURE
        )
        if not isinstance(past, timedelta) or not isinstance(future, timedelta):
            return None
        return past, future

    def folders(self, s: Map, rt: ResourceType, params: dict[str, str]) -> tuple[str, ...] | None:
        r, path, node = self.r, s.sub("folders"), s.get("folders")
        if rt.key not in ("message", "contact"):
            if node is not None:
                r.error(node, path, "folders only for messages and contacts", f"a {rt.name} resource")
            return None
        if "folder" in params:
            if node is not None:
                r.error(
                    node,
                    path,
                    "folders only for a whole mailbox (users/{user}/messages)",
                    "a resource naming its folder",
                )
            return (params["folder"],)
        if node is None or (isinstance(node, yaml.ScalarNode) and r.raw(node) == "all"):
            return None  # every folder
        names = r.list_of(
            node,
            path,
            lambda n, p: r.string(n, p, expected="a folder id or well-known name"),
            what="all, or a list of folder ids / well-known names (inbox, sentitems...)",
        )
        return tuple(names) if names else None


def _suggest(bare: str) -> str:
    """A did-you-mean for an unknown resource path: the pattern closest to it, segment counts equal."""
    segments = bare.split("/")
    best, best_ratio = "", 0.6
    for rt in resources.CATALOGUE:
        for pattern in rt.patterns:
            parts = pattern.split("/")
            if len(parts) != len(segments):
                continue
            filled = "/".join(
                seg if part.startswith("{") else part for part, seg in zip(parts, segments, strict=True)
            )
            ratio = difflib.SequenceMatcher(None, filled.lower(), bare.lower()).ratio()
            if ratio > best_ratio:
                best, best_ratio = pattern, ratio
    return f"did you mean '{best}'?" if best else ""
