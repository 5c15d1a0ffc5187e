"""``syncer doctor``: the pre-flight a user runs before the first reconcile.

Each check answers one question and, when the answer is no, says what to do about it: is the spec
valid, is the database reachable and migrated, does each tenant's credential get a token, does that
token carry the application permission each declared resource needs, does the notification URL
answer Graph's validation echo (and how fast: Graph gives up after 10 seconds), is the URL one Graph
can reach at all, and is our clock close to Graph's (renewals ask for expiries near the maximum).

Checks never write: the validation echo is exactly the request Graph itself would send, which a
receiver answers without side effects.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jwt
import requests

from syncer.errors import SignInRequired, SyncerError, TransportError

if TYPE_CHECKING:
    from syncer.resources import ResourceType
    from syncer.spec import Spec

OK, WARN, FAIL = "ok", "warn", "FAIL"
HANDSHAKE_LIMIT = 10.0
"""Graph's limit for answering the validation request (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#notificationurl-validation)."""
HANDSHAKE_COMFORT = 3.0
"""Above this, a cold start or a busy receiver may push the answer past Graph's limit."""
SKEW_FAIL = 300.0
SKEW_WARN = 60.0


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        """The line a person reads."""
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix and self.status != OK else text


def run_checks(
    spec_path: Path, *, environ: Mapping[str, str] | None = None, timeout: float = HANDSHAKE_LIMIT
) -> list[Check]:
    """Every check, in order; a failed spec stops the rest (they all need it)."""
    return list(iter_checks(spec_path, environ=environ, timeout=timeout))


def iter_checks(
    spec_path: Path, *, environ: Mapping[str, str] | None = None, timeout: float = HANDSHAKE_LIMIT
) -> Iterator[Check]:
    """Every check, yielded as it completes (the CLI prints each at once)."""
    from syncer.spec import load_spec

    try:
        spec = load_spec(spec_path, environ=environ).resolve_emulator()
    except SyncerError as error:
        yield Check("spec", FAIL, str(error), f"fix {spec_path} (syncer validate prints every problem)")
        return
    yield Check(
        "spec", OK, f"{spec_path}: {len(spec.subscriptions)} subscriptions, {len(spec.tenants)} tenants"
    )
    yield check_database(spec.database_url)
    for tenant in spec.tenants:
        token, checks = _token_checks(spec, tenant.name)
        yield from checks
        if token is not None:
            needed = permissions_needed(spec, tenant.name)
            if tenant.delegated:
                declared = [(s.name, s.resource_type) for s in spec.subscriptions if s.tenant == tenant.name]
                yield check_delegated_scopes(tenant.name, token, declared, personal=tenant.personal)
            else:
                yield check_permissions(tenant.name, token, needed)
            yield check_clock(spec, tenant.name)
    urls = [("notification URL", spec.receiver.notification_url)]
    if spec.receiver.lifecycle_url:
        urls.append(("lifecycle URL", spec.receiver.lifecycle_url))
    for label, url in urls:
        yield check_reachable_from_graph(label, url, cloud=spec.graph.cloud)
        yield check_validation_echo(label, url, timeout=timeout)


def permissions_needed(spec: Spec, tenant_name: str) -> dict[str, str]:
    """Application permission -> a declaration of *tenant_name* that needs it (to subscribe, or to read)."""
    needed: dict[str, str] = {}
    for s in spec.subscriptions:
        if s.tenant == tenant_name:
            for permission in (s.resource_type.permission, *s.resource_type.read_permissions):
                needed.setdefault(permission, s.name)
    return needed


def check_database(url: str) -> Check:
    """The database answers and its core tables are at the newest migration."""
    from syncer.migrate import current_revision, head_revision
    from syncer.mirror import describe_url

    where = describe_url(url)
    try:
        current = current_revision(url)
    except Exception as error:  # any driver error: the point is to report it, not to crash
        return Check(
            "database",
            FAIL,
            f"{where}: {type(error).__name__}: {error}",
            "is the database running and the URL right?",
        )
    head = head_revision()
    if current != head:
        return Check(
            "database",
            FAIL,
            f"{where}: at revision {current or 'none'}, syncer needs {head}",
            "run `syncer db upgrade`",
        )
    return Check("database", OK, f"{where}: reachable, migrated ({head})")


def _token_checks(spec: Spec, tenant_name: str) -> tuple[str | None, list[Check]]:
    from syncer.graph.auth import credential_from_spec, graph_scope

    name = f"token ({tenant_name})"
    try:
        credential = credential_from_spec(spec, tenant_name)
        token = credential.token((graph_scope(spec.graph.graph_url),))
    except SignInRequired as error:
        return None, [Check(name, FAIL, str(error), f"run `syncer login {tenant_name}`")]
    except TransportError as error:
        # No answer is not a refusal: the credentials were never judged, so blaming them misleads.
        host = spec.graph.authority_host
        return None, [
            Check(
                name,
                FAIL,
                f"the identity platform cannot be reached: {error}",
                f"check that {host} is reachable from here (graph.authority_host, DNS, proxy, firewall)",
            )
        ]
    except SyncerError as error:
        return None, [
            Check(name, FAIL, str(error), "check tenant_id, client_id and the secret or certificate")
        ]
    except (ValueError, OSError) as error:
        return None, [
            Check(
                name, FAIL, f"{type(error).__name__}: {error}", "check the tenant's credentials in the spec"
            )
        ]
    return token, [Check(name, OK, "the identity platform issued a token")]


def _roles(token: str) -> set[str]:
    try:
        # Only reading our own token's claims: the signature is Graph's business, not ours.
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return set()
    roles = claims.get("roles") or []
    return {str(r) for r in roles} if isinstance(roles, list) else set()


def satisfies(granted: set[str], needed: str) -> bool:
    """Whether *granted* application roles cover *needed* (a ReadWrite role covers its Read role)."""
    if needed in granted:
        return True
    return needed.replace(".Read", ".ReadWrite", 1) in granted if ".Read" in needed else False


def check_permissions(tenant_name: str, token: str, needed: Mapping[str, str]) -> Check:
    """The token's ``roles`` claim carries the application permission of every declared resource."""
    granted = _roles(token)
    missing = {perm: sub for perm, sub in needed.items() if not satisfies(granted, perm)}
    name = f"permissions ({tenant_name})"
    if missing:
        detail = ", ".join(f"{perm} (for {sub})" for perm, sub in sorted(missing.items()))
        return Check(
            name,
            FAIL,
            f"the app lacks {detail}; it has {', '.join(sorted(granted)) or 'none'}",
            "grant these application permissions to the app registration and give admin consent",
        )
    return Check(name, OK, ", ".join(sorted(needed)) or "no subscriptions declared")


def check_delegated_scopes(
    tenant_name: str, token: str, declared: Sequence[tuple[str, ResourceType]] = (), *, personal: bool = False
) -> Check:
    """A delegated account's token (``scp``) against the delegated permission each declaration needs.

    Graph's table (:mod:`syncer.permissions`): a work account and a personal account need different ones for
    some types (a personal OneDrive: Files.ReadWrite). Names the declaration, the missing permission, and
    how to get it: ``syncer login NAME --scope ...``, after an administrator's consent for the permissions
    only an administrator may grant.
    """
    from syncer import permissions

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    granted = str(claims.get("scp") or "").split()
    who = claims.get("upn") or claims.get("preferred_username") or tenant_name
    name = f"permissions ({tenant_name})"
    lacking, unknown = permissions.missing(declared, granted, personal=personal)
    if lacking:
        kind = "a personal Microsoft account" if personal else "a work or school account"
        parts = [
            f"{m.declaration} ({m.type_name}) needs {' or '.join(m.wanted)}" if m.wanted
            else f"{m.declaration} ({m.type_name}): Graph grants {kind} no delegated permission for it"
            for m in lacking
        ]
        scopes = sorted({m.scope for m in lacking if m.scope})
        admin = [s for s in scopes if s in permissions.ADMIN_CONSENT]
        fix = f"run `syncer login {tenant_name} " + " ".join(f"--scope {s}" for s in scopes) + "`" if scopes else ""
        if admin:
            fix += f" after a tenant administrator has consented to {', '.join(admin)} for the app"
        if len(scopes) < len(lacking):
            fix += ("; " if fix else "") + "declare those with an app-only tenant entry, or another account"
        return Check(
            name, FAIL, f"delegated account {who} lacks: " + "; ".join(parts)
            + f" (granted: {', '.join(sorted(granted)) or 'none'})", fix,
        )
    detail = f"delegated account {who}: granted {', '.join(sorted(granted)) or 'none'}"
    if unknown:
        return Check(name, WARN, detail + f"; not checked for {', '.join(unknown)} (no delegated permission known)")
    return Check(name, OK, detail + (f"; covers {', '.join(n for n, _ in declared)}" if declared else ""))


def check_clock(spec: Spec, tenant_name: str) -> Check:
    """Our clock against Graph's (the Date header): expiries near the maximum need them close."""
    from syncer.graph.client import GraphClient

    name = f"clock ({tenant_name})"
    try:
        with GraphClient.from_spec(spec, tenant_name) as graph:
            before = time.time()
            response = graph.request("GET", "/subscriptions")
            after = time.time()
    except SyncerError as error:
        return Check(name, FAIL, f"could not ask Graph: {error}", "see the token and permission checks above")
    date = response.headers.get("Date")
    if not date:
        return Check(name, WARN, "Graph sent no Date header: skew unknown")
    graph_time = parsedate_to_datetime(date).astimezone(UTC).timestamp()
    # The header has 1 s resolution and was written somewhere between our send and receive.
    ours = (before + after) / 2
    skew = ours - graph_time
    detail = f"{abs(skew):.1f}s {'ahead of' if skew > 0 else 'behind'} Graph"
    if abs(skew) > SKEW_FAIL:
        return Check(
            name,
            FAIL,
            detail,
            "synchronise the clock (NTP): renewals near the maximum lifetime would be refused",
        )
    if abs(skew) > SKEW_WARN:
        return Check(name, WARN, detail, "synchronise the clock (NTP)")
    return Check(name, OK, detail)


def check_reachable_from_graph(label: str, url: str, *, cloud: str) -> Check:
    """Graph posts from the internet: a loopback or private address only works with the emulator.

    This judges the address only (named "address", not "reachable": nothing is sent); whether a
    receiver listens there is the echo check's question.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    private = host in ("localhost",) or host.endswith(".local")
    try:
        address = ipaddress.ip_address(host)
        private = private or address.is_private or address.is_loopback or address.is_link_local
    except ValueError:
        pass
    name = f"{label} address"
    if parts.scheme != "https" or private:
        why = "not https" if parts.scheme != "https" else f"{host} is not a public address"
        if cloud == "emulator" or (cloud == "custom" and private):
            return Check(name, OK, f"{url}: {why}, fine for a local Graph (emulator)")
        return Check(
            name,
            FAIL,
            f"{url}: {why}",
            "Graph needs a public https:// URL: put the receiver behind a reverse proxy or a tunnel",
        )
    return Check(name, OK, f"{url}: public https (reachability from outside is only proven by a create)")


def check_validation_echo(
    label: str,
    url: str,
    *,
    timeout: float = HANDSHAKE_LIMIT,
    post: Callable[..., requests.Response] | None = None,
) -> Check:
    """Send Graph's validation request and time the answer: 200, text/plain, the token verbatim, within 10 s."""
    token = (
        f"doctor {secrets.token_urlsafe(12)} +/=&?"  # characters a receiver must URL-decode and echo as-is
    )
    name = f"{label} echo"
    send = post or requests.post
    started = time.perf_counter()
    try:
        response = send(
            url,
            params={"validationToken": token},
            data=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout,
        )
    except requests.Timeout:
        return Check(
            name, FAIL, f"{url}: no answer within {timeout:g}s", "is the receiver running (syncer serve or syncer run)?"
        )
    except requests.ConnectionError as error:
        parts = urlsplit(url)
        refused = "refused" in str(error).lower()
        return Check(
            name,
            FAIL,
            f"{url}: nothing listens at {parts.netloc} (connection refused)" if refused
            else f"{url}: cannot connect ({type(error).__name__})",
            "is the receiver running (syncer serve or syncer run) and the URL right?",
        )
    except requests.RequestException as error:
        return Check(
            name,
            FAIL,
            f"{url}: {type(error).__name__}",
            "is the receiver running (syncer serve or syncer run) and the URL right?",
        )
    elapsed = time.perf_counter() - started
    problems = []
    if response.status_code != 200:
        problems.append(f"status {response.status_code} (Graph needs 200)")
    if not response.headers.get("Content-Type", "").startswith("text/plain"):
        problems.append(f"Content-Type {response.headers.get('Content-Type')!r} (Graph needs text/plain)")
    if response.text != token:
        problems.append("the body is not the decoded validationToken")
    if problems:
        return Check(
            name,
            FAIL,
            f"{url}: " + "; ".join(problems),
            "the receiver must echo the decoded token as text/plain with 200",
        )
    detail = f"{url}: echoed in {elapsed * 1000:.0f} ms"
    if elapsed > HANDSHAKE_COMFORT:
        return Check(
            name,
            WARN,
            detail,
            f"Graph gives up after {HANDSHAKE_LIMIT:g}s: warm the receiver up, move it closer",
        )
    return Check(name, OK, detail)


def report(checks: list[Check]) -> tuple[list[str], int]:
    """The lines to print and the exit status (1 when any check failed)."""
    lines = [c.line() for c in checks]
    failed = sum(1 for c in checks if c.status == FAIL)
    warned = sum(1 for c in checks if c.status == WARN)
    lines.append(f"{len(checks) - failed - warned} ok, {warned} warnings, {failed} failed")
    return lines, 1 if failed else 0
