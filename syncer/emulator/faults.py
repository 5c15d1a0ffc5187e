"""Request faults and limits: what makes the emulator misbehave the way Graph does, on demand.

Faults are rules added through the admin API (``POST /_emulator/faults``, see :mod:`admin`) or directly
with :meth:`Faults.add`. Every random choice uses one ``random.Random(seed)``, so the same seed and the
same request sequence give the same faults. Rules are checked in the order they were added; the first
rule that fires decides (latency rules add up and never stop the search).

Rule kinds (JSON as the admin API takes it; every field except ``type`` is optional):

``{"type": "status", "status": 429, "path": "^/v1.0/users", "method": "GET", "probability": 1.0,
  "count": 3, "retryAfter": 10, "code": "TooManyRequests", "message": "..."}``
    Answer matching requests with ``status`` and Graph's error body. 429 and 503 carry ``Retry-After``
    (default 10 s for 429, none for 503 unless given). ``count`` limits how many times it fires; then
    the rule is spent (still listed, ``remaining: 0``). ``path`` is a regex searched in the request path
    (``/v1.0/...``); ``method`` a method name or list. Any status is allowed, 500 included: an injected
    500 is the only way the emulator answers 500.
``{"type": "rate", "limit": 100, "perSeconds": 10, "scope": "app+tenant", "path": "...",
  "retryAfter": null}``
    Sliding window per scope key (``app``, ``tenant``, ``app+tenant``, or ``app+mailbox`` for Outlook's
    10,000 requests / 10 min per app and mailbox, counting only mailbox paths): more than ``limit`` matching
    requests in ``perSeconds`` (emulator clock) answer 429 with ``Retry-After`` = seconds until a slot
    frees (rounded up) unless ``retryAfter`` fixes it. Throttled requests still count, as in Graph.
``{"type": "latency", "ms": 250, "path": "...", "probability": 1.0, "count": null}``
    Sleep ``ms`` before handling matching requests (real time: the client must see it).
``{"type": "reset", "path": "...", "probability": 1.0, "count": 1}``
    Drop the TCP connection without an HTTP answer (RST), as a dying front end does.
``{"type": "deltaReset", "scope": "users", "kind": "expired" | "reset" | "replay", "count": 1, "back": 10}``
    The next ``count`` delta calls that carry a token and whose collection key matches the regex
    ``scope`` (e.g. ``users`` or ``users/.*/mailfolders/.*/messages``) answer 410: ``expired`` =
    SyncStateNotFound (token too old), ``reset`` = 410 with a ``Location`` header that restarts the round
    (tenant maintenance, https://learn.microsoft.com/graph/delta-query-overview). driveItem scopes answer the drive resync code instead. ``replay`` does not
    fail: the next deltaLink round also re-sends the ``back`` changes made just before its token
    (Graph "replays" changes), so clients must be idempotent.

``{"type": "deltaLag", "scope": "users", "seconds": 30}``
    Replication lag (Entra "can delay changes", https://learn.microsoft.com/graph/delta-query-overview): delta rounds of matching collections only see
    changes older than ``seconds`` on the emulator clock, so a notification can arrive before its
    change shows up in delta. Stays until removed.

``{"type": "profile", "name": "teams", "scale": 1.0}``
    Not a rule: expands into the rate rules of a documented throttling table (``scale`` multiplies every limit).
    ``teams`` = https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits, per app and
    tenant: GET a channel or chat message 20 rps, POST a channel message 50, POST a chat message 20, POST /teams 10,
    getAllMessages 200, member and channel lists 60, other GETs 30, other writes 30; at most 4 rps per app on one team
    (scope ``app+match``: the key is the path regex's first group) and 3,000 messages per app per day into one channel.

Rules without ``path`` apply to Graph calls (``/v1.0``) only; give a ``path`` such as
``/oauth2/v2.0/token`` to fail or slow the identity platform (its errors then use the identity
platform's shape, ``{"error": "temporarily_unavailable", ...}``).

Per-mailbox concurrency (not a rule: a limit, on by default like Graph's 4 concurrent requests per
app+mailbox): ``config.mailbox_concurrency_limit``; change it at run time with
``POST /_emulator/faults {"mailboxConcurrency": 2}`` (``null`` disables). A request over the limit gets
429 ``ApplicationThrottled`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from syncer.emulator.clock import Clock
from syncer.emulator.config import EmulatorConfig
from syncer.emulator.errors import GraphHTTPError

_KINDS = {"status", "rate", "latency", "reset", "deltaReset", "deltaLag"}

_TEAMS_GET_MESSAGES = r"^/v1\.0/(teams/[^/]+/channels/[^/]+|chats/[^/]+|users/[^/]+/chats/[^/]+)/messages(/|$)"
#: Throttling tables as rate rules (see the module docstring); limits are per second unless perSeconds says otherwise.
PROFILES: dict[str, list[dict[str, Any]]] = {
    "teams": [
        {"path": _TEAMS_GET_MESSAGES, "method": "GET", "limit": 20},
        {"path": r"^/v1\.0/teams/[^/]+/channels/[^/]+/messages(/[^/]+/replies)?$", "method": "POST", "limit": 50},
        {"path": r"^/v1\.0/chats/[^/]+/messages$", "method": "POST", "limit": 20},
        {"path": r"^/v1\.0/teams$", "method": "POST", "limit": 10},
        {"path": r"/getAllMessages", "method": "GET", "limit": 200},
        {"path": r"^/v1\.0/(teams/[^/]+/(members|channels)|teams/[^/]+/channels/[^/]+/members|chats/[^/]+/members)$",
         "method": "GET", "limit": 60},
        {"path": r"^/v1\.0/(?!.*(/messages|getAllMessages|/members$|/channels$))(teams|chats|users/[^/]+/chats)",
         "method": "GET", "limit": 30},
        {"path": r"^/v1\.0/(?!teams$)(?!.*/messages)(teams|chats)", "method": ["POST", "PATCH", "DELETE", "PUT"],
         "limit": 30},
        {"path": r"^/v1\.0/teams/([^/]+)", "limit": 4, "scope": "app+match"},
        {"path": r"^/v1\.0/teams/[^/]+/channels/([^/]+)/messages", "method": "POST", "limit": 3000,
         "perSeconds": 86400, "scope": "app+match"},
    ],
}

_DEFAULT_CODES = {
    400: ("BadRequest", "Injected bad request."),
    401: ("InvalidAuthenticationToken", "Access token validation failure."),
    403: ("Forbidden", "Injected forbidden."),
    404: ("ResourceNotFound", "Injected not found."),
    409: ("Conflict", "Injected conflict."),
    429: ("TooManyRequests", "Please retry again later."),
    500: ("generalException", "An internal server error occurred (injected)."),
    502: ("BadGateway", "Bad gateway (injected)."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable (injected)."),
    504: ("GatewayTimeout", "The upstream service did not answer in time (injected)."),
    509: ("BandwidthLimitExceeded", "Bandwidth limit exceeded (injected)."),
}


@dataclass
class Rule:
    """One fault rule (see the module docstring for the JSON forms)."""

    id: int
    kind: str
    spec: dict[str, Any]
    path: re.Pattern[str] | None
    methods: frozenset[str] | None
    probability: float
    remaining: int | None
    fired: int = 0
    hits: dict[str, deque[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The admin API's rendering."""
        return {"id": self.id, **self.spec, "fired": self.fired, "remaining": self.remaining}


@dataclass(frozen=True)
class Decision:
    """What the faults decided for one request."""

    latency_s: float = 0.0
    error: GraphHTTPError | None = None
    reset: bool = False
    label: str | None = None


def _bad(message: str) -> GraphHTTPError:
    return GraphHTTPError(400, "BadRequest", message)


class Faults:
    """The active rules, the seeded RNG and the mailbox concurrency counters."""

    def __init__(self, *, seed: int, clock: Clock, config: EmulatorConfig) -> None:
        self._lock = threading.Lock()
        self.rng = random.Random(seed ^ 0xFA17)
        self.clock = clock
        self.rules: list[Rule] = []
        self._next_id = 1
        self.mailbox_limit: int | None = config.mailbox_concurrency_limit
        self.mailbox_retry_after = config.mailbox_concurrency_retry_after_s
        self._inflight: dict[tuple[str, str], int] = {}
        self.mailbox_rejections = 0

    def clear(self) -> None:
        """Remove every rule (the mailbox limit keeps its current value)."""
        with self._lock:
            self.rules.clear()

    def to_json(self) -> dict[str, Any]:
        """The admin API's view of the faults."""
        with self._lock:
            return {
                "rules": [r.to_json() for r in self.rules],
                "mailboxConcurrency": self.mailbox_limit,
                "mailboxRejections": self.mailbox_rejections,
            }

    @staticmethod
    def expand(spec: Any) -> list[Any]:
        """A ``profile`` as its rate rules (each tagged with the profile's name); any other spec as itself."""
        if not isinstance(spec, dict) or spec.get("type") != "profile":
            return [spec]
        name = spec.get("name")
        if name not in PROFILES:
            raise _bad(f"Unknown fault profile {name!r}; expected one of {sorted(PROFILES)}.")
        scale = spec.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise _bad("'scale' must be a positive number.")
        return [{"type": "rate", "profile": name, "scope": "app+tenant", "perSeconds": 1, **rule,
                 "limit": max(1, math.ceil(rule["limit"] * scale))} for rule in PROFILES[name]]

    def add(self, spec: dict[str, Any]) -> Rule:
        """Validate and add one rule; raises GraphHTTPError(400) on a bad spec."""
        if not isinstance(spec, dict):
            raise _bad("A fault rule must be a JSON object.")
        kind = spec.get("type")
        if kind not in _KINDS:
            raise _bad(f"Unknown fault type {kind!r}; expected one of {sorted(_KINDS)}.")
        path = None
        pattern = spec.get("scope" if kind in ("deltaReset", "deltaLag") else "path")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise _bad("'path'/'scope' must be a regular expression string.")
            try:
                path = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise _bad(f"Invalid regular expression {pattern!r}: {exc}.") from None
        method = spec.get("method")
        methods: frozenset[str] | None = None
        if method is not None:
            names = [method] if isinstance(method, str) else method
            if not isinstance(names, list) or not all(isinstance(m, str) for m in names):
                raise _bad("'method' must be a string or a list of strings.")
            methods = frozenset(m.upper() for m in names)
        probability = spec.get("probability", 1.0)
        if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise _bad("'probability' must be a number between 0 and 1.")
        count = spec.get("count", 1 if kind in ("deltaReset",) else None)
        if count is not None and (not isinstance(count, int) or count < 0):
            raise _bad("'count' must be a non-negative integer or null.")
        if kind == "status":
            status = spec.get("status")
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise _bad("'status' must be an HTTP error status (400-599).")
        if kind == "rate":
            limit, per = spec.get("limit"), spec.get("perSeconds", 1)
            if not isinstance(limit, int) or limit < 0 or not isinstance(per, (int, float)) or per <= 0:
                raise _bad("'limit' must be an integer >= 0 and 'perSeconds' a positive number.")
            if spec.get("scope", "app+tenant") not in ("app", "tenant", "app+tenant", "app+mailbox", "app+match"):
                raise _bad("'scope' of a rate rule must be 'app', 'tenant', 'app+tenant', 'app+mailbox' or 'app+match'.")
            if spec.get("scope") == "app+match" and not isinstance(spec.get("path"), str):
                raise _bad("An 'app+match' rate rule needs a 'path' whose first group names the counted target.")
        if kind == "deltaLag" and (not isinstance(spec.get("seconds"), (int, float)) or spec["seconds"] < 0):
            raise _bad("'seconds' must be a non-negative number.")
        if kind == "latency" and (not isinstance(spec.get("ms"), (int, float)) or spec["ms"] < 0):
            raise _bad("'ms' must be a non-negative number.")
        if kind == "deltaReset" and spec.get("kind", "expired") not in ("expired", "reset", "replay"):
            raise _bad("'kind' of a deltaReset must be 'expired', 'reset' or 'replay'.")
        if kind == "deltaReset" and (not isinstance(spec.get("back", 10), int) or spec.get("back", 10) < 1):
            raise _bad("'back' must be a positive integer.")
        if kind == "rate":
            path = re.compile(spec["path"], re.IGNORECASE) if isinstance(spec.get("path"), str) else None
        with self._lock:
            rule = Rule(self._next_id, kind, dict(spec), path, methods, float(probability), count)
            self._next_id += 1
            self.rules.append(rule)
            return rule

    def remove(self, rule_id: int) -> bool:
        """Delete rule *rule_id*; False if there is none."""
        with self._lock:
            for i, rule in enumerate(self.rules):
                if rule.id == rule_id:
                    del self.rules[i]
                    return True
            return False

    def set_mailbox_limit(self, limit: int | None) -> None:
        """Change the per app+mailbox concurrency limit (None = unlimited)."""
        with self._lock:
            self.mailbox_limit = limit

    # --- decisions -----------------------------------------------------------------------------

    def _fires(self, rule: Rule) -> bool:
        if rule.remaining is not None and rule.remaining <= 0:
            return False
        if rule.probability < 1.0 and self.rng.random() >= rule.probability:
            return False
        if rule.remaining is not None:
            rule.remaining -= 1
        rule.fired += 1
        return True

    def check(self, *, method: str, path: str, app: str | None, tenant: str | None,
              mailbox: str | None = None, graph_call: bool = True) -> Decision:
        """Decide the request-level faults for one request.

        Identity-platform calls (``graph_call`` False) are only hit by rules whose ``path`` names them,
        so a blanket rule never locks a test out of its own token.
        """
        latency = 0.0
        with self._lock:
            for rule in self.rules:
                if rule.kind in ("deltaReset", "deltaLag"):
                    continue
                if not graph_call and rule.path is None:
                    continue
                if rule.path is not None and not rule.path.search(path):
                    continue
                if rule.methods is not None and method.upper() not in rule.methods:
                    continue
                if rule.kind == "rate":
                    if rule.spec.get("scope") == "app+mailbox" and mailbox is None:
                        continue  # a mailbox rule only counts requests that address a mailbox
                    error = self._rate(rule, app=app, tenant=tenant, mailbox=mailbox, path=path)
                    if error is not None:
                        rule.fired += 1
                        return Decision(latency, error, label=f"rate#{rule.id}")
                    continue
                if not self._fires(rule):
                    continue
                if rule.kind == "latency":
                    latency += float(rule.spec["ms"]) / 1000.0
                    continue
                if rule.kind == "reset":
                    return Decision(latency, None, reset=True, label=f"reset#{rule.id}")
                return Decision(latency, self._status_error(rule), label=f"status#{rule.id}")
        return Decision(latency)

    def _status_error(self, rule: Rule) -> GraphHTTPError:
        status = int(rule.spec["status"])
        code, message = _DEFAULT_CODES.get(status, ("generalException", "Injected error."))
        code = str(rule.spec.get("code", code))
        message = str(rule.spec.get("message", message))
        headers: dict[str, str] = {}
        retry_after = rule.spec.get("retryAfter", 10 if status == 429 else None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        inner = {"code": str(status), "status": str(status)} if status == 429 else None
        return GraphHTTPError(status, code, message, headers=headers, inner=inner)

    def _rate(self, rule: Rule, *, app: str | None, tenant: str | None, mailbox: str | None,
              path: str = "") -> GraphHTTPError | None:
        scope = rule.spec.get("scope", "app+tenant")
        if scope == "app+match":
            match = rule.path.search(path) if rule.path is not None else None
            target = (match.group(1) if match is not None and match.groups() else match.group(0) if match else "")
            key = f"{app}|{tenant}|{target.lower()}"
        else:
            key = {"app": f"{app}", "tenant": f"{tenant}", "app+tenant": f"{app}|{tenant}",
                   "app+mailbox": f"{app}|{(mailbox or '').lower()}"}[scope]
        now = self.clock.time()
        window = float(rule.spec.get("perSeconds", 1))
        limit = int(rule.spec["limit"])
        hits = rule.hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        over = len(hits) >= limit
        hits.append(now)  # throttled calls count too [DOC: https://learn.microsoft.com/graph/throttling]
        if not over:
            return None
        wait = rule.spec.get("retryAfter")
        if wait is None:
            oldest = hits[0] if limit == 0 else hits[-limit - 1] if len(hits) > limit else hits[0]
            wait = max(1, math.ceil(oldest + window - now))
        return GraphHTTPError(
            429, "TooManyRequests", "Please retry again later.",
            headers={"Retry-After": str(wait)}, inner={"code": "429", "status": "429"},
        )

    def take_delta_reset(self, collection_key: str, *, delta_link: bool = True) -> dict[str, Any] | None:
        """If a deltaReset rule matches *collection_key*, spend one firing and return its spec.

        ``replay`` rules only fire on deltaLink calls (a replay is a change sent again in a later round).
        """
        with self._lock:
            for rule in self.rules:
                if rule.kind != "deltaReset":
                    continue
                if rule.path is not None and not rule.path.fullmatch(collection_key) \
                        and not rule.path.search(collection_key):
                    continue
                if rule.spec.get("kind") == "replay" and not delta_link:
                    continue
                if self._fires(rule):
                    return {"kind": "expired", "back": 10, **rule.spec}
        return None

    def delta_lag(self, collection_key: str) -> float:
        """Seconds of replication lag for delta rounds of *collection_key* (0 = none)."""
        with self._lock:
            lag = 0.0
            for rule in self.rules:
                if rule.kind == "deltaLag" and (rule.path is None or rule.path.search(collection_key)):
                    lag = max(lag, float(rule.spec["seconds"]))
            return lag

    # --- mailbox concurrency -------------------------------------------------------------------

    def enter_mailbox(self, app: str, mailbox: str) -> GraphHTTPError | None:
        """Count one in-flight request for app+mailbox; an error if that exceeds the limit."""
        key = (app, mailbox.lower())
        with self._lock:
            current = self._inflight.get(key, 0)
            if self.mailbox_limit is not None and current >= self.mailbox_limit:
                self.mailbox_rejections += 1
                return GraphHTTPError(
                    429, "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers={"Retry-After": str(self.mailbox_retry_after)},
                    inner={"code": "429", "status": "429"},
                )
            self._inflight[key] = current + 1
            return None

    def exit_mailbox(self, app: str, mailbox: str) -> None:
        """Release the slot taken by :meth:`enter_mailbox`."""
        key = (app, mailbox.lower())
        with self._lock:
            current = self._inflight.get(key, 0) - 1
            if current <= 0:
                self._inflight.pop(key, None)
            else:
                self._inflight[key] = current
