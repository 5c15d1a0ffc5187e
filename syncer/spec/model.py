"""What subscriptions.yaml declares, as frozen dataclasses: the value every other module works on.

:func:`syncer.spec.load_spec` builds a :class:`Spec` (through :mod:`syncer.spec.loader`); nothing
here reads YAML. The constants are the spec's vocabulary (clouds, column types, defaults) that the
loader checks against and the rest of syncer falls back on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from syncer.errors import ConfigError
from syncer.resources import ResourceType

SPEC_VERSION = 1
_ME = re.compile(r"^/?me(?=/|\?|$)", re.IGNORECASE)
CLOUDS: dict[str, tuple[str, str]] = {
    # cloud: (Graph root, token authority host), https://learn.microsoft.com/en-us/graph/deployments
    "global": ("https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "usgov": ("https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "usgov-dod": ("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": ("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}
CLOUD_NAMES = (*CLOUDS, "emulator", "custom")
COLUMN_TYPES = ("text", "integer", "float", "boolean", "datetime", "json")
# The primary key of every mirror table. A declared column may take neither name, nor any name
# starting with "_" (syncer's bookkeeping columns, syncer.mirror.BOOKKEEPING_COLUMNS).
KEY_COLUMNS = ("tenant_id", "id")
DEFAULT_EMULATOR_INFO = ".syncer/emulator.json"
DEFAULT_NOTIFICATION_URL = "http://127.0.0.1:8080/notifications"
DEFAULT_DATABASE_URL = "sqlite:///syncer.db"
DEFAULT_SYNC_INTERVAL = timedelta(hours=1)
MAX_RENEW_BEFORE = timedelta(hours=1)
# Delegated access (docs/spec.md "Delegated accounts").
AUTH_MODES = ("app", "delegated")
AUTHORITIES = ("organizations", "consumers", "common")  # or a tenant id / domain
# The tenant of personal Microsoft accounts: https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference
PERSONAL_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
# What Graph lets a personal Microsoft account subscribe to: the types whose permission reference lists
# "Delegated (personal Microsoft account)" (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions).
PERSONAL_ACCOUNT_TYPES = frozenset({"contact", "driveItem", "event", "message", "todoTask"})


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is (an environment variable, a file, or a key of a JSON file); never the value."""

    env: str | None = None
    file: Path | None = None
    key: str | None = None  # with ``file``: read this key of a JSON file (the emulator's info file)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False, hash=False)

    def resolve(self) -> str:
        """The secret's value; :class:`ConfigError` (naming the reference, not the value) if missing."""
        if self.env is not None:
            value = (self.environ if self.environ is not None else os.environ).get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set (it holds a secret)")
            return value
        if self.file is None:
            raise ConfigError("empty secret reference")
        try:
            text = self.file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        if self.key is None:
            return text.rstrip("\r\n")
        try:
            value = json.loads(text)[self.key]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.file} has no string key {self.key!r}") from exc
        if not isinstance(value, str):
            raise ConfigError(f"{self.file} has no string key {self.key!r}")
        return value


@dataclass(frozen=True)
class CertificateCredential:
    """A client certificate: the private key (a secret) and the certificate or its SHA-1 thumbprint."""

    private_key: SecretRef
    certificate: Path | None = None
    thumbprint: str | None = None


DEFAULT_CONCURRENCY = 16
"""Graph requests in flight per tenant when the spec says nothing: what sets the time of a mirror when Graph
answers in 100 ms or more, while staying far from the per-app limits (4 per mailbox at most whatever it is)."""

MAX_CONCURRENCY = 1000
"""The largest ``concurrency`` accepted: beyond it a single process only queues on its own threads."""


@dataclass(frozen=True)
class Tenant:
    """One Entra tenant and the app registration syncer uses in it.

    ``auth: app`` (the default): app-only, with a client secret or certificate. ``auth: delegated``: one
    signed-in user (``account``) through a public client; ``syncer login NAME`` fills ``token_cache``
    and nothing secret is in the spec.
    """

    name: str
    tenant_id: str
    client_id: str
    client_secret: SecretRef | None = None
    certificate: CertificateCredential | None = None
    auth: str = "app"
    authority: str | None = None  # delegated: organizations | consumers | common | a tenant id or domain
    account: str | None = None  # delegated: the UPN expected to sign in
    token_cache: Path | None = None  # delegated: MSAL's serialized cache (owner-only file)
    concurrency: int = DEFAULT_CONCURRENCY
    """Graph requests in flight for this tenant, every part of a process together (``defaults.concurrency``,
    ``tenants[].concurrency``; ``syncer worker --concurrency`` overrides it): one budget shared by sync passes
    and reconcile (:mod:`syncer.graph.budget`)."""

    @property
    def delegated(self) -> bool:
        """Whether this entry is a signed-in user rather than the app itself."""
        return self.auth == "delegated"

    @property
    def personal(self) -> bool:
        """A personal Microsoft account (outlook.com, hotmail.com...): Graph allows it fewer types."""
        return self.delegated and (self.authority == "consumers" or self.tenant_id == PERSONAL_TENANT_ID)


@dataclass(frozen=True)
class GraphConnection:
    """Which Graph: its root URL (no ``/v1.0``), the token authority host, and a CA bundle to trust."""

    cloud: str
    graph_url: str
    authority_host: str
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class Receiver:
    """Where Graph posts notifications (public URLs) and where the receiver listens."""

    notification_url: str
    lifecycle_url: str | None
    host: str
    port: int


@dataclass(frozen=True)
class Column:
    """A typed mirror column filled from a Graph property (dotted for nested properties)."""

    field: str
    name: str
    type: str


@dataclass(frozen=True)
class History:
    """``history:`` of a declaration: every version of each row kept in ``<table>_history`` (:mod:`syncer.history`)."""

    keep: timedelta | None = None
    """Versions that ended longer ago than this are deleted by the worker's housekeeping; None keeps them all."""
    time_field: str | None = None
    """The property carrying Graph's own time of an item's last change (requested with ``$select``), if its type has one."""


@dataclass(frozen=True)
class Mirror:
    """The table a subscription's items are mirrored to."""

    table: str
    columns: tuple[Column, ...] = ()
    delete: str = "soft"
    indexed: tuple[str, ...] = ()
    """Columns indexed with ``tenant_id``: the owning ids of the resource type (a message's channel, sender...)."""
    owners: tuple[str, ...] = ()
    """Owner columns whose value comes from the row's scope, not the item (a mailbox's ``user_id``; text,
    indexed, after the declared columns): :mod:`syncer.owners`."""
    history: History | None = None
    """Keep every version of each row (``history:`` of the declaration); None: the mirror only."""

    @property
    def select(self) -> tuple[str, ...]:
        """The ``$select`` list: top-level properties of the columns, ``id`` first."""
        names = ["id"]
        for column in self.columns:
            top = column.field.split(".", 1)[0]
            if top not in names:
                names.append(top)
        if self.history is not None and self.history.time_field and self.history.time_field not in names:
            names.append(self.history.time_field)
        return tuple(names)


@dataclass(frozen=True)
class EncryptionCert:
    """The certificate Graph encrypts rich notifications with, and the key to decrypt them."""

    certificate: Path
    private_key: SecretRef
    id: str
    previous: EncryptionCert | None = None  # the key being rotated out: still decrypts old notifications


@dataclass(frozen=True)
class FanOut:
    """What a resource's placeholders are expanded over.

    ``{user}``: a list of users, a group's members, a filter, or all users. ``{team}``: a list of teams
    or all teams; a ``{channel}`` beside it stands for every channel of each team.
    """

    users: tuple[str, ...] = ()
    group: str | None = None
    filter: str | None = None
    all_users: bool = False
    teams: tuple[str, ...] = ()
    all_teams: bool = False
    channels: bool = False  # {channel}: every channel of each team

    @property
    def over_teams(self) -> bool:
        return bool(self.teams) or self.all_teams


@dataclass(frozen=True)
class Subscription:
    """One declared subscription (expanded into one Graph subscription per user when fanned out)."""

    name: str
    tenant: str
    resource: str
    resource_type: ResourceType
    change_types: tuple[str, ...]
    include_resource_data: bool
    encryption: EncryptionCert | None
    lifetime: timedelta | None  # None = the resource's maximum
    renew_before: timedelta
    mirror: Mirror
    fan_out: FanOut | None
    sync_interval: timedelta
    line: int
    window_past: timedelta | None = None  # events: the calendarView window around now
    window_future: timedelta | None = None
    folders: tuple[str, ...] | None = None  # messages/contacts of a whole mailbox: None = every folder
    model: str | None = None  # Teams' payment model (A or B), sent as ?model= in the resource

    @property
    def max_lifetime(self) -> timedelta:
        """The longest lifetime Graph grants this subscription."""
        limit = self.resource_type.max_lifetime_for(rich=self.include_resource_data)
        return limit or self.resource_type.max_lifetime

    @property
    def effective_lifetime(self) -> timedelta:
        """The lifetime to ask for: the declared one, or the maximum."""
        return self.lifetime or self.max_lifetime

    @property
    def graph_resource(self) -> str:
        """The ``resource`` sent to Graph: Outlook rich subscriptions need ``$select`` (taken from the mirror)."""
        if (
            self.include_resource_data
            and self.resource_type.rich_needs_select
            and "$select=" not in self.resource
        ):
            separator = "&" if "?" in self.resource else "?"
            return f"{self.resource}{separator}$select={','.join(self.mirror.select)}"
        if self.model is not None and "model=" not in self.resource:
            separator = "&" if "?" in self.resource else "?"
            return f"{self.resource}{separator}model={self.model}"
        return self.resource


@dataclass(frozen=True)
class Spec:
    """A validated subscriptions.yaml."""

    path: Path
    version: int
    graph: GraphConnection
    tenants: tuple[Tenant, ...]
    receiver: Receiver
    database_url: str
    subscriptions: tuple[Subscription, ...]
    emulator_info: Path | None = None  # cloud: emulator: the info file resolve_emulator() reads
    fingerprint: str = ""  # of its declarations (syncer.spec.fingerprint); "" for a spec built in code

    def subscription(self, name: str) -> Subscription:
        """The subscription declared as *name*."""
        for sub in self.subscriptions:
            if sub.name == name:
                return sub
        known = ", ".join(s.name for s in self.subscriptions) or "none"
        raise ConfigError(f"no subscription named {name!r} in {self.path} (declared: {known})")

    def tenant(self, name: str) -> Tenant:
        """The tenant declared as *name*."""
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        known = ", ".join(t.name for t in self.tenants) or "none"
        raise ConfigError(f"no tenant named {name!r} in {self.path} (declared: {known})")

    def with_concurrency(self, concurrency: int | None) -> Spec:
        """This spec with every tenant's ``concurrency`` set to *concurrency* (a command-line override), or as is."""
        if concurrency is None:
            return self
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, found {concurrency}")
        return replace(self, tenants=tuple(replace(t, concurrency=concurrency) for t in self.tenants))

    def with_signed_in_users(self, user_ids: Mapping[str, str]) -> Spec:
        """This spec with each delegated tenant's ``me/...`` resources written ``users/{id}/...``.

        *user_ids* maps a tenant entry's name to its signed-in user's Graph id (``GET /me``). The worker
        keys scopes by the user's id, as Graph names items in notifications (``Users/{id}/Messages/{id}``),
        while the spec (and reconcile) keep the declared ``me/...``.
        """
        subs = tuple(
            replace(sub, resource=_ME.sub(f"users/{user_ids[sub.tenant]}", sub.resource, count=1))
            if sub.tenant in user_ids
            else sub
            for sub in self.subscriptions
        )
        return replace(self, subscriptions=subs)

    @property
    def needs_emulator_info(self) -> bool:
        """Whether :meth:`resolve_emulator` still has values to fill in."""
        return self.graph.cloud == "emulator" and not self.graph.graph_url

    def resolve_emulator(self) -> Spec:
        """For ``cloud: emulator``, this spec with URLs, tenant, client id and CA from the info file.

        Done lazily (not by :func:`load_spec`) because the file is written when the emulator
        starts, which may be after the spec was validated. A no-op for every other cloud.
        """
        if not self.needs_emulator_info or self.emulator_info is None:
            return self
        try:
            info = json.loads(self.emulator_info.read_text(encoding="utf-8"))
            graph_url, authority = info["graph_url"], info["authority"]
            tenant_id, client_id, ca_cert = info["tenant_id"], info["client_id"], info.get("ca_cert")
        except OSError as exc:
            raise ConfigError(
                f"emulator info file {self.emulator_info} cannot be read ({exc.strerror}): start the emulator "
                f"with `syncer emulator --info-file {self.emulator_info}` (or run `syncer demo`)"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"emulator info file {self.emulator_info} lacks a key: {exc}") from exc
        origin = urlsplit(authority)
        graph = GraphConnection(
            cloud="emulator",
            graph_url=graph_root(graph_url),
            authority_host=f"{origin.scheme}://{origin.netloc}",
            ca_bundle=Path(ca_cert) if ca_cert else self.graph.ca_bundle,
        )
        tenants = tuple(
            replace(t, tenant_id=t.tenant_id or tenant_id, client_id=t.client_id or client_id)
            for t in self.tenants
        )
        shared = shared_tenant_id(tenants)
        if shared:
            raise ConfigError(f"{self.path}: {shared}")
        return replace(self, graph=graph, tenants=tenants)


def shared_tenant_id(tenants: tuple[Tenant, ...]) -> str | None:
    """Why a delegated entry may not share its tenant id with another entry, or None when none does.

    Clients, scopes and mirror rows are keyed by tenant id: two entries with one id would use one
    client (one credential) for both. One delegated account per tenant, apart from app-only entries.
    """
    seen: dict[str, Tenant] = {}
    for t in tenants:
        other = seen.setdefault(t.tenant_id, t) if t.tenant_id else t
        if other is not t and (t.delegated or other.delegated):
            return (
                f"tenants {other.name!r} and {t.name!r} share tenant id {t.tenant_id}: a delegated account "
                "needs a tenant of its own in this version (clients and mirror rows are keyed by tenant id)"
            )
    return None


def graph_root(url: str) -> str:
    """*url* without a trailing ``/v1.0`` or ``/beta``: GraphConnection keeps the root."""
    url = url.rstrip("/")
    for suffix in ("/v1.0", "/beta"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url

