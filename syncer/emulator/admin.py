"""The admin API under ``/_emulator/``: the test harness's control panel (no auth, JSON in and out).

It never clashes with Graph paths (Graph has no ``/_emulator`` segment). Errors use Graph's error body.

Seeding
    ``POST /_emulator/seed`` body (all optional, non-negative integers):
    ``{"users": 1000000, "groups": 10, "membersPerGroup": 50, "messagesPerUser": 20,
    "eventsPerUser": 5, "contactsPerUser": 5, "tasksPerUser": 5, "driveItemsPerUser": 5,
    "teamsPerUser": 1, "chatsPerUser": 1, "channelMessagesPerUser": 100, "channelRepliesPerMessage": 3,
    "contentUsers": 10, "tenantId": "..."}`` → ``200 {"users": {"count", "prefix", "firstId",
    "upnPattern"}, ..., "seconds": 0.01}``. Users are generated lazily (O(1) for any count); groups take
    their members from the first users; per-user content goes to the first ``contentUsers`` users
    (default 10). Seeding sends no change notifications. Teams posts as a user live in
    :mod:`syncer.emulator.families.teams.admin` (``/_emulator/teams/...``, ``/_emulator/chats/...``); a user's
    presence in :mod:`syncer.emulator.families.presence` (``POST /_emulator/users/{id}/presence``); group
    conversations in :mod:`syncer.emulator.families.conversations` (``POST /_emulator/groups/{id}/conversations``,
    ``.../threads/{id}/reply``).

Faults (documented in :mod:`syncer.emulator.faults`)
    ``GET /_emulator/faults`` → ``{"rules": [...], "mailboxConcurrency": 4, "mailboxRejections": 0}``.
    ``POST /_emulator/faults`` with one rule object, a list of rules, or ``{"rules": [...],
    "mailboxConcurrency": N|null}`` → ``201 {"rules": [...]}`` (the rules added, with ids).
    ``DELETE /_emulator/faults`` removes all rules; ``DELETE /_emulator/faults/<id>`` one (404 if none).

Clock
    ``GET /_emulator/clock`` → ``{"now": "...Z", "epoch": 1.0, "frozen": false}``.
    ``POST /_emulator/clock`` with any of ``{"freeze": true|false, "advance": seconds, "set": "ISO"}``
    (applied in the order set, freeze, advance) → the new clock state.

Request log
    ``GET /_emulator/requests?since=SEQ&limit=N`` → ``{"requests": [{"seq", "time", "method", "path",
    "status", "clientRequestId", "requestId", "app", "durationMs", "fault", "batch"}]}`` (Graph and
    identity calls, not admin calls). ``DELETE /_emulator/requests`` clears it.

Apps and tenants
    ``GET /_emulator/apps`` lists registrations (no secrets).
    ``POST /_emulator/apps`` ``{"clientId"?, "tenantId"?, "displayName"?, "secret"?, "certificate"?: PEM,
    "roles"?: [...]}`` → ``201`` with the app (and the secret you gave or a generated one).
    ``PATCH /_emulator/apps/<clientId>`` ``{"roles": [...], "addSecret": "...", "addCertificate": PEM}``.
    ``DELETE /_emulator/apps/<clientId>``.
    ``POST /_emulator/tenants`` ``{"tenantId", "domain", "displayName"?, "customDomains"?: [...]}`` adds a tenant
    (for multi-tenant tests; the first custom domain becomes the default one of /organization's verifiedDomains).
    Apps also take ``signInAudience``, ``redirectUris``, ``publicClient`` and ``delegatedScopes`` (delegated sign-in,
    docs/emulator-identity.md); identity's own admin routes are in :mod:`syncer.emulator.identity.admin_views`.
    ``POST /_emulator/token`` ``{"clientId"?}`` → a token response minted without the token endpoint.

Delta tokens
    ``POST /_emulator/delta/expire`` ``{"scope": "regex on collection keys"}`` → every delta/skip token
    issued so far for matching collections answers 410 SyncStateNotFound (Outlook cache eviction).

Reset and info
    ``POST /_emulator/reset`` drops all data, faults and the request log (apps, keys and the clock stay)
    and runs reset hooks (subscriptions and queued notifications go too). ``GET /_emulator/info`` → counts and settings.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, request

from syncer.emulator.api import emulator_state
from syncer.emulator.clock import iso_ts, parse_iso
from syncer.emulator.errors import GraphHTTPError, graph_error
from syncer.emulator.families.directory.users import users_of
from syncer.emulator.identity import AppRegistration, issue_token
from syncer.emulator.identity.apps import AUDIENCES
from syncer.emulator.seed import seed
from syncer.emulator.state import Tenant
from syncer.emulator.tls import thumbprints

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("emulator_admin", __name__, url_prefix="/_emulator")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def _body(default: Any = None) -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if default is not None:
            return default
        raise GraphHTTPError(400, "BadRequest", "A JSON body is required.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GraphHTTPError(400, "BadRequest", "The body is not valid JSON.") from None


def _object(default: dict[str, Any] | None = None) -> dict[str, Any]:
    body = _body(default)
    if not isinstance(body, dict):
        raise GraphHTTPError(400, "BadRequest", "A JSON object is expected.")
    return body


@bp.post("/seed")
def seed_view() -> Response:
    """Bulk-seed data."""
    return _json(seed(emulator_state(), _object()))


@bp.get("/faults")
def faults_get() -> Response:
    """List fault rules and limits."""
    return _json(emulator_state().faults.to_json())


@bp.post("/faults")
def faults_add() -> Response:
    """Add rules and/or set the mailbox limit."""
    state = emulator_state()
    body = _body()
    rules: list[Any]
    if isinstance(body, list):
        rules = body
    elif isinstance(body, dict) and ("rules" in body or "mailboxConcurrency" in body) and "type" not in body:
        rules = body.get("rules", [])
        if "mailboxConcurrency" in body:
            limit = body["mailboxConcurrency"]
            if limit is not None and (not isinstance(limit, int) or limit < 1):
                raise GraphHTTPError(400, "BadRequest", "'mailboxConcurrency' must be a positive integer or null.")
            state.faults.set_mailbox_limit(limit)
        if not isinstance(rules, list):
            raise GraphHTTPError(400, "BadRequest", "'rules' must be a list.")
    else:
        rules = [body]
    added = [state.faults.add(one).to_json() for rule in rules for one in state.faults.expand(rule)]
    return _json({"rules": added}, 201)


@bp.delete("/faults")
def faults_clear() -> Response:
    """Remove every rule."""
    emulator_state().faults.clear()
    return Response(b"", status=204)


@bp.delete("/faults/<int:rule_id>")
def faults_remove(rule_id: int) -> Response:
    """Remove one rule."""
    if not emulator_state().faults.remove(rule_id):
        return graph_error(404, "ResourceNotFound", f"No fault rule with id {rule_id}.")
    return Response(b"", status=204)


def _clock_json(state: EmulatorState) -> dict[str, Any]:
    t = state.clock.time()
    return {"now": iso_ts(t), "epoch": t, "frozen": state.clock.frozen}


@bp.get("/clock")
def clock_get() -> Response:
    """The emulator's time."""
    return _json(_clock_json(emulator_state()))


@bp.post("/clock")
def clock_set() -> Response:
    """Freeze / unfreeze / advance / set the clock."""
    state = emulator_state()
    body = _object()
    unknown = set(body) - {"freeze", "advance", "set"}
    if unknown:
        raise GraphHTTPError(400, "BadRequest", f"Unknown clock field(s): {sorted(unknown)}.")
    if "set" in body:
        try:
            state.clock.set(parse_iso(str(body["set"])))
        except ValueError:
            raise GraphHTTPError(400, "BadRequest", f"'set' is not an ISO 8601 date-time: {body['set']!r}.") from None
    if "freeze" in body:
        if not isinstance(body["freeze"], bool):
            raise GraphHTTPError(400, "BadRequest", "'freeze' must be true or false.")
        if body["freeze"]:
            state.clock.freeze()
        else:
            state.clock.unfreeze()
    if "advance" in body:
        if not isinstance(body["advance"], (int, float)) or isinstance(body["advance"], bool):
            raise GraphHTTPError(400, "BadRequest", "'advance' must be a number of seconds.")
        state.clock.advance(float(body["advance"]))
    return _json(_clock_json(state))


@bp.get("/requests")
def requests_get() -> Response:
    """The request log."""
    state = emulator_state()
    try:
        since = int(request.args.get("since", 0))
        limit = int(request.args.get("limit", 1000))
    except ValueError:
        raise GraphHTTPError(400, "BadRequest", "'since' and 'limit' must be integers.") from None
    with state.lock:
        entries = [e.to_json() for e in state.request_log if e.seq > since]
    return _json({"requests": entries[-limit:] if limit > 0 else []})


@bp.delete("/requests")
def requests_clear() -> Response:
    """Forget the request log."""
    state = emulator_state()
    with state.lock:
        state.request_log.clear()
    return Response(b"", status=204)


def _app_json(app: AppRegistration, secret: str | None = None) -> dict[str, Any]:
    body = app.to_json()
    if secret is not None:
        body["secret"] = secret
    return body


def _cert_thumb(pem: Any) -> tuple[str, bytes]:
    if not isinstance(pem, str):
        raise GraphHTTPError(400, "BadRequest", "'certificate' must be a PEM string.")
    try:
        sha1, _ = thumbprints(pem.encode())
    except ValueError:
        raise GraphHTTPError(400, "BadRequest", "'certificate' is not a PEM X.509 certificate.") from None
    return sha1, pem.encode()


def _roles(value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise GraphHTTPError(400, "BadRequest", "'roles' must be a list of permission names.")
    return set(value)


_SIGN_IN_FIELDS = ("signInAudience", "redirectUris", "publicClient", "delegatedScopes")


def _sign_in_settings(app: AppRegistration, body: dict[str, Any]) -> None:
    """Apply the delegated sign-in fields of an app body (docs/emulator-identity.md)."""
    if "signInAudience" in body:
        if body["signInAudience"] not in AUDIENCES:
            raise GraphHTTPError(400, "BadRequest", f"'signInAudience' must be one of {sorted(AUDIENCES)}.")
        app.sign_in_audience = body["signInAudience"]
    if "redirectUris" in body:
        uris = body["redirectUris"]
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise GraphHTTPError(400, "BadRequest", "'redirectUris' must be a list of URIs.")
        app.redirect_uris = list(uris)
    if "publicClient" in body:
        if not isinstance(body["publicClient"], bool):
            raise GraphHTTPError(400, "BadRequest", "'publicClient' must be true or false.")
        app.public_client = body["publicClient"]
    if "delegatedScopes" in body:
        app.delegated_scopes = _roles(body["delegatedScopes"])


@bp.get("/apps")
def apps_list() -> Response:
    """Registered apps."""
    return _json({"apps": [a.to_json() for a in emulator_state().apps.values()]})


@bp.post("/apps")
def apps_add() -> Response:
    """Register an app."""
    state = emulator_state()
    body = _object()
    unknown = set(body) - {"clientId", "tenantId", "displayName", "secret", "certificate", "roles", *_SIGN_IN_FIELDS}
    if unknown:
        raise GraphHTTPError(400, "BadRequest", f"Unknown app field(s): {sorted(unknown)}.")
    client_id = str(body.get("clientId") or uuid.uuid4())
    tenant_id = str(body.get("tenantId") or state.config.tenant_id)
    if tenant_id not in state.tenants:
        raise GraphHTTPError(404, "ResourceNotFound", f"Unknown tenant '{tenant_id}'.")
    if client_id in state.apps:
        raise GraphHTTPError(409, "Conflict", f"App '{client_id}' is already registered.")
    secret = body.get("secret")
    if secret is None and "certificate" not in body:
        secret = secrets.token_urlsafe(24)
    app = AppRegistration(client_id=client_id, tenant_id=tenant_id,
                          display_name=str(body.get("displayName", "test app")),
                          roles=_roles(body.get("roles", [])))
    if secret is not None:
        app.secrets.add(str(secret))
    if "certificate" in body:
        sha1, pem = _cert_thumb(body["certificate"])
        app.certificates[sha1] = pem
    _sign_in_settings(app, body)
    with state.lock:
        state.apps[client_id] = app
    return _json(_app_json(app, str(secret) if secret is not None else None), 201)


@bp.patch("/apps/<client_id>")
def apps_patch(client_id: str) -> Response:
    """Change an app's roles or add credentials."""
    state = emulator_state()
    app = state.apps.get(client_id)
    if app is None:
        return graph_error(404, "ResourceNotFound", f"No app '{client_id}'.")
    body = _object()
    unknown = set(body) - {"roles", "addSecret", "addCertificate", "displayName", *_SIGN_IN_FIELDS}
    if unknown:
        raise GraphHTTPError(400, "BadRequest", f"Unknown app field(s): {sorted(unknown)}.")
    with state.lock:
        if "roles" in body:
            app.roles = _roles(body["roles"])
        if "addSecret" in body:
            app.secrets.add(str(body["addSecret"]))
        if "addCertificate" in body:
            sha1, pem = _cert_thumb(body["addCertificate"])
            app.certificates[sha1] = pem
        if "displayName" in body:
            app.display_name = str(body["displayName"])
        _sign_in_settings(app, body)
    return _json(app.to_json())


@bp.delete("/apps/<client_id>")
def apps_delete(client_id: str) -> Response:
    """Unregister an app (its tokens stop working)."""
    state = emulator_state()
    with state.lock:
        if state.apps.pop(client_id, None) is None:
            return graph_error(404, "ResourceNotFound", f"No app '{client_id}'.")
    return Response(b"", status=204)


@bp.post("/tenants")
def tenants_add() -> Response:
    """Add a tenant."""
    state = emulator_state()
    body = _object()
    tenant_id = str(body.get("tenantId") or uuid.uuid4())
    domain = str(body.get("domain") or f"tenant{len(state.tenants) + 1}.onmicrosoft.com")
    custom = body.get("customDomains", [])
    if not isinstance(custom, list) or not all(isinstance(d, str) for d in custom):
        raise GraphHTTPError(400, "BadRequest", "'customDomains' must be a list of domain names.")
    with state.lock:
        state.tenants[tenant_id] = Tenant(tenant_id, domain, display_name=str(body.get("displayName") or "Contoso"),
                                          custom_domains=list(custom))
        state.store.tenant(tenant_id)
    return _json({"tenantId": tenant_id, "domain": domain}, 201)


@bp.post("/token")
def token_mint() -> Response:
    """Mint a token for an app without going through the token endpoint."""
    state = emulator_state()
    body = _object({})
    client_id = str(body.get("clientId") or state.config.client_id)
    app = state.apps.get(client_id)
    if app is None:
        return graph_error(404, "ResourceNotFound", f"No app '{client_id}'.")
    return _json(issue_token(state, app))


@bp.post("/delta/expire")
def delta_expire() -> Response:
    """Expire every delta token issued so far for matching collections."""
    state = emulator_state()
    body = _object({})
    pattern = body.get("scope", ".*")
    try:
        regex = re.compile(str(pattern), re.IGNORECASE)
    except re.error as exc:
        raise GraphHTTPError(400, "BadRequest", f"Invalid regular expression: {exc}.") from None
    now = state.clock.time()
    count = 0
    with state.lock:
        for ts in state.store.tenants.values():
            for key, col in ts.collections.items():
                if regex.search(key):
                    col.tokens_valid_after = now + 1e-3
                    count += 1
    return _json({"collections": count})


@bp.post("/reset")
def reset() -> Response:
    """Drop all data, faults and the request log."""
    emulator_state().reset()
    return Response(b"", status=204)


@bp.get("/info")
def info() -> Response:
    """Counts and key settings."""
    state = emulator_state()
    with state.lock:
        tenants = {tid: {"collections": len(ts.collections), "users": users_of(ts).live_count()}
                   for tid, ts in state.store.tenants.items()}
    return _json({"baseUrl": state.base_url, "tenants": tenants, "seq": state.store.seq,
                  "clock": _clock_json(state), "seed": state.config.seed})
