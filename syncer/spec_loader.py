"""Building a :class:`~syncer.spec.Spec` from a composed subscriptions.yaml, section by section.

:mod:`syncer.spec` holds the dataclasses and :func:`~syncer.spec.load_spec`; this module holds the
rules: which keys each section takes, their defaults, and every check that refuses a spec before
Graph would (via :mod:`syncer.resources`). Each check records a problem on the
:class:`~syncer.spec_yaml.Reader` and carries on, so one run reports everything that is wrong.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml

from syncer import resources
from syncer.resources import MIN_LIFETIME, ResourceType
from syncer.schema import normalize_url
from syncer.spec import (
    CLOUD_NAMES,
    CLOUDS,
    COLUMN_TYPES,
    DEFAULT_DATABASE_URL,
    DEFAULT_EMULATOR_INFO,
    DEFAULT_NOTIFICATION_URL,
    DEFAULT_SYNC_INTERVAL,
    MAX_RENEW_BEFORE,
    RESERVED_COLUMNS,
    SPEC_VERSION,
    CertificateCredential,
    Column,
    EncryptionCert,
    FanOut,
    GraphConnection,
    Mirror,
    Receiver,
    SecretRef,
    Spec,
    Subscription,
    Tenant,
    graph_root,
)
from syncer.spec_yaml import Map, Reader, describe, format_duration

SUBSCRIPTION_KEYS = (
    "name", "tenant", "resource", "change_types", "include_resource_data", "encryption", "lifetime",
    "renew_before", "sync_interval", "mirror", "for_each", "window", "folders",
)
DEFAULT_WINDOW_PAST = timedelta(days=30)
DEFAULT_WINDOW_FUTURE = timedelta(days=180)
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


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SQL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SpecLoader:
    """Walks the composed document section by section; every problem goes to the reader."""

    def __init__(self, path: Path, *, environ: Mapping[str, str], check_secrets: bool) -> None:
        self.path = path
        self.base_dir = path.resolve().parent
        self.environ = environ
        self.check_secrets = check_secrets
        self.r = Reader(str(path), environ=environ)

    def build(self, root: yaml.Node | None) -> Spec | None:
        r = self.r
        if root is None:
            r.error(1, "", "a mapping with version: 1 and subscriptions", "an empty file")
            return None
        top = r.mapping(
            root, "", ("version", "graph", "tenants", "receiver", "database", "defaults", "subscriptions"),
            what="a mapping with version: 1 and subscriptions",
        )
        if top is None:
            return None
        version = top.get("version")
        if version is None:
            r.error(top, "version", f"version: {SPEC_VERSION} (the spec format version)", "no version")
        elif not (isinstance(version, yaml.ScalarNode) and version.value == str(SPEC_VERSION)):
            r.error(version, "version", f"{SPEC_VERSION} (this syncer reads version {SPEC_VERSION})", describe(version))
            return None  # a future format may mean anything: do not guess at the rest
        graph, info = self.graph(top)
        tenants = self.tenants(top, emulator=graph is not None and graph.cloud == "emulator", info=info)
        receiver = self.receiver(top)
        database_url = self.database(top)
        subs = self.subscriptions(top, graph=graph, tenants=tenants, receiver=receiver)
        if graph is None or tenants is None or receiver is None or database_url is None or subs is None:
            return None
        return Spec(self.path, SPEC_VERSION, graph, tenants, receiver, database_url, subs, info)

    # --- shared readers ---------------------------------------------------------------------

    def file_path(self, node: yaml.Node | None, path: str) -> Path | None:
        text = self.r.string(node, path, expected="a file path")
        return None if text is None else (self.base_dir / os.path.expanduser(text))

    def secret(self, m: Map, key: str, *, required: bool = True) -> SecretRef | None:
        """A secret as ``{env: NAME}``, ``{file: PATH}`` or ``${NAME}``; a literal string is refused."""
        r, path, node = self.r, m.sub(key), m.get(key)
        if node is None:
            if required:
                r.error(m, path, "a secret reference {env: NAME} or {file: PATH}", "nothing")
            return None
        env_name = r.whole_env_reference(node)
        if isinstance(node, yaml.ScalarNode) and env_name is None:
            # The value never goes into the message: it may be the secret itself.
            r.error(node, path, "{env: NAME} or {file: PATH}", "a literal secret", "use {env: NAME} or {file: PATH}")
            return None
        ref: SecretRef | None
        if env_name is not None:
            ref = SecretRef(env=env_name, environ=self.environ)
        else:
            sm = r.mapping(node, path, ("env", "file"), what="{env: NAME} or {file: PATH}")
            if sm is None:
                return None
            if ("env" in sm) == ("file" in sm):
                r.error(sm, path, "exactly one of env, file", "both" if "env" in sm else "neither")
                return None
            if "env" in sm:
                name = r.string(sm.get("env"), sm.sub("env"), expected="an environment variable name")
                ref = SecretRef(env=name, environ=self.environ) if name else None
            else:
                file = self.file_path(sm.get("file"), sm.sub("file"))
                ref = SecretRef(file=file) if file else None
        if ref is not None and self.check_secrets:
            if ref.env is not None and ref.env not in self.environ:
                r.error(node, path, f"environment variable {ref.env} to be set", f"{ref.env} unset")
            elif ref.file is not None and not ref.file.is_file():
                r.error(node, path, "an existing secret file", f"no file at {ref.file}")
        return ref

    def url(self, node: yaml.Node | None, path: str, *, https_only: bool = False) -> str | None:
        """An absolute https URL (http only for loopback hosts), without credentials or fragment."""
        expected = "an https:// URL" + ("" if https_only else " (http:// only on loopback)")
        text = self.r.string(node, path, expected=expected)
        if text is None:
            return None
        try:
            parts = urlsplit(text)
            host, _port = parts.hostname, parts.port
        except ValueError:
            self.r.error(node, path, expected, f"'{text}' (not a URL)")
            return None
        loopback = host in ("localhost", "::1") or bool(host and host.startswith("127."))
        if (parts.scheme == "http" and not loopback) or parts.scheme not in ("https", "http") or (https_only and parts.scheme != "https"):
            self.r.error(node, path, expected, f"'{text}'")
        elif not host:
            self.r.error(node, path, expected, f"'{text}' (no host)")
        elif parts.username or parts.password:
            self.r.error(node, path, expected + " without credentials", "a user or password in the URL")
        elif parts.fragment:
            self.r.error(node, path, expected + " without a #fragment", f"'{text}'")
        else:
            return text
        return None

    def name(self, node: yaml.Node | None, path: str) -> str | None:
        text = self.r.string(node, path, expected="a name")
        if text is not None and not _NAME.match(text):
            self.r.error(node, path, "a name of letters, digits, _ . - (at most 100)", f"'{text}'")
            return None
        return text

    def sql_name(self, node: yaml.Node | None, path: str, text: str, *, column: bool) -> str | None:
        """*text* if it is a safe SQL identifier not reserved by syncer."""
        if column and (text in RESERVED_COLUMNS or text.startswith("_")):
            self.r.error(node, path, "a column name syncer does not reserve (tenant_id, id, _*)", f"'{text}'")
        elif not column and text.startswith("syncer_"):
            self.r.error(node, path, "a table name not starting with syncer_ (syncer's own tables)", f"'{text}'")
        elif not _SQL_NAME.match(text):
            self.r.error(node, path, "a SQL name: lower-case letters, digits and _, starting with a letter, at most 63", f"'{text}'")
        else:
            return text
        return None

    # --- sections ---------------------------------------------------------------------------

    def graph(self, top: Map) -> tuple[GraphConnection | None, Path | None]:
        r = self.r
        node = top.get("graph")
        if node is None:
            r.error(top, "graph", "a graph section with cloud: " + " | ".join(CLOUD_NAMES), "nothing")
            return None, None
        g = r.mapping(node, "graph", ("cloud", "graph_url", "authority_host", "ca_bundle", "emulator_info"))
        if g is None:
            return None, None
        cloud = r.choice(g.get("cloud"), "graph.cloud", CLOUD_NAMES)
        if "cloud" not in g:
            r.error(g, "graph.cloud", "one of " + ", ".join(CLOUD_NAMES), "nothing")
        ca = self.file_path(g.get("ca_bundle"), "graph.ca_bundle")
        only = {"graph_url": "custom", "authority_host": "custom", "emulator_info": "emulator"}
        for key, owner in only.items():
            if key in g and cloud is not None and cloud != owner:
                r.error(g.values[key], g.sub(key), f"{key} only with cloud: {owner}", f"cloud: {cloud}")
        if cloud is None:
            return None, None
        if cloud == "emulator":
            info = self.file_path(g.get("emulator_info"), "graph.emulator_info") or self.base_dir / DEFAULT_EMULATOR_INFO
            return GraphConnection("emulator", "", "", ca), info
        if cloud == "custom":
            graph_url = self.url(g.get("graph_url"), "graph.graph_url")
            authority = self.url(g.get("authority_host"), "graph.authority_host")
            for key in ("graph_url", "authority_host"):
                if key not in g:
                    r.error(g, g.sub(key), f"{key} (cloud: custom)", "nothing")
            if graph_url is None or authority is None:
                return None, None
            return GraphConnection("custom", graph_root(graph_url), authority.rstrip("/"), ca), None
        root, authority_host = CLOUDS[cloud]
        return GraphConnection(cloud, root, authority_host, ca), None

    def tenants(self, top: Map, *, emulator: bool, info: Path | None) -> tuple[Tenant, ...] | None:
        r = self.r
        node = top.get("tenants")
        if node is None:
            if emulator and info is not None:
                # The emulator registers one app: everything about it comes from the info file.
                return (Tenant("emulator", "", "", SecretRef(file=info, key="client_secret")),)
            r.error(top, "tenants", "a list of tenants (name, tenant_id, client_id, credentials)", "nothing")
            return None
        tenants: list[Tenant] = []
        seen: set[str] = set()
        for path, item in r.sequence(node, "tenants", what="a list of tenants"):
            t = r.mapping(item, path, ("name", "tenant_id", "client_id", "client_secret", "certificate"))
            if t is None:
                continue
            name = self.name(t.get("name"), t.sub("name"))
            if "name" not in t:
                r.error(t, t.sub("name"), "a tenant name", "nothing")
            if name in seen:
                r.error(t.get("name"), t.sub("name"), "a tenant name used once", f"a second '{name}'")
            seen.add(name or "")
            ids = {}
            for key in ("tenant_id", "client_id"):
                ids[key] = r.string(t.get(key), t.sub(key), expected=f"a {key}") or ""
                if key not in t and not emulator:
                    r.error(t, t.sub(key), f"a {key}", "nothing")
            secret, cert = None, None
            if "client_secret" in t and "certificate" in t:
                r.error(t, path, "one of client_secret, certificate", "both")
            elif "certificate" in t:
                cert = self.certificate(t)
            elif "client_secret" in t:
                secret = self.secret(t, "client_secret")
            elif emulator and info is not None:
                secret = SecretRef(file=info, key="client_secret")
            else:
                r.error(t, path + ".client_secret", "client_secret or certificate", "neither")
            if name:
                tenants.append(Tenant(name, ids["tenant_id"], ids["client_id"], secret, cert))
        if not tenants and isinstance(node, yaml.SequenceNode) and not node.value:
            r.error(node, "tenants", "at least one tenant", "an empty list")
        return tuple(tenants)

    def certificate(self, t: Map) -> CertificateCredential | None:
        r, path = self.r, t.sub("certificate")
        c = r.mapping(t.get("certificate"), path, ("private_key", "certificate", "thumbprint"))
        if c is None:
            return None
        key = self.secret(c, "private_key")
        cert_path = self.file_path(c.get("certificate"), c.sub("certificate"))
        thumb = r.string(c.get("thumbprint"), c.sub("thumbprint"), expected="a SHA-1 thumbprint (40 hex digits)")
        if thumb is not None and not re.fullmatch(r"[0-9A-Fa-f]{40}", thumb.replace(":", "")):
            r.error(c.get("thumbprint"), c.sub("thumbprint"), "a SHA-1 thumbprint (40 hex digits)", f"'{thumb}'")
            thumb = None
        if ("certificate" in c) == ("thumbprint" in c):
            r.error(c, path, "exactly one of certificate (a PEM path), thumbprint", "both" if "thumbprint" in c else "neither")
            return None
        if key is None or (cert_path is None and thumb is None):
            return None
        return CertificateCredential(key, cert_path, thumb.replace(":", "").upper() if thumb else None)

    def receiver(self, top: Map) -> Receiver | None:
        r, before = self.r, len(self.r.errors)
        node = top.get("receiver")
        rm = r.mapping(node, "receiver", ("notification_url", "lifecycle_url", "host", "port"))
        if node is not None and rm is None:
            return None
        rm = rm or Map(yaml.MappingNode("tag:yaml.org,2002:map", []), "receiver", {})
        notification = self.url(rm.get("notification_url"), "receiver.notification_url") if "notification_url" in rm else None
        parts = urlsplit(notification or DEFAULT_NOTIFICATION_URL)
        lifecycle: str | None
        if "lifecycle_url" not in rm:  # next to the notification URL: .../notifications -> .../lifecycle
            lifecycle = f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/lifecycle"
        elif rm.get("lifecycle_url") is None:
            lifecycle = None  # written as null: no lifecycle notifications
        else:
            lifecycle = self.url(rm.get("lifecycle_url"), "receiver.lifecycle_url")
        # A loopback URL with a port says where the receiver listens; otherwise a reverse proxy is in front.
        loopback_port = parts.port if parts.hostname in ("127.0.0.1", "localhost", "::1") else None
        host = r.string(rm.get("host"), "receiver.host", expected="a host name or address") or "127.0.0.1"
        port = r.integer(rm.get("port"), "receiver.port", low=1, high=65535)
        if len(r.errors) > before:
            return None
        return Receiver(notification or DEFAULT_NOTIFICATION_URL, lifecycle, host, port or loopback_port or 8080)

    def database(self, top: Map) -> str | None:
        r = self.r
        node = top.get("database")
        dm = r.mapping(node, "database", ("url",)) if node else None
        url_node = dm.get("url") if dm else None
        if url_node is None:
            return normalize_url(DEFAULT_DATABASE_URL, base_dir=self.base_dir)
        expected = "a database URL: sqlite:///PATH or postgresql://USER@HOST/DB"
        raw = r.raw(url_node)
        if isinstance(raw, str):
            # A password typed into the file (not coming from ${VAR}) is a literal secret.
            masked = re.sub(r"\$\{[^}]*\}", "VAR", raw)
            try:
                if sa.make_url(masked).password not in (None, "VAR"):
                    r.error(url_node, "database.url", expected + " without a literal password", "a literal password",
                            "write the password as ${PGPASSWORD} or use a .pgpass file")
                    return None
            except sa.exc.ArgumentError:
                pass  # reported below, after interpolation
        text = r.string(url_node, "database.url", expected=expected)
        if text is None:
            return None
        try:
            backend = sa.make_url(text).get_backend_name()
        except sa.exc.ArgumentError:
            r.error(url_node, "database.url", expected, "an unparseable URL")
            return None
        if backend not in ("sqlite", "postgresql"):
            r.error(url_node, "database.url", expected, f"a {backend} URL")
            return None
        return normalize_url(text, base_dir=self.base_dir)


    # --- subscriptions ------------------------------------------------------------------------

    def defaults(self, top: Map) -> _Defaults:
        r, d = self.r, _Defaults()
        dm = r.mapping(top.get("defaults"), "defaults", ("lifetime", "renew_before", "sync_interval", "delete"))
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

    def subscriptions(
        self, top: Map, *, graph: GraphConnection | None, tenants: tuple[Tenant, ...] | None, receiver: Receiver | None
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
            if sub.name in names:
                r.error(nodes.get("name"), f"{path}.name", "a subscription name used once", f"'{sub.name}' again (first at {names[sub.name]})")
            names.setdefault(sub.name, path)
            if sub.mirror.table in tables and not (sub.name in names and names[sub.name] != path):
                mirror_node = nodes.get("mirror")
                table_node = next((v for k, v in mirror_node.value if k.value == "table"), None) if isinstance(mirror_node, yaml.MappingNode) else None
                where = table_node or nodes.get("name") or item
                r.error(where, f"{path}.mirror.table", "a table used by one subscription", f"'{sub.mirror.table}' (also {tables[sub.mirror.table]})")
            tables.setdefault(sub.mirror.table, path)
            scope = (sub.tenant, resources.split_resource(sub.resource)[0].lower(), tuple(sorted(sub.change_types)))
            if scope in scopes:
                r.error(nodes.get("resource"), f"{path}.resource", "one subscription per resource and change types",
                        f"the same as {scopes[scope]}", "Graph answers 409 Conflict to a duplicate")
            scopes.setdefault(scope, path)
            subs.append(sub)
        return tuple(subs)

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
        name = self.name(s.get("name"), s.sub("name"))
        if "name" not in s:
            r.error(s, s.sub("name"), "a subscription name", "nothing")
        tenant = self.sub_tenant(s, tenants)
        matched = self.resource(s, graph)
        if matched is None:
            return None
        resource, rt, params = matched
        change_types = self.change_types(s, rt)
        rich = r.boolean(s.get("include_resource_data"), s.sub("include_resource_data")) or False
        encryption = self.rich(s, rt, rich)
        lifetime, renew_before = self.lifetimes(s, rt, rich, defaults, receiver)
        interval_node = s.get("sync_interval")
        interval = r.duration(interval_node, s.sub("sync_interval"), low=timedelta(minutes=1)) if interval_node else defaults.sync_interval[0]
        mirror = self.mirror(s, rt, name, defaults)
        fan_out = self.fan_out(s, rt, params)
        window = self.window(s, rt)
        folders = self.folders(s, rt, params)
        if len(r.errors) > before or not (name and tenant and mirror and isinstance(interval, timedelta) and renew_before):
            return None
        return Subscription(
            name=name, tenant=tenant, resource=resource, resource_type=rt, change_types=change_types,
            include_resource_data=rich, encryption=encryption, lifetime=lifetime, renew_before=renew_before,
            mirror=mirror, fan_out=fan_out, sync_interval=interval, line=s.line,
            window_past=window[0] if window else None, window_future=window[1] if window else None, folders=folders,
        ), s.values

    def sub_tenant(self, s: Map, tenants: tuple[Tenant, ...] | None) -> str | None:
        r, path, node = self.r, s.sub("tenant"), s.get("tenant")
        names = [t.name for t in tenants or ()]
        if node is None:
            if len(names) > 1:
                r.error(s, path, "tenant: one of " + ", ".join(names), f"nothing (there are {len(names)} tenants)")
                return None
            return names[0] if names else None
        text = r.string(node, path, expected="a tenant name")
        if text is not None and tenants is not None and text not in names:
            close = difflib.get_close_matches(text, names, n=1)
            r.error(node, path, "one of the tenants: " + ", ".join(names), f"'{text}'", f"did you mean '{close[0]}'?" if close else "")
            return None
        return text

    def resource(self, s: Map, graph: GraphConnection | None) -> tuple[str, ResourceType, dict[str, str]] | None:
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
            r.error(node, path, "a path relative to the Graph root, not a URL", f"'{text}'", f"write '{relative}'")
            return None
        bare, _query = resources.split_resource(text)
        others = [b for b in re.findall(r"\{[^}]*\}", bare) if b != "{user}"]
        if others:
            r.error(node, path, "no placeholder but {user} (expanded by for_each)", f"{others[0]} in '{text}'")
            return None
        matched = resources.match_resource(text)
        if matched is None:
            r.error(node, path, "a resource Graph sends change notifications for (see docs/spec.md)", f"'{text}'", _suggest(bare))
            return None
        rt, params = matched
        if params.get("user", "").lower() == "me":
            r.error(node, path, "users/{id} or users/{user}: app-only auth has no signed-in user", f"'{text}'")
        elif rt.delegated_only:
            r.error(node, path, "a resource Graph lets an app subscribe to with application permissions",
                    f"'{text}' ({rt.name}: delegated permissions only, not supported by spec version {SPEC_VERSION})")
        elif rt.global_only and graph is not None and graph.cloud in CLOUDS and graph.cloud != "global":
            r.error(node, path, f"a resource available in the {graph.cloud} cloud", f"'{text}' ({rt.name}: global cloud only)")
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
            items = [(part.strip(), node, path) for part in joined.split(",") if part.strip()]  # Graph's "created,updated"
        else:
            for item_path, child in r.sequence(node, path, what="a list of change types"):
                text = r.string(child, item_path, expected="created, updated or deleted")
                if text is not None:
                    items.append((text.strip(), child, item_path))
        found: list[str] = []
        for value, where, item_path in items:
            if value not in resources.CHANGE_TYPES:
                close = difflib.get_close_matches(value, resources.CHANGE_TYPES, n=1)
                r.error(where, item_path, "created, updated or deleted", f"'{value}'", f"did you mean '{close[0]}'?" if close else "")
            elif value not in rt.change_types:
                hint = "Graph sends creation and soft deletion as updated" if rt.name in ("user", "group") else ""
                r.error(where, item_path, f"a change type Graph accepts for {rt.name}: {', '.join(allowed)}", f"'{value}'", hint)
            elif value not in found:
                found.append(value)
        if isinstance(node, yaml.SequenceNode) and not node.value:
            r.error(node, path, "at least one change type", "an empty list")
        return tuple(ct for ct in resources.CHANGE_TYPES if ct in found)

    def rich(self, s: Map, rt: ResourceType, rich: bool) -> EncryptionCert | None:
        r, path = self.r, s.sub("include_resource_data")
        if rich and rt.max_lifetime_rich is None:
            r.error(s.get("include_resource_data"), path, f"false: Graph has no rich notifications for {rt.name}", "true")
            return None
        if rt.rich_required and not rich:
            r.error(s.get("include_resource_data") or s, path, f"true: Graph only sends {rt.name} notifications with resource data", str(rich).lower())
        node = s.get("encryption")
        if rich and node is None:
            r.error(s, s.sub("encryption"), "encryption (certificate, private_key, id) with include_resource_data: true", "nothing")
        elif node is not None and not rich:
            r.error(node, s.sub("encryption"), "encryption only with include_resource_data: true", "include_resource_data: false")
        elif node is not None:
            return self.encryption(node, s.sub("encryption"), rotation=True)
        return None

    def encryption(self, node: yaml.Node, path: str, *, rotation: bool) -> EncryptionCert | None:
        r = self.r
        keys = ("certificate", "private_key", "id", "previous") if rotation else ("certificate", "private_key", "id")
        e = r.mapping(node, path, keys)
        if e is None:
            return None
        cert = self.file_path(e.get("certificate"), e.sub("certificate"))
        if "certificate" not in e:
            r.error(e, e.sub("certificate"), "the certificate (a PEM path) Graph encrypts with", "nothing")
        elif cert is not None and self.check_secrets and not cert.is_file():
            r.error(e.get("certificate"), e.sub("certificate"), "an existing certificate file", f"no file at {cert}")
        key = self.secret(e, "private_key")
        cert_id = r.string(e.get("id"), e.sub("id"), expected="a certificate id (at most 128 characters)")
        if "id" not in e:
            r.error(e, e.sub("id"), "a certificate id (at most 128 characters)", "nothing")
        elif cert_id is not None and len(cert_id) > 128:
            r.error(e.get("id"), e.sub("id"), "a certificate id of at most 128 characters", f"{len(cert_id)} characters")
            cert_id = None
        previous_node = e.get("previous")
        previous = self.encryption(previous_node, e.sub("previous"), rotation=False) if previous_node else None
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
        hint = f"from defaults.lifetime, line {from_defaults.start_mark.line + 1}" if not node and from_defaults else ""
        limit = rt.max_lifetime_for(rich=rich) or rt.max_lifetime
        lifetime = value if isinstance(value, timedelta) else None
        if lifetime is not None and lifetime > limit:
            minutes = int(limit.total_seconds() // 60)
            r.error(where, path, f"at most {format_duration(limit)} ({minutes} minutes), Graph's maximum for {rt.name}"
                    + (" with include_resource_data" if rich else ""), format_duration(lifetime), hint)
        effective = lifetime or limit
        over = rt.lifecycle_url_over
        if over is not None and receiver is not None and receiver.lifecycle_url is None and effective > over:
            r.error(where, path, f"at most {format_duration(over)} when receiver.lifecycle_url is null",
                    format_duration(effective), f"Graph needs a lifecycle URL for {rt.name} past {format_duration(over)}")
        renew_node = s.get("renew_before")
        if renew_node is not None:
            renew = r.duration(renew_node, s.sub("renew_before"), low=timedelta(minutes=1))
        else:
            renew_node = defaults.renew_before[1]
            renew = defaults.renew_before[0] or min(MAX_RENEW_BEFORE, effective / 4)
        if isinstance(renew, timedelta) and renew >= effective:
            r.error(renew_node or s, s.sub("renew_before"), f"less than the lifetime ({format_duration(effective)})",
                    format_duration(renew))
            return lifetime, None
        return lifetime, renew if isinstance(renew, timedelta) else None

    def mirror(self, s: Map, rt: ResourceType, name: str | None, defaults: _Defaults) -> Mirror | None:
        r, path = self.r, s.sub("mirror")
        mm = r.mapping(s.get("mirror"), path, ("table", "columns", "delete"))
        if s.get("mirror") is not None and mm is None:
            return None
        table_node = mm.get("table") if mm else None
        table_text = r.string(table_node, f"{path}.table", expected="a table name") if table_node else (default_table(name) if name else None)
        table = self.sql_name(table_node or s.get("name"), f"{path}.table", table_text, column=False) if table_text else None
        columns = (r.list_of(mm.get("columns"), f"{path}.columns", lambda n, p: self.column(n, p, rt)) if mm else None) or []
        seen: dict[str, str] = {}
        for index, column in enumerate(columns):
            if column.name in seen:
                r.error(mm.get("columns") if mm else s, f"{path}.columns[{index}]", "each column name once",
                        f"'{column.name}' again (also {seen[column.name]})")
            seen.setdefault(column.name, column.field)
        delete = r.choice(mm.get("delete"), f"{path}.delete", ("soft", "hard")) if mm and mm.get("delete") else defaults.delete
        if table is None or delete is None:
            return None
        return Mirror(table, tuple(columns), delete)

    def column(self, node: yaml.Node, path: str, rt: ResourceType) -> Column | None:
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
            field = r.string(c.get("field"), c.sub("field"), expected="a Graph property, dotted for nested ones")
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
        if not _FIELD_SEGMENT.match(segments[0]) or not all(_FIELD_SEGMENT.match(p) or p.isdigit() for p in segments[1:]):
            r.error(field_node, path_field, "a Graph property name, dotted for nested ones (from.emailAddress.address)", f"'{field}'")
            return None
        if field == "id":
            r.error(field_node, path_field, "a property other than id", "'id'", "every mirror table has an id column already")
            return None
        if name_node is not None:
            text = r.string(name_node, f"{path}.column", expected="a column name")
            name = self.sql_name(name_node, f"{path}.column", text, column=True) if text else None
        else:
            name = self.sql_name(field_node, path_field, column_name(field), column=True)
            if name is None:
                return None
        if name is None:
            return None
        if column_type is None:
            known = rt.field_type(field) if len(segments) == 1 else None
            column_type = known or ("datetime" if segments[-1].endswith("DateTime") else "text")
        return Column(field, name, column_type)

    def fan_out(self, s: Map, rt: ResourceType, params: dict[str, str]) -> FanOut | None:
        r, path, node = self.r, s.sub("for_each"), s.get("for_each")
        placeholder = params.get("user") == "{user}"
        if node is None:
            if placeholder:
                r.error(s.get("resource"), s.sub("resource"), "a for_each saying which users {user} stands for",
                        "{user} without for_each", "add for_each: {users: [...]} | {group: ID} | {filter: ...} | {users: all}")
            return None
        if not placeholder:
            r.error(node, path, "for_each only with a {user} placeholder in resource", "a resource without {user}")
            return None
        f = r.mapping(node, path, ("users", "group", "filter"), what="{users: [...] | all}, {group: ID} or {filter: ...}")
        if f is None:
            return None
        if len(f.values) != 1:
            r.error(f, path, "exactly one of users, group, filter", ", ".join(f.values) or "none")
            return None
        if (users := f.get("users")) is not None:
            if isinstance(users, yaml.ScalarNode) and r.raw(users) == "all":
                return FanOut(all_users=True)
            ids = r.list_of(users, f.sub("users"), lambda n, p: r.string(n, p, expected="a user id or UPN"), what="a list of user ids or all")
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
        future = r.duration(w.get("future"), f"{path}.future") if w and w.get("future") else DEFAULT_WINDOW_FUTURE
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
                r.error(node, path, "folders only for a whole mailbox (users/{user}/messages)", "a resource naming its folder")
            return (params["folder"],)
        if node is None or (isinstance(node, yaml.ScalarNode) and r.raw(node) == "all"):
            return None  # every folder
        names = r.list_of(node, path, lambda n, p: r.string(n, p, expected="a folder id or well-known name"),
                          what="all, or a list of folder ids / well-known names (inbox, sentitems...)")
        return tuple(names) if names else None


def _suggest(bare: str) -> str:
    """A did-you-mean for an unknown resource path: the pattern closest to it, segment counts equal."""
    segments = bare.split("/")
    best, best_ratio = "", 0.8
    for rt in resources.CATALOGUE:
        for pattern in rt.patterns:
            parts = pattern.split("/")
            if len(parts) != len(segments):
                continue
            filled = "/".join(seg if part.startswith("{") else part for part, seg in zip(parts, segments, strict=True))
            ratio = difflib.SequenceMatcher(None, filled.lower(), bare.lower()).ratio()
            if ratio > best_ratio:
                best, best_ratio = pattern, ratio
    return f"did you mean '{best}'?" if best else ""
