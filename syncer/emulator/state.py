"""Everything one emulator instance knows, in one object the views share.

The Flask app, the admin API, the $batch dispatcher, the subscription API and the delivery dispatcher all
receive the same :class:`EmulatorState`; nothing lives in module globals, so several emulators can run in
one process (one per test).
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from syncer.emulator.clock import Clock
from syncer.emulator.config import EmulatorConfig
from syncer.emulator.families import all_delegated_scopes, all_roles
from syncer.emulator.faults import Faults
from syncer.emulator.identity import AppRegistration
from syncer.emulator.identity.accounts import CONSUMER_TENANT_ID
from syncer.emulator.identity.grants import Grants
from syncer.emulator.store import Store
from syncer.emulator.subscription_model import SubscriptionRegistry
from syncer.emulator.tls import ClientCertificate, cached_key, make_client_certificate

if TYPE_CHECKING:
    from syncer.emulator.delivery import Dispatcher


@dataclass
class RequestLogEntry:
    """One line of the admin request log."""

    seq: int
    time: str
    method: str
    path: str
    status: int
    client_request_id: str
    request_id: str
    app: str | None
    duration_ms: float
    fault: str | None = None
    batch: bool = False

    def to_json(self) -> dict[str, Any]:
        """The admin API's rendering."""
        return {
            "seq": self.seq, "time": self.time, "method": self.method, "path": self.path,
            "status": self.status, "clientRequestId": self.client_request_id, "requestId": self.request_id,
            "app": self.app, "durationMs": round(self.duration_ms, 3), "fault": self.fault, "batch": self.batch,
        }


@dataclass
class Tenant:
    """A directory: its id and verified domain (the initial `*.onmicrosoft.com` one, also the default)."""

    tenant_id: str
    domain: str
    #: The personal-Microsoft-account tenant (its users are consumer accounts with 16-hex ids).
    personal: bool = False
    display_name: str = "Contoso"
    #: Further verified domains (the first becomes the default domain; `domain` stays the initial one).
    custom_domains: list[str] = field(default_factory=list)


@dataclass
class EmulatorState:
    """Shared state of one emulator; build it with :meth:`create`."""

    config: EmulatorConfig
    clock: Clock
    rng: random.Random
    lock: threading.RLock
    store: Store
    faults: Faults
    #: RSA key that signs access tokens and the validationTokens of rich notifications; published in the JWKS under `signing_kid`.
    signing_key: rsa.RSAPrivateKey
    signing_kid: str
    tenants: dict[str, Tenant] = field(default_factory=dict)
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    #: The default app's certificate credential (private key included, so tests can use it).
    client_certificate: ClientCertificate | None = None
    request_log: deque[RequestLogEntry] = field(default_factory=deque)
    request_seq: int = 0
    #: verified access tokens -> claims (signature checks are the costliest part of a small request)
    token_cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: HMAC key of delta and skip tokens; random per instance, so an earlier run's token reads as foreign.
    delta_token_key: bytes = field(default_factory=lambda: os.urandom(32))
    #: `https://host:port` once the server listens (None for an app used only through a test client).
    base_url: str | None = None
    #: Every live subscription (served by syncer.emulator.subscriptions, read by the dispatcher).
    subscriptions: SubscriptionRegistry = field(default_factory=SubscriptionRegistry)
    #: Delegated sign-in: codes, device codes, refresh tokens, sessions, revocations.
    grants: Grants = field(default_factory=Grants)
    #: The notification dispatcher; create_app installs it (an app-less state delivers nothing).
    delivery: Dispatcher | None = None
    _shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    _reset_hooks: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def create(cls, config: EmulatorConfig | None = None) -> EmulatorState:
        """A fresh state with the default tenant and app registered."""
        config = config or EmulatorConfig()
        clock = Clock()
        rng = random.Random(config.seed)
        lock = threading.RLock()
        state = cls(
            config=config,
            clock=clock,
            rng=rng,
            lock=lock,
            store=Store(clock=clock, lock=lock, seed=config.seed),
            faults=Faults(seed=config.seed, clock=clock, config=config),
            signing_key=cached_key("signing"),
            signing_kid=f"emu-{uuid.UUID(int=random.Random(config.seed ^ 0x5EED).getrandbits(128)).hex[:16]}",
            subscriptions=SubscriptionRegistry(quotas=config.subscription_quotas),
        )
        state.on_reset(state.subscriptions.clear)
        state.request_log = deque(maxlen=config.request_log_size)
        state._register_defaults()
        return state

    def _register_defaults(self) -> None:
        config = self.config
        self.tenants[config.tenant_id] = Tenant(config.tenant_id, config.tenant_domain)
        self.store.tenant(config.tenant_id)
        if config.personal_accounts:
            self.tenants[CONSUMER_TENANT_ID] = Tenant(CONSUMER_TENANT_ID, "outlook.com", personal=True,
                                                      display_name="Microsoft Accounts")
            self.store.tenant(CONSUMER_TENANT_ID)
        self.grants.sign_in_as = config.sign_in_as
        if config.personal_accounts and config.personal_users:
            self._add_personal_users()
        self.client_certificate = make_client_certificate("default-app")
        self.apps[config.client_id] = AppRegistration(
            client_id=config.client_id,
            tenant_id=config.tenant_id,
            display_name="syncer emulator app",
            secrets={config.client_secret},
            certificates={self.client_certificate.thumbprint_sha1: self.client_certificate.cert_pem},
            # the default app holds every permission the emulator knows
            roles=set(all_roles()) | {"Subscription.Read.All"},
            sign_in_audience=config.default_app_audience,
            delegated_scopes=set(all_delegated_scopes()),
        )

    def _add_personal_users(self) -> None:
        from syncer.emulator.families import PER_USER_SEEDERS
        from syncer.emulator.families.directory.users import add_user
        from syncer.emulator.seed import seed

        for upn in self.config.personal_users:
            add_user(self, CONSUMER_TENANT_ID, upn, upn.split("@")[0].replace(".", " ").title())
        items = self.config.personal_user_items
        if items:
            # only what Graph serves to personal accounts (no Teams chats and the like)
            fields = ("messagesPerUser", "eventsPerUser", "contactsPerUser", "tasksPerUser", "driveItemsPerUser")
            seed(self, {"tenantId": CONSUMER_TENANT_ID, "contentUsers": len(self.config.personal_users),
                        **{name: items for name in fields if name in PER_USER_SEEDERS}})

    # --- hooks -------------------------------------------------------------------------------------

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Run *hook* when the server stops (the delivery dispatcher stops here)."""
        self._shutdown_hooks.append(hook)

    def on_reset(self, hook: Callable[[], object]) -> None:
        """Run *hook* when the admin API resets the emulator (clear subscriptions, queues...)."""
        self._reset_hooks.append(hook)

    def shutdown(self) -> None:
        """Run the shutdown hooks once, newest first; a failing hook does not stop the others."""
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                pass

    def reset(self) -> None:
        """Forget all data, faults and the request log; keep apps, tenants, keys and the clock."""
        with self.lock:
            self.store.clear()
            for tenant_id in self.tenants:
                self.store.tenant(tenant_id)
            self.faults.clear()
            self.request_log.clear()
        for hook in list(self._reset_hooks):
            hook()

    # --- helpers -----------------------------------------------------------------------------------

    def log_request(self, entry: RequestLogEntry) -> None:
        """Append to the bounded request log."""
        with self.lock:
            self.request_seq += 1
            entry.seq = self.request_seq
            self.request_log.append(entry)

    def tenant_by_name(self, name: str) -> Tenant | None:
        """Resolve a tenant id or verified domain (case-insensitive) as used in authority URLs."""
        lowered = name.lower()
        for tenant in self.tenants.values():
            if tenant.tenant_id.lower() == lowered or tenant.domain.lower() == lowered:
                return tenant
        return None
