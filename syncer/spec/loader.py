"""Building a :class:`~syncer.spec.Spec` from a composed subscriptions.yaml, section by section.

:mod:`syncer.spec.model` holds the dataclasses and :func:`syncer.spec.load_spec` calls this; this module
holds the rules of the document and of its connection sections (graph, receiver, database) and the
readers every section shares (names, SQL identifiers, URLs, secrets); :mod:`syncer.spec.tenants` holds
the rules of the tenants and :mod:`syncer.spec.subscriptions` those of the subscriptions. Each check records a problem
on the :class:`~syncer.spec.reader.Reader` and carries on, so one run reports everything that is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml

from syncer.database import normalize_url
from syncer.spec.model import (
    CLOUD_NAMES,
    CLOUDS,
    DEFAULT_CONCURRENCY,
    DEFAULT_DATABASE_URL,
    DEFAULT_EMULATOR_INFO,
    DEFAULT_NOTIFICATION_URL,
    KEY_COLUMNS,
    MAX_CONCURRENCY,
    SPEC_VERSION,
    GraphConnection,
    Receiver,
    SecretRef,
    Spec,
    graph_root,
)
from syncer.spec.reader import Map, Reader, describe
from syncer.spec.subscriptions import SubscriptionsLoader
from syncer.spec.tenants import TenantsLoader

# Used with fullmatch: ``$`` also matches before a final newline, so ``re.match(r"^x$")`` accepts "x\n".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SQL_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


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
            root,
            "",
            ("version", "graph", "tenants", "receiver", "database", "defaults", "subscriptions"),
            what="a mapping with version: 1 and subscriptions",
        )
        if top is None:
            return None
        version = top.get("version")
        if version is None:
            r.error(top, "version", f"version: {SPEC_VERSION} (the spec format version)", "no version")
        elif not (isinstance(version, yaml.ScalarNode) and version.value == str(SPEC_VERSION)):
            r.error(
                version,
                "version",
                f"{SPEC_VERSION} (this syncer reads version {SPEC_VERSION})",
                describe(version),
            )
            return None  # a future format may mean anything: do not guess at the rest
        graph, info = self.graph(top)
        tenants = TenantsLoader(self).load(top, emulator=graph is not None and graph.cloud == "emulator", info=info,
                                           concurrency=self.default_concurrency(top))
        receiver = self.receiver(top)
        database_url = self.database(top)
        subs = SubscriptionsLoader(self).load(top, graph=graph, tenants=tenants, receiver=receiver)
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
            r.error(
                node,
                path,
                "{env: NAME} or {file: PATH}",
                "a literal secret",
                "use {env: NAME} or {file: PATH}",
            )
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
                if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    r.error(
                        sm.get("env"),
                        sm.sub("env"),
                        "an environment variable name (letters, digits, _)",
                        f"'{name}'",
                    )
                    name = None
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
        if (
            (parts.scheme == "http" and not loopback)
            or parts.scheme not in ("https", "http")
            or (https_only and parts.scheme != "https")
        ):
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
        if text is not None and not _NAME.fullmatch(text):
            self.r.error(node, path, "a name of letters, digits, _ . - (at most 100)", repr(text))
            return None
        return text

    def sql_name(self, node: yaml.Node | None, path: str, text: str, *, column: bool) -> str | None:
        """*text* if it is a safe SQL identifier not reserved by syncer."""
        if column and (text in KEY_COLUMNS or text.startswith("_")):
            self.r.error(node, path, "a column name syncer does not reserve (tenant_id, id, _*)", f"'{text}'")
        elif not column and text.startswith("syncer_"):
            self.r.error(
                node, path, "a table name not starting with syncer_ (syncer's own tables)", f"'{text}'"
            )
        elif not _SQL_NAME.fullmatch(text):
            self.r.error(
                node,
                path,
                "a SQL name: lower-case letters, digits and _, starting with a letter, at most 63",
                repr(text),
            )
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
            info = (
                self.file_path(g.get("emulator_info"), "graph.emulator_info")
                or self.base_dir / DEFAULT_EMULATOR_INFO
            )
            return GraphConnection("emulator", "", "", ca), info
        if cloud == "custom":
            graph_url = self.url(g.get("graph_url"), "graph.graph_url")
            authority = self.url(
                g.get("authority_host"), "graph.authority_host", https_only=True
            )  # MSAL demands https
            for key in ("graph_url", "authority_host"):
                if key not in g:
                    r.error(g, g.sub(key), f"{key} (cloud: custom)", "nothing")
            if graph_url is None or authority is None:
                return None, None
            return GraphConnection("custom", graph_root(graph_url), authority.rstrip("/"), ca), None
        root, authority_host = CLOUDS[cloud]
        return GraphConnection(cloud, root, authority_host, ca), None

    def default_concurrency(self, top: Map) -> int:
        """``defaults.concurrency`` (the rest of ``defaults`` is the subscriptions loader's, which also reports
        a ``defaults`` that is not a mapping)."""
        node = top.get("defaults")
        if not isinstance(node, yaml.MappingNode):
            return DEFAULT_CONCURRENCY
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "concurrency":
                read = self.r.integer(value, "defaults.concurrency", low=1, high=MAX_CONCURRENCY)
                return read if read is not None else DEFAULT_CONCURRENCY
        return DEFAULT_CONCURRENCY

    def receiver(self, top: Map) -> Receiver | None:
        r, before = self.r, len(self.r.errors)
        node = top.get("receiver")
        rm = r.mapping(node, "receiver", ("notification_url", "lifecycle_url", "host", "port"))
        if node is not None and rm is None:
            return None
        rm = rm or Map(yaml.MappingNode("tag:yaml.org,2002:map", []), "receiver", {})
        notification = (
            self.url(rm.get("notification_url"), "receiver.notification_url")
            if "notification_url" in rm
            else None
        )
        parts = urlsplit(notification or DEFAULT_NOTIFICATION_URL)
        lifecycle: str | None
        # Default: next to the notification URL (.../notifications -> .../lifecycle).
        if "lifecycle_url" not in rm.values:
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
        return Receiver(
            notification or DEFAULT_NOTIFICATION_URL, lifecycle, host, port or loopback_port or 8080
        )

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
                    r.error(
                        url_node,
                        "database.url",
                        expected + " without a literal password",
                        "a literal password",
                        "write the password as ${PGPASSWORD} or use a .pgpass file",
                    )
                    return None
            except sa.exc.ArgumentError:
                pass  # reported below, after interpolation
        text = r.string(url_node, "database.url", expected=expected)
        if text is None:
            return None
        try:
            url = normalize_url(text, base_dir=self.base_dir)  # postgres:// is postgresql:// (see there)
            backend = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError:
            r.error(url_node, "database.url", expected, "an unparseable URL")
            return None
        if backend not in ("sqlite", "postgresql"):
            r.error(url_node, "database.url", expected, f"a {backend} URL")
            return None
        return url
