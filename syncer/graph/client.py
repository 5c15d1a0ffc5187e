"""GraphClient: the one HTTP client of Microsoft Graph in syncer.

Everything that talks to Graph goes through :meth:`GraphClient.request`: it adds a token and a fresh
``client-request-id``, holds a per-tenant and per-mailbox in-flight slot (:mod:`.limits`), applies a
timeout, turns failures into typed errors (:mod:`.responses`) and retries what Graph says may be
retried within a budget (:mod:`.retry`). Paging (:mod:`.delta`), JSON batching (:mod:`.batch`) and
subscriptions (:mod:`.subscriptions`) are built on it.

Speed matters on the paging path (100k-user delta rounds): one pooled ``requests.Session``, bodies
parsed once with orjson, no per-item work, and debug logging formatted only when enabled.

Security: the token and secrets never reach a log line or an error string; URLs are masked; the
client refuses to send its token to an absolute URL outside its Graph origin.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from syncer.errors import ConnectError, ForeignOriginError, GraphError, TransportError, mask_secrets
from syncer.graph import limits
from syncer.graph.auth import Credential, graph_root, graph_scope
from syncer.graph.responses import GraphResponse, error_from_response
from syncer.graph.retry import RetryPolicy, RetryState, is_idempotent, retry_line

if TYPE_CHECKING:
    from syncer.graph.batch import BatchRequest, BatchResult
    from syncer.graph.budget import TenantBudget
    from syncer.graph.delta import DeltaRound, Page
    from syncer.spec import Spec

log = logging.getLogger("syncer.graph")

DEFAULT_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds: no call goes without a timeout."""

_USER_AGENT = "syncer-graph-client"

DEFAULT_MAX_PAGES = 100_000
"""Pages one paging run may follow before it stops with PagingError: a guard against a round that never
ends. Generous: a 1M-user tenant is ~1,000 pages at 999 per page, ~10,000 at Graph's default 100."""


class GraphClient:
    """A client of one Graph (one cloud or the emulator) for one tenant's credential.

    ``graph_url`` is the Graph root (``https://graph.microsoft.com``) or a versioned base
    (``.../v1.0``, ``.../beta``); paths given to :meth:`request` are relative to the versioned base.
    Thread-safe: many threads may share one client.
    """

    def __init__(
        self,
        graph_url: str,
        credential: Credential,
        *,
        ca_bundle: str | None = None,
        max_in_flight_per_tenant: int = 16,
        per_mailbox: int = 4,
        retry: RetryPolicy | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        scopes: tuple[str, ...] | None = None,
        session: requests.Session | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        if max_in_flight_per_tenant < 1 or per_mailbox < 1:
            raise ValueError("concurrency caps must be >= 1")
        if max_pages < 1:
            raise ValueError("max_pages must be >= 1")
        root = graph_root(graph_url)
        self.root = root
        stripped = graph_url.rstrip("/")
        self.base_url = stripped if stripped != root else f"{root}/v1.0"
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"graph_url must be an absolute https URL, found {graph_url!r}")
        self._origin = _origin(self.base_url)
        self.max_pages = max_pages
        """Default page cap of :meth:`iter_pages` and :meth:`delta`."""
        self.credential = credential
        self.tenant = credential.tenant_id
        self.scopes = scopes or (graph_scope(root),)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.max_in_flight_per_tenant = max_in_flight_per_tenant
        self.per_mailbox = per_mailbox
        # verify= is passed on every call: with REQUESTS_CA_BUNDLE set, requests ignores Session.verify.
        self._verify: str | bool = ca_bundle or True
        self._own_session = session is None
        self._settings: dict[str, Any] | None = None  # see _environment
        self.session = session or requests.Session()
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=max(max_in_flight_per_tenant, 10), max_retries=0
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._sleep: Callable[[float], None] = time.sleep
        from syncer.graph.subscriptions import Subscriptions

        self.subscriptions = Subscriptions(self)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Spec, tenant_name: str, **kwargs: Any) -> GraphClient:
        """A client for tenant *tenant_name* of a loaded subscriptions.yaml (cloud, URLs, CA, credential)."""
        from syncer.graph.auth import credential_from_spec

        spec = spec.resolve_emulator()
        credential = credential_from_spec(spec, tenant_name)
        ca_bundle = str(spec.graph.ca_bundle) if spec.graph.ca_bundle else None
        # The tenant's configured concurrency: every client built from the spec (reconcile's, the worker's)
        # then names the same process-wide budget (syncer.graph.limits).
        kwargs.setdefault("max_in_flight_per_tenant", spec.tenant(tenant_name).concurrency)
        return cls(spec.graph.graph_url, credential, ca_bundle=ca_bundle, **kwargs)

    def close(self) -> None:
        """Close the pooled connections (only when the client created its session)."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GraphClient({self.base_url!r}, tenant={self.tenant!r})"

    @property
    def budget(self) -> TenantBudget:
        """This tenant's budget of requests in flight, shared by every client of the tenant in the process."""
        return limits.tenant_semaphore(self.tenant, self.max_in_flight_per_tenant)

    # --- the one request path -------------------------------------------------------------------

    def url_for(self, url_or_path: str) -> str:
        """The absolute URL for a path relative to the versioned base, or an absolute URL checked against our origin.

        ForeignOriginError (nothing sent) for an absolute URL on another scheme, host or port: a nextLink,
        deltaLink or stored link pointing elsewhere must not receive our bearer token.
        """
        parts = urlsplit(url_or_path)
        if parts.netloc or parts.scheme.lower() in ("https", "http") or url_or_path.lstrip().startswith("//"):
            origin = _origin(url_or_path)
            if origin != self._origin:
                # Only the origin is named: the rest of the link may carry a delta token.
                raise ForeignOriginError(
                    f"refusing to send a Graph token to {origin or 'a URL without scheme or host'} (client is for {self._origin})"
                )
            return url_or_path
        return f"{self.base_url}/{url_or_path.lstrip('/')}"

    def request(
        self,
        method: str,
        url_or_path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        mailbox: str | Mapping[str, int] | None = None,
        retry: RetryPolicy | None = None,
    ) -> GraphResponse:
        """Send one Graph call with retries; return the successful response or raise a typed GraphError.

        *mailbox*: the mailbox whose slot the call holds (by default the one its URL works in), or for a
        ``$batch`` envelope how many slots of each mailbox its items hold (:func:`syncer.graph.limits.slots`)."""
        method = method.upper()
        url = self.url_for(url_or_path)
        if mailbox is None:
            mailbox = limits.mailbox_of(url)
        repeatable = is_idempotent(method, idempotent)
        body = orjson.dumps(json) if json is not None else None
        state = RetryState(retry or self.retry, what=f"{method} {_short(url)}")
        refused: str | None = None
        refreshed = False
        while True:
            attempt = state.begin_attempt()
            client_request_id = str(uuid.uuid4())
            try:
                response, token = self._send(method, url, body, headers, client_request_id, mailbox, refused)
            except GraphError as failure:
                wait = state.next_wait(failure, idempotent=repeatable)
                self._log_retry(failure, attempt, wait)
                self._sleep(wait)
                continue
            if response.status < 400:
                return response
            error = error_from_response(
                response.status,
                response.headers,
                response.content,
                method=method,
                url=url,
                client_request_id=client_request_id,
            )
            if response.status == 401 and not refreshed:
                # Once per call: the token may have been revoked or have expired early on the server.
                refreshed = True
                refused = token
                state.attempts -= 1  # a token refresh is not a retry of the request
                log.info("401 from Graph, refreshing the token once: %s", error)
                continue
            wait = state.next_wait(error, idempotent=repeatable)
            self._log_retry(error, attempt, wait)
            self._sleep(wait)

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        extra_headers: Mapping[str, str] | None,
        client_request_id: str,
        mailbox: str | Mapping[str, int] | None,
        refused: str | None,
    ) -> tuple[GraphResponse, str]:
        token = self.credential.token(self.scopes, refused=refused)
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": client_request_id,
            "return-client-request-id": "true",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        if extra_headers:
            headers.update(extra_headers)
        started = time.perf_counter()
        mailboxes = {mailbox: 1} if isinstance(mailbox, str) else (mailbox or {})
        with limits.slots(
            self.tenant, mailboxes, per_tenant=self.max_in_flight_per_tenant, per_mailbox=self.per_mailbox
        ) as budget:
            try:
                raw = self.session.send(
                    self._prepare(method, url, body, headers), timeout=self.timeout, allow_redirects=True,
                    **self._environment(),
                )
                content = raw.content  # read the body while holding the slot: it is part of the exchange
            except requests.RequestException as e:
                raise _transport_error(e, method, url, client_request_id) from e
            if raw.status_code == 429:
                # Throttling is per tenant and app: slow every thread's calls, not just this one's retry.
                # A Retry-After longer than we wait for fails the call instead: it pauses the tenant no longer.
                retry_after = _retry_after(raw.headers.get("Retry-After"))
                budget.throttled(min(retry_after, self.retry.max_retry_after) if retry_after else None)
            elif raw.status_code < 400:
                budget.succeeded()
        response = GraphResponse(raw.status_code, raw.headers, content, client_request_id=client_request_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d in %.1f ms, %d bytes [request-id=%s, client-request-id=%s]",
                method,
                _short(url),
                response.status,
                (time.perf_counter() - started) * 1000,
                len(content),
                response.request_id,
                client_request_id,
            )
        return response, token

    def _prepare(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> requests.PreparedRequest:
        """The request ``Session.request`` would send, without what it costs a call and syncer does not use.

        ``Session.prepare_request`` copies the session's cookie jar twice and looks for a ``.netrc`` file on
        every call (whose entry for the host would replace our bearer token with Basic credentials); the
        session's headers, cookies and hooks are still applied here, and sending goes through
        ``Session.send`` as before (redirects, cookies kept, proxies and CA bundle: :meth:`_environment`)."""
        session = self.session
        merged = CaseInsensitiveDict(session.headers)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method, url=url, headers=merged, data=body or {}, cookies=session.cookies, hooks=session.hooks
        )
        return prepared

    def _environment(self) -> dict[str, Any]:
        """What ``Session.request`` would take from the environment for our calls (proxies, CA bundle), read once.

        ``requests`` reads it again on every call (every variable of the environment scanned for proxies,
        ``no_proxy`` matched against the host): ~0.1 ms of CPU, as much as a pass of a small scope spends on
        a SQL statement (bench/tenant.py). Every call goes to the client's origin (:meth:`url_for`) and the
        proxies chosen depend only on the origin, so one reading per client gives the same answer; a change
        to the environment is seen by the clients made after it."""
        if self._settings is None:
            self._settings = dict(self.session.merge_environment_settings(self.base_url, {}, None, self._verify, None))
        return self._settings

    def _log_retry(self, error: GraphError, attempt: int, wait: float) -> None:
        log.warning("%s", retry_line(error, attempt, wait))
        log.debug("retrying after: %s", error)

    # --- conveniences on top of request ---------------------------------------------------------

    def get_json(
        self, url_or_path: str, *, headers: Mapping[str, str] | None = None, mailbox: str | None = None
    ) -> Any:
        """GET and return the parsed JSON body."""
        return self.request("GET", url_or_path, headers=headers, mailbox=mailbox).json()

    def iter_pages(
        self, url_or_path: str, *, headers: Mapping[str, str] | None = None, mailbox: str | None = None
    ) -> Iterator[Page]:
        """Follow ``@odata.nextLink`` lazily from *url_or_path*; the last page carries ``delta_link`` if any."""
        from syncer.graph.delta import iter_pages

        return iter_pages(self, url_or_path, headers=headers, mailbox=mailbox, max_pages=self.max_pages)

    def delta(
        self, url_or_path: str, *, headers: Mapping[str, str] | None = None, mailbox: str | None = None
    ) -> DeltaRound:
        """One delta round from an initial delta URL or a saved deltaLink (iterate it; then read ``.delta_link``)."""
        from syncer.graph.delta import DeltaRound

        return DeltaRound(self, url_or_path, headers=headers, mailbox=mailbox, max_pages=self.max_pages)

    def batch(
        self, requests: Iterable[BatchRequest], *, retry: RetryPolicy | None = None
    ) -> list[BatchResult]:
        """Run requests through ``/$batch`` (chunks of 20); one result per request, in order."""
        from syncer.graph.batch import run_batch

        return run_batch(self, list(requests), retry=retry or self.retry)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds when it is a number (an HTTP date is left to the retry policy)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _short(url: str) -> str:
    # Log lines and error strings carry the URL masked, skip and delta tokens included: a deltaLink
    # reads a scope's changes, so its token is treated like a credential (the path and the other
    # query options are kept: they say which collection and which options a paging problem was on).
    return mask_secrets(url)


def _origin(url: str) -> str:
    """``scheme://host:port`` of *url*, lower-case, with the scheme's default port made explicit ('' if none)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    if not scheme or not host or parts.username is not None or parts.password is not None:
        # user@host links are refused too: they make the apparent host differ from the real one.
        return f"{scheme}://{parts.netloc}".lower() if scheme and parts.netloc else ""
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


def _transport_error(
    e: requests.RequestException, method: str, url: str, client_request_id: str
) -> TransportError:
    """The typed error for a failure with no HTTP answer; ConnectError when nothing was sent."""
    name = type(e).__name__
    reason = _root_cause(e)
    message = f"{name}: {reason}" if reason else name
    kwargs: dict[str, Any] = {"method": method, "url": url, "client_request_id": client_request_id}
    if isinstance(e, requests.exceptions.SSLError):
        error = TransportError(f"TLS failure: {message}", **kwargs)
        # A certificate that does not verify will not verify on the next attempt either.
        error.retryable = False
        return error
    if isinstance(e, requests.exceptions.ConnectTimeout) or (
        isinstance(e, requests.exceptions.ConnectionError) and _never_connected(e)
    ):
        return ConnectError(f"could not connect: {message}", **kwargs)
    return TransportError(message, **kwargs)


def _never_connected(e: BaseException) -> bool:
    # urllib3 wraps "connection refused" / DNS failures as NewConnectionError (NameResolutionError is a subclass).
    from urllib3.exceptions import NewConnectionError

    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        args = getattr(current, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return False


def _root_cause(e: BaseException) -> str:
    text = str(e)
    # urllib3 messages embed the pool repr and the URL; keep them short and masked.
    return mask_secrets(text[:300])
