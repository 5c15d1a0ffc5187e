"""A worker's delegated accounts: paused while one must sign in again, resumed by itself after ``syncer login``.

A delegated account's refresh token may be refused at any time (``invalid_grant``: a password reset,
sessions revoked by the user or an admin, consent withdrawn;
https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-revocation). Only that person can
fix it, so the worker:

- pauses only that account's work: its scopes stay dirty but no pass starts, its lifecycle events wait in
  the inbox, the worker's reconcile leaves its subscriptions alone; every other tenant and account goes on;
- does not hammer the token endpoint: the credential itself refuses again without a request while the
  token cache file is unchanged (:attr:`syncer.graph.auth.DelegatedCredential.signed_out`), and here the
  state is logged once, then reminded every :attr:`Accounts.remind_every`;
- records the state in ``syncer_sign_ins`` (:mod:`syncer.signins`) for ``syncer status`` and ``/metrics``;
- notices a new sign-in (``syncer login`` rewrites the cache file, so the credential tries again), then
  marks all the account's scopes dirty and lifts their back-off: the next passes recover the gap by delta.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from syncer import signins
from syncer.errors import SignInRequired
from syncer.graph.auth import graph_scope
from syncer.graph.delegated import DelegatedCredential
from syncer.worker import scopestate

if TYPE_CHECKING:
    from syncer.spec import Spec, Tenant

__all__ = ["Accounts"]

log = logging.getLogger("syncer.worker.accounts")

_ME = re.compile(r"^/?me(?=/|\?|$)", re.IGNORECASE)


@dataclass
class _Paused:
    error: SignInRequired
    since: datetime
    reminded: datetime


class Accounts:
    """The delegated tenant entries of one worker's spec and which of them are paused. Thread-safe."""

    def __init__(
        self, engine: Engine, spec: Spec, sources: Mapping[str, Any], *, clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.sources = sources
        self.clock = clock
        self.scope = (graph_scope(spec.graph.graph_url),) if spec.graph.graph_url else ()
        self.tenants: dict[str, Tenant] = {
            t.tenant_id: t for t in spec.tenants if t.delegated and t.tenant_id in sources
        }
        self.paused: dict[str, _Paused] = {}
        self.user_ids: dict[str, str] = {}  # tenant entry name -> the signed-in user's Graph id
        self.unresolved: frozenset[str] = frozenset()  # tenant ids whose me/... could not be resolved yet
        self.remind_every = timedelta(hours=1)
        self.probe_every = 2.0  # seconds between looks at a paused account's credential
        self._probed = 0.0
        self._recorded: dict[str, bool] = {}  # tenant id -> required, as last written
        self._lock = threading.Lock()

    # --- what the worker asks ---

    def allows(self, tenant_id: str, *, observe: bool = False) -> bool:
        """Whether work of *tenant_id* may run now (not a paused delegated account); *observe* first looks
        whether its credential was just refused (by work that swallowed the error, like a repair)."""
        if observe:
            self.observe()
        return tenant_id not in self.paused

    def scope_key(self, tenant_id: str, key: str) -> str:
        """A subscription's resource as recorded (``me/...`` for a delegated account) as the scope key the
        worker's index uses (``users/{id}/...``, as :meth:`resolve` wrote it)."""
        tenant = self.tenants.get(tenant_id)
        user_id = self.user_ids.get(tenant.name) if tenant is not None else None
        return _ME.sub(f"users/{user_id}", key, count=1) if user_id else key

    def active(self, spec: Spec) -> Spec:
        """*spec* without the paused accounts and their declarations: what the worker's reconcile may touch."""
        if not self.paused:
            return spec
        names = {self.tenants[tid].name for tid in self.paused}
        return replace(
            spec,
            tenants=tuple(t for t in spec.tenants if t.name not in names),
            subscriptions=tuple(s for s in spec.subscriptions if s.tenant not in names),
        )

    def resolve(self, spec: Spec) -> Spec:
        """*spec* with each delegated account's ``me/...`` written ``users/{id}/...`` (``GET /me``), for scopes.

        An account that must sign in again is paused and keeps the id it had; one never resolved (signed
        out since the worker started) has its declarations left out, and :attr:`unresolved` tells the
        worker not to take their scopes for undeclared ones.
        """
        ids: dict[str, str] = {}
        for tenant_id, tenant in self.tenants.items():
            try:
                ids[tenant.name] = str(self.sources[tenant_id].get_json("me?$select=id")["id"])
            except SignInRequired as error:
                self.pause(tenant_id, error)
                if tenant.name in self.user_ids:
                    ids[tenant.name] = self.user_ids[tenant.name]
            else:
                self._record(tenant_id, required=False)
        self.user_ids.update(ids)
        missing = {t.name for t in self.tenants.values() if t.name not in ids}
        self.unresolved = frozenset(tid for tid, t in self.tenants.items() if t.name in missing)
        resolved = spec.with_signed_in_users(ids) if ids else spec
        if missing:
            resolved = replace(resolved, subscriptions=tuple(s for s in resolved.subscriptions if s.tenant not in missing))
        return resolved

    def observe(self) -> None:
        """Pause every account whose credential was refused since (by a pass, a fetch, a repair)."""
        for tenant_id in self.tenants:
            credential = self._credential(tenant_id)
            error = credential.signed_out if credential is not None else None
            if error is not None and tenant_id not in self.paused:
                self.pause(tenant_id, error)

    def pause(self, tenant_id: str, error: SignInRequired) -> None:
        """Stop *tenant_id*'s work until it signs in again; said once, and in ``syncer_sign_ins``."""
        with self._lock:
            if tenant_id in self.paused:
                return
            now = self.clock()
            self.paused[tenant_id] = _Paused(error, now, now)
        tenant = self.tenants[tenant_id]
        log.error("%s: its scopes are paused (the other tenants go on) until `syncer login %s`", error, tenant.name)
        self._record(tenant_id, required=True, reason=str(error))

    def check(self) -> list[str]:
        """Look at the paused accounts (at most every :attr:`probe_every` seconds); the tenant ids that may
        go on again. A paused account's credential asks the identity platform only when its token cache
        file changed (a new ``syncer login``) or after a long quiet period."""
        self.observe()
        if not self.paused or time.monotonic() - self._probed < self.probe_every:
            return []
        self._probed = time.monotonic()
        resumed = []
        for tenant_id, paused in list(self.paused.items()):
            credential = self._credential(tenant_id)
            try:
                if credential is not None:
                    credential.token(self.scope)
            except SignInRequired:
                now = self.clock()
                if now - paused.reminded >= self.remind_every:
                    paused.reminded = now
                    log.warning("%s is still signed out (since %s): its scopes wait for `syncer login %s`",
                                paused.error.account, paused.since.isoformat(), self.tenants[tenant_id].name)
                continue
            except Exception as error:  # the identity platform unreachable: try again at the next look
                log.info("checking the sign-in of %s failed: %s", paused.error.account, error)
                continue
            with self._lock:
                self.paused.pop(tenant_id, None)
            log.info("%s signed in again: its scopes resume and catch up by delta", paused.error.account)
            with self.engine.begin() as connection:
                scopestate.wake_tenant(connection, tenant_id, now=self.clock())
            self._record(tenant_id, required=False)
            resumed.append(tenant_id)
        return resumed

    # --- helpers ---

    def _credential(self, tenant_id: str) -> DelegatedCredential | None:
        credential = getattr(self.sources.get(tenant_id), "credential", None)
        return credential if isinstance(credential, DelegatedCredential) else None

    def _record(self, tenant_id: str, *, required: bool, reason: str | None = None) -> None:
        if self._recorded.get(tenant_id) == required:
            return
        tenant = self.tenants[tenant_id]
        try:
            signins.record(self.engine, tenant_id=tenant_id, name=tenant.name, account=tenant.account or "",
                           now=self.clock(), reason=reason, required=required)
        except Exception as error:  # the state is also in this process; a later change writes it again
            log.warning("could not record the sign-in state of %s: %s", tenant.account, error)
            return
        self._recorded[tenant_id] = required
