"""The subscriptions section of subscriptions.yaml: each declared subscription, checked against Graph's rules.

Apart from :mod:`syncer.spec.loader` (which reads the connection sections and owns the shared readers
for names, URLs and secrets) because this is where most of the rules live: resource paths and
change types from :mod:`syncer.resources`, lifetimes, and the cross-subscription checks (names,
tables, Graph's 409 duplicates). Three parts of a subscription have modules of their own: its mirror
(:mod:`syncer.spec.mirror`), its rich notifications (:mod:`syncer.spec.rich`) and what its sync
passes cover: users, calendar window, mail folders (:mod:`syncer.spec.scopes`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import yaml

from syncer import resources
from syncer.resolve import RESOLVED_PATTERNS
from syncer.resources import MIN_LIFETIME, ResourceType
from syncer.spec.mirror import MirrorLoader
from syncer.spec.model import (
    CLOUDS,
    DEFAULT_SYNC_INTERVAL,
    MAX_RENEW_BEFORE,
    PERSONAL_ACCOUNT_TYPES,
    GraphConnection,
    Receiver,
    Subscription,
    Tenant,
)
from syncer.spec.reader import Map, format_duration
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
        matched = self.resource(s, graph, account)
        if matched is None:
            self.mirrors.mirror(s, None, name, default_delete=defaults.delete)  # still report what is wrong in the mirror
            return None
        resource, rt, params = matched
        change_types = self.change_types(s, rt)
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
        model = self.model(s, rt, resource)
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

    def resource(
        self, s: Map, graph: GraphConnection | None, tenant: Tenant | None = None
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
        others = [b for b in re.findall(r"\{[^}]*\}", bare) if b not in _FAN_OUT_PLACEHOLDERS]
        if others:
            r.error(
                node,
                path,
                "no placeholder but {user}, {team}, {channel} (expanded by for_each) or {list} (a user's To Do lists)",
                f"{others[0]} in '{text}'",
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
        if "{list}" in bare and rt.key != "todoTask":
            r.error(node, path, "{list} only in users/{user}/todo/lists/{list}/tasks (each of a user's To Do lists)",
                    f"'{text}'")
            return None
        delegated = tenant is not None and tenant.delegated
        me = params.get("user", "").lower() == "me"
        if me and not delegated:
            r.error(
                node,
                path,
                "users/{id} or users/{user}: app-only auth has no signed-in user",
                f"'{text}'",
                "me/... needs a tenant with auth: delegated",
            )
        elif delegated and rt.app_only:
            r.error(node, path, "a resource a signed-in user may subscribe to", f"'{text}' ({rt.name}: application permissions only)")
        elif delegated and rt.per_mailbox and "user" in params and not me:
            # https://learn.microsoft.com/graph/permissions-overview: delegated permissions reach what the
            # signed-in user can; syncer does not mirror shared or delegated mailboxes (yet).
            r.error(
                node,
                path,
                f"me/... for {rt.name} with auth: delegated (the signed-in user's own mailbox)",
                f"'{text}'",
            )
        elif (
            tenant is not None
            and tenant.delegated
            and not tenant.personal
            and rt.delegated_paths is not None
            and resources.matching_pattern(rt, text) not in rt.delegated_paths
        ):
            # https://learn.microsoft.com/graph/teams-changenotifications-chatmessage and its siblings: per path,
            # whether a delegated permission exists; syncer's reads of the path must serve a user too.
            r.error(
                node,
                path,
                "a Teams path a signed-in user may declare: "
                + ", ".join(p for t in resources.CATALOGUE for p in t.delegated_paths or ()),
                f"'{text}' ({rt.key}: application permissions only"
                + (", its delta serves apps only)" if rt.delta_paths else ")"),
            )
        elif tenant is not None and tenant.personal and rt.name not in PERSONAL_ACCOUNT_TYPES:
            r.error(
                node,
                path,
                "a resource a personal Microsoft account may subscribe to: "
                + ", ".join(sorted(PERSONAL_ACCOUNT_TYPES)),
                f"'{text}' ({rt.name}: Graph grants no personal-account permission for it)",
            )
        elif rt.delegated_only and not delegated:
            r.error(
                node,
                path,
                "a tenant with auth: delegated (a signed-in user)",
                f"'{text}' ({rt.name}: Graph grants no application permission to subscribe to it)",
            )
        elif (problem := resources.presence_ids_problem(rt.name, text)) is not None:
            r.error(node, path, problem[0], problem[1])
        elif _query and (rt.key == "list" or resources.matching_pattern(rt, text) in RESOLVED_PATTERNS):
            # List subscriptions take no $filter (https://github.com/microsoftgraph/microsoft-graph-docs/issues/18955),
            # and a resolved path is subscribed as its canonical form: a query would be dropped unseen.
            r.error(
                node,
                path,
                f"no query string on a {rt.name} resource (Graph filters neither list nor library notifications)",
                f"'?{_query}' in '{text}'",
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

    def model(self, s: Map, rt: ResourceType, resource: str) -> str | None:
        """``model``: Teams' payment model (https://learn.microsoft.com/en-us/graph/teams-licenses), A or B.

        Also read from a ``?model=`` written in the resource itself; both must agree. Graph only takes it on
        the paths that list it, and only ``B`` on the per-user and per-app paths.
        """
        r, path, node = self.r, s.sub("model"), s.get("model")
        _bare, query = resources.split_resource(resource)
        in_query = next(
            (v for k, _, v in (part.partition("=") for part in query.split("&")) if k.strip() == "model"), None
        )
        declared = r.string(node, path, expected="A or B") if node is not None else None
        where, field_path = (node, path) if node is not None else (s.get("resource"), s.sub("resource"))
        if declared is not None and in_query is not None and declared != in_query:
            r.error(node, path, f"the model of the resource (model={in_query})", f"'{declared}'")
            return None
        value = declared if declared is not None else in_query
        if value is None:
            return None
        if not rt.models:
            r.error(
                where,
                field_path,
                f"no model for {rt.key} (Graph takes model= on getAllMessages, getAllMembers and per-user paths)",
                f"model {value}",
            )
            return None
        if value not in rt.models:
            allowed = " or ".join(sorted(rt.models))
            r.error(where, field_path, f"model {allowed} for {rt.key}", f"'{value}'")
            return None
        return value if in_query is None else None  # already in the resource as written

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


_FAN_OUT_PLACEHOLDERS = ("{user}", "{team}", "{channel}", "{list}")


def _suggest(bare: str) -> str:
    """A did-you-mean for an unknown resource path: the pattern closest to it, segment counts equal."""
    segments = bare.split("/")
    if segments[0].lower() in ("sites", "groups") and segments[-1].lower() == "drives":
        # https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions: drives/{id}/root, one per library
        return "Graph subscribes one library at a time: sites/{site}/drive/root (the default one) or drives/{id}/root"
    if len(segments) > 2 and segments[0].lower() == "sites" and segments[1].endswith(":"):
        # https://learn.microsoft.com/en-us/graph/api/site-getbypath: the path ends with ":" before what follows it
        return "a site named by path ends with ':' before the rest (sites/{hostname}:/sites/ops:/lists/Issues)"
    best, best_ratio = "", 0.6
    for rt in resources.CATALOGUE:
        for pattern in rt.patterns:
            parts = pattern.split("/")
            if len(parts) != len(segments) or not _same_roots(parts, segments):
                continue
            filled = "/".join(
                seg if part.startswith("{") else part for part, seg in zip(parts, segments, strict=True)
            )
            ratio = difflib.SequenceMatcher(None, filled.lower(), bare.lower()).ratio()
            if ratio > best_ratio:
                best, best_ratio = pattern, ratio
    return f"did you mean '{best}'?" if best else ""


def _same_roots(parts: list[str], segments: list[str]) -> bool:
    """Whether each literal segment of a pattern is the given one or a typo of it.

    Scoring the whole path alone offered 'teams/{team}/members' for 'users/{user}/memberOf': the
    placeholders filled in make unrelated paths look alike. A different collection (users, teams)
    is a different resource, not a misspelling, and gets no suggestion.
    """
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{"):
            continue
        if difflib.SequenceMatcher(None, part.lower(), seg.lower()).ratio() < 0.75:
            return False
    return True
