"""The one exception tree of syncer.

Every error syncer raises on purpose derives from :class:`SyncerError`, so a caller (the CLI, a
scheduler job, a test) can catch one class and know it is ours. Whether an operation may be retried
is a property of the error (:attr:`SyncerError.retryable`), never guessed from a message::

    SyncerError
    ├── SpecError                 subscriptions.yaml is wrong (file, line, field path, expected, found)
    │   └── SpecErrors            several SpecErrors found in one load, reported together
    ├── ConfigError               settings / environment / secret references that cannot be resolved
    ├── DatabaseError             the database is unreachable or not in the expected shape
    │   ├── DatabaseUnreachable   no connection to the database (down, starting, wrong address)
    │   ├── SchemaChangeRefused   a mirror-table change that cannot be applied in place
    │   ├── LockTimeout           a database lock (reconcile, lease) could not be taken in time
    │   └── LeaseLost             a sync pass's scope lease expired and another worker took it
    ├── GraphError                an HTTP call to Graph failed (status, code, request ids, Retry-After)
    │   ├── TransportError        connection reset, DNS, TLS, timeout: no HTTP answer   [retryable]
    │   │   └── ConnectError      the connection was never made: the request was not sent [retryable]
    │   ├── AuthError             401, or the identity platform refused the credentials
    │   │   └── SignInRequired    a delegated account must sign in again (`syncer login NAME`)
    │   ├── BadRequestError       400 (includes Graph's subscription validation failures)
    │   ├── ForbiddenError        403 (missing permission, quota reached)
    │   ├── NotFoundError         404
    │   ├── ConflictError         409
    │   ├── ResyncRequired        410 Gone: the delta token is no longer valid, enumerate again
    │   ├── ForeignOriginError    a link points outside the configured Graph origin: not called
    │   ├── PagingError           Graph's paging broke its contract (bad nextLink, a loop, a non-object item)
    │   ├── ThrottledError        429                                                  [retryable]
    │   ├── ServerError           5xx                                    [retryable: 500/502/503/504]
    │   └── RetryBudgetExhausted  retries ran out; wraps the last retryable error
    ├── NotificationError         a notification POST is malformed or forged (receiver side)
    └── ReconcileError            a reconcile plan cannot be applied (quota, validation failure, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SECRET_PATTERNS = [
    # bearer tokens and JWTs
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "***jwt***"),
    # key=value style secrets in query strings and form bodies
    (
        re.compile(r"(?i)((?:client_secret|client_assertion|access_token|refresh_token|clientstate|password)[\"']?\s*[=:]\s*[\"']?)[^\"'&\s,}]+"),
        r"\1***",
    ),
    # delta and skip tokens in links (`$deltatoken=`, `$skiptoken=`, drive `token=` and `delta(token='...')`):
    # a deltaLink reads a scope's changes, so its token is treated like a credential.
    # ``%24`` is ``$`` URL-encoded, as some nextLinks carry it.
    (re.compile(r"(?i)((?:[?&]|\$|%24)(?:delta|skip)?token=)[^&\s\"'#:,)\]]+"), r"\1***"),
    (re.compile(r"(?i)(delta\(token=)'?[^)\s\"]*"), r"\1***"),
]


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a credential in *text* by ``***``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def truncate(text: str, limit: int = 500) -> str:
    """Shorten *text* for messages and logs, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class SyncerError(Exception):
    """Root of every error syncer raises on purpose."""

    retryable: bool = False


# --- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecLocation:
    """Where in a YAML file a problem is: file, 1-based line (0 if unknown) and field path."""

    file: str
    line: int
    path: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}" if self.path else where


class SpecError(SyncerError):
    """subscriptions.yaml does not say what syncer needs; names where, what was expected and found."""

    def __init__(self, location: SpecLocation, expected: str, found: str = "", hint: str = "") -> None:
        self.location = location
        self.expected = expected
        self.found = found
        self.hint = hint
        message = f"{location}: expected {expected}"
        if found:
            message += f", found {found}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class SpecErrors(SpecError):
    """Several problems found in one spec; ``errors`` lists each, in file order."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.location.line, e.location.path))
        first = self.errors[0]
        SyncerError.__init__(self, "\n".join(str(e) for e in self.errors))
        self.location, self.expected, self.found, self.hint = (
            first.location,
            first.expected,
            first.found,
            first.hint,
        )


class ConfigError(SyncerError):
    """A setting, environment variable or secret reference cannot be resolved."""


# --- the database ---------------------------------------------------------------------------------


class DatabaseError(SyncerError):
    """The database is unreachable, or not in the shape syncer expects."""

    retryable = True


class DatabaseUnreachable(DatabaseError):
    """No connection to the database could be made or kept: it is down, still starting, or elsewhere."""


class SchemaChangeRefused(DatabaseError):
    """A mirror-table change cannot be applied in place (a column's type changed, a key changed)."""

    retryable = False


class LockTimeout(DatabaseError):
    """A database lock could not be taken within the allowed time."""


class LeaseLost(DatabaseError):
    """A sync pass stalled past its scope lease and another worker took the scope: the pass stops
    without writing (its page transaction is rolled back); the other worker's pass carries on."""

    retryable = False


# --- Graph ----------------------------------------------------------------------------------------


class GraphError(SyncerError):
    """An HTTP call to Microsoft Graph (or the identity platform) failed.

    Carries what is needed to act on it and to ask Microsoft about it: the HTTP status, Graph's
    error ``code`` and ``message``, the ``request-id`` Graph assigned and the ``client-request-id``
    we sent, and ``Retry-After`` in seconds when the service gave one. The message and body are
    truncated and masked so that ``str(error)`` is safe to log.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.graph_message = message
        self.method = method
        self.url = mask_secrets(url) if url else url
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after
        self.body = truncate(mask_secrets(body)) if body else body
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.method and self.url:
            parts.append(f"{self.method} {self.url}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        text = ": ".join([*parts[:1], " ".join(parts[1:])] if len(parts) > 1 else parts)
        text = f"{text}: {truncate(mask_secrets(self.graph_message))}" if text else truncate(mask_secrets(self.graph_message))
        ids = []
        if self.request_id:
            ids.append(f"request-id={self.request_id}")
        if self.client_request_id:
            ids.append(f"client-request-id={self.client_request_id}")
        if self.retry_after is not None:
            ids.append(f"retry-after={self.retry_after:g}s")
        return f"{text} [{', '.join(ids)}]" if ids else text


class TransportError(GraphError):
    """No HTTP answer: connection refused or reset, TLS failure, timeout."""

    retryable = True


class ConnectError(TransportError):
    """The connection could not be made (refused, DNS, connect timeout): the request was never sent,
    so even a non-idempotent call may be repeated."""


class AuthError(GraphError):
    """401 from Graph, or the identity platform refused to issue a token."""


class SignInRequired(AuthError):
    """A delegated account has no usable sign-in: never signed in, signed out, or its refresh token was
    refused (``invalid_grant``: password reset, sessions revoked, consent withdrawn). Not retryable: only
    the user can fix it, with ``syncer login NAME``. ``tenant`` is the spec's entry, ``account`` its UPN."""

    def __init__(self, tenant: str, account: str, reason: str, *, code: str | None = None) -> None:
        self.tenant = tenant
        self.account = account
        super().__init__(
            f"account {account} (tenant entry {tenant!r}) must sign in again: run `syncer login {tenant}` "
            f"({truncate(reason, 200)})",
            code=code,
        )


class BadRequestError(GraphError):
    """400: the request was malformed or Graph refused it (including failed subscription validation)."""


class ForbiddenError(GraphError):
    """403: a permission is missing, or a quota is reached."""


class NotFoundError(GraphError):
    """404: the resource (or subscription) does not exist, or no longer does."""


class ConflictError(GraphError):
    """409: the request conflicts with existing state (e.g. a duplicate subscription)."""


class ResyncRequired(GraphError):
    """410 Gone: the delta token expired or the sync state was reset; enumerate the scope again.

    ``location`` is the URL Graph offered to restart from, when it sent one.
    """

    def __init__(self, message: str, *, location: str | None = None, **kwargs: object) -> None:
        self.location = location
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class ForeignOriginError(GraphError):
    """A URL to call (a nextLink, a deltaLink, a stored link) points outside the configured Graph origin.

    Nothing was sent: the request would have carried our bearer token to another host. ``handed`` names
    the annotation (``@odata.nextLink``...) when Graph handed us the link in a page; None when it was
    the URL we were asked to call.
    """

    def __init__(self, message: str, *, handed: str | None = None, **kwargs: object) -> None:
        self.handed = handed
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class PagingError(GraphError):
    """Graph's paging broke its contract: a nextLink or deltaLink that is empty or not a string, a nextLink
    seen before in the round (a loop), a ``value`` item that is not an object, or more pages than the cap."""


class ThrottledError(GraphError):
    """429: Graph asks us to slow down for ``retry_after`` seconds."""

    retryable = True


class ServerError(GraphError):
    """5xx from Graph; 500, 502, 503 and 504 are worth retrying, others (501, 505...) are not."""

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in (500, 502, 503, 504, 509)


class RetryBudgetExhausted(GraphError):
    """Retries ran out before the call succeeded; ``last_error`` is the final retryable failure."""

    def __init__(self, message: str, *, last_error: GraphError, attempts: int, elapsed: float) -> None:
        self.last_error = last_error
        self.attempts = attempts
        self.elapsed = elapsed
        super().__init__(
            f"{message} after {attempts} attempts in {elapsed:.1f}s; last error: {last_error}",
            status=last_error.status,
            code=last_error.code,
            request_id=last_error.request_id,
            client_request_id=last_error.client_request_id,
            retry_after=last_error.retry_after,
        )


def graph_error_class(status: int) -> type[GraphError]:
    """The :class:`GraphError` subclass for an HTTP *status*."""
    if status == 401:
        return AuthError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 410:
        return ResyncRequired
    if status == 429:
        return ThrottledError
    if status >= 500:
        return ServerError
    if status == 400:
        return BadRequestError
    return GraphError


# --- receiver and reconcile ------------------------------------------------------------------------


class NotificationError(SyncerError):
    """A notification POST is malformed or fails a check (clientState, JWT, HMAC); ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ReconcileError(SyncerError):
    """A reconcile plan cannot be computed or applied (quota, validation failure, ...)."""
