"""The tenants section of subscriptions.yaml: whom syncer signs in as, app-only or as a delegated account.

Apart from :mod:`syncer.spec.loader` (the document, the other connection sections and the readers every
section shares) because it is a rule set of its own: an app-only tenant has ids and exactly one
credential (a secret or a certificate); a delegated one (``auth: delegated``) is a public client with an
authority, the account expected to sign in and its token cache, and nothing secret in the file; one
delegated account per tenant id.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from syncer.spec.model import (
    AUTH_MODES,
    AUTHORITIES,
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    PERSONAL_TENANT_ID,
    CertificateCredential,
    SecretRef,
    Tenant,
    shared_tenant_id,
)
from syncer.spec.reader import Map

if TYPE_CHECKING:
    from syncer.spec.loader import SpecLoader

# A tenant id (GUID) or a verified domain, as an authority segment accepts.
_TENANT_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_DELEGATED_KEYS = ("authority", "account", "token_cache")
_TENANT_KEYS = ("name", "tenant_id", "client_id", "client_secret", "certificate", "auth", "concurrency", *_DELEGATED_KEYS)


class TenantsLoader:
    """Reads the ``tenants`` section with the shared readers of a :class:`SpecLoader`."""

    def __init__(self, loader: SpecLoader) -> None:
        self.loader = loader
        self.r = loader.r

    def load(self, top: Map, *, emulator: bool, info: Path | None,
             concurrency: int = DEFAULT_CONCURRENCY) -> tuple[Tenant, ...] | None:
        """The tenants, each with its ``concurrency`` (its own, else *concurrency* from ``defaults``)."""
        r = self.r
        node = top.get("tenants")
        if node is None:
            if emulator and info is not None:
                # The emulator registers one app: everything about it comes from the info file.
                return (Tenant("emulator", "", "", SecretRef(file=info, key="client_secret"), concurrency=concurrency),)
            r.error(top, "tenants", "a list of tenants (name, tenant_id, client_id, credentials)", "nothing")
            return None
        tenants: list[Tenant] = []
        seen: set[str] = set()
        for path, item in r.sequence(node, "tenants", what="a list of tenants"):
            t = r.mapping(item, path, _TENANT_KEYS)
            if t is None:
                continue
            name = self.loader.name(t.get("name"), t.sub("name"))
            if "name" not in t:
                r.error(t, t.sub("name"), "a tenant name", "nothing")
            if name in seen:
                r.error(t.get("name"), t.sub("name"), "a tenant name used once", f"a second '{name}'")
            seen.add(name or "")
            own = concurrency
            if "concurrency" in t:
                own = r.integer(t.get("concurrency"), t.sub("concurrency"), low=1, high=MAX_CONCURRENCY) or concurrency
            auth = r.choice(t.get("auth"), t.sub("auth"), AUTH_MODES) if "auth" in t else "app"
            if auth == "delegated":
                tenant = self.delegated_tenant(t, path, name, emulator=emulator)
                if tenant is not None:
                    tenants.append(replace(tenant, concurrency=own))
                continue
            for key in _DELEGATED_KEYS:
                if key in t:
                    r.error(t.values[key], t.sub(key), f"{key} only with auth: delegated", "app-only auth")
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
                secret = self.loader.secret(t, "client_secret")
            elif emulator and info is not None:
                secret = SecretRef(file=info, key="client_secret")
            else:
                r.error(t, path + ".client_secret", "client_secret or certificate", "neither")
            if name and auth is not None:
                tenants.append(Tenant(name, ids["tenant_id"], ids["client_id"], secret, cert, concurrency=own))
        shared = shared_tenant_id(tuple(tenants))
        if shared:
            r.error(node, "tenants", "one delegated account per tenant id", shared)
        if not tenants and isinstance(node, yaml.SequenceNode) and not node.value:
            r.error(node, "tenants", "at least one tenant", "an empty list")
        return tuple(tenants)

    def delegated_tenant(self, t: Map, path: str, name: str | None, *, emulator: bool) -> Tenant | None:
        """``auth: delegated``: a public client signing one user in; nothing secret in the file."""
        r, before = self.r, len(self.r.errors)
        for key in ("client_secret", "certificate"):
            if key in t:
                r.error(
                    t.values[key],
                    t.sub(key),
                    "no app credential with auth: delegated",
                    key,
                    f"the user signs in with `syncer login {name or 'NAME'}`; the app is a public client",
                )
        client_id = r.string(t.get("client_id"), t.sub("client_id"), expected="a client_id") or ""
        if "client_id" not in t and not emulator:
            r.error(t, t.sub("client_id"), "a client_id (the app registration users sign in to)", "nothing")
        authority = "organizations"
        if "authority" in t:
            authority = r.string(
                t.get("authority"),
                t.sub("authority"),
                expected="organizations, consumers, common or a tenant id",
            ) or authority
            if authority.lower() in AUTHORITIES:
                authority = authority.lower()
            elif not _TENANT_ID.fullmatch(authority):
                r.error(
                    t.get("authority"),
                    t.sub("authority"),
                    "organizations, consumers, common, a tenant id (GUID) or a domain",
                    f"'{authority}'",
                )
        account = r.string(t.get("account"), t.sub("account"), expected="the UPN of the account that signs in")
        if "account" not in t:
            r.error(t, t.sub("account"), "account: the UPN expected to sign in (user@domain)", "nothing")
        elif account is not None and "@" not in account:
            r.error(t.get("account"), t.sub("account"), "a user principal name (user@domain)", f"'{account}'")
        # The tenant id keys the mirror's rows, so it is needed before anyone signs in: a tenant
        # authority is it, personal accounts all live in one tenant, otherwise it must be written
        # (the emulator's info file supplies its own).
        tenant_id = r.string(t.get("tenant_id"), t.sub("tenant_id"), expected="a tenant_id") or ""
        if not tenant_id:
            if authority == "consumers":
                tenant_id = PERSONAL_TENANT_ID
            elif authority not in AUTHORITIES:
                tenant_id = authority
            elif not emulator:
                r.error(
                    t,
                    t.sub("tenant_id"),
                    f"tenant_id (the account's home tenant) with authority: {authority}",
                    "nothing",
                )
        if "token_cache" in t:
            cache = self.loader.file_path(t.get("token_cache"), t.sub("token_cache"))
        else:
            config_home = self.loader.environ.get("XDG_CONFIG_HOME") or os.path.join(
                self.loader.environ.get("HOME") or os.path.expanduser("~"), ".config"
            )
            cache = Path(config_home) / "syncer" / f"{name}.json"
        if len(r.errors) > before or not name or account is None or cache is None:
            return None
        return Tenant(
            name,
            tenant_id,
            client_id,
            auth="delegated",
            authority=authority,
            account=account,
            token_cache=cache,
        )

    def certificate(self, t: Map) -> CertificateCredential | None:
        r, path = self.r, t.sub("certificate")
        c = r.mapping(t.get("certificate"), path, ("private_key", "certificate", "thumbprint"))
        if c is None:
            return None
        key = self.loader.secret(c, "private_key")
        cert_path = self.loader.file_path(c.get("certificate"), c.sub("certificate"))
        thumb = r.string(
            c.get("thumbprint"), c.sub("thumbprint"), expected="a SHA-1 thumbprint (40 hex digits)"
        )
        if thumb is not None and not re.fullmatch(r"[0-9A-Fa-f]{40}", thumb.replace(":", "")):
            r.error(
                c.get("thumbprint"), c.sub("thumbprint"), "a SHA-1 thumbprint (40 hex digits)", f"'{thumb}'"
            )
            thumb = None
        if ("certificate" in c) == ("thumbprint" in c):
            r.error(
                c,
                path,
                "exactly one of certificate (a PEM path), thumbprint",
                "both" if "thumbprint" in c else "neither",
            )
            return None
        if key is None or (cert_path is None and thumb is None):
            return None
        return CertificateCredential(key, cert_path, thumb.replace(":", "").upper() if thumb else None)
