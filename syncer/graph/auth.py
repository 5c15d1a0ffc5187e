"""Access tokens for Graph: clouds, and app-only credentials on MSAL.

The client only needs one thing from authentication: a bearer token for a set of scopes, and a way
to say "that token was refused, get a new one". That is the :class:`Credential` protocol. The two
app-only implementations here wrap MSAL's ``ConfidentialClientApplication`` (client secret, or a
certificate); the delegated credential (a signed-in user, token cache on disk) is a third implementation
of the same protocol, in :mod:`syncer.graph.delegated`, so callers never change.

MSAL builds its app once per credential (the constructor fetches the OpenID configuration), keeps
tokens in its in-memory cache and treats a token as expired five minutes early; on top of that we
keep the current token ourselves so that the hot path (every page of a delta round) costs a clock
read, not an MSAL cache lookup.

TLS: ``REQUESTS_CA_BUNDLE`` in the environment makes requests ignore ``Session.verify`` (and MSAL's
``verify=``), so when a CA bundle is given (emulator, private cloud) every call passes ``verify=``
itself through :class:`_VerifyingHttpClient`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import msal
import requests

from syncer.errors import AuthError, TransportError, mask_secrets, truncate

if TYPE_CHECKING:

    from syncer.spec import Spec

# Tokens are refreshed this long before they expire, so that a token never lapses mid-request.
# MSAL itself treats a token as expired 5 minutes early; we agree with it.
REFRESH_MARGIN = 300.0

_MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


@dataclass(frozen=True)
class Cloud:
    """Where a tenant lives: the Graph root (no version) and the token authority host."""

    name: str
    graph_url: str
    authority_host: str
    ca_bundle: str | None = None

    @property
    def scope(self) -> str:
        """The app-only scope for this cloud's Graph (tokens are cloud-specific)."""
        return graph_scope(self.graph_url)


# Notes §9. The scope is "{graph root}/.default" in each cloud (an inference: the docs show the global one).
CLOUDS: dict[str, Cloud] = {
    "global": Cloud("global", "https://graph.microsoft.com", "https://login.microsoftonline.com"),
    "usgov": Cloud("usgov", "https://graph.microsoft.us", "https://login.microsoftonline.us"),
    "usgov-dod": Cloud("usgov-dod", "https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
    "china": Cloud("china", "https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}


def cloud(
    name: str,
    *,
    graph_url: str | None = None,
    authority_host: str | None = None,
    ca_bundle: str | None = None,
) -> Cloud:
    """A named national cloud, or ``custom`` (emulator, private endpoint) from explicit URLs."""
    if name == "custom":
        if not graph_url or not authority_host:
            raise ValueError("cloud 'custom' needs graph_url and authority_host")
        return Cloud("custom", graph_url.rstrip("/"), authority_host.rstrip("/"), ca_bundle)
    try:
        known = CLOUDS[name]
    except KeyError:
        raise ValueError(
            f"unknown cloud {name!r}: expected one of {', '.join([*CLOUDS, 'custom'])}"
        ) from None
    return Cloud(known.name, graph_url or known.graph_url, authority_host or known.authority_host, ca_bundle)


def graph_root(graph_url: str) -> str:
    """``https://host[:port]`` plus any path prefix, without a trailing ``/v1.0`` or ``/beta``."""
    url = graph_url.rstrip("/")
    for version in ("/v1.0", "/beta"):
        if url.endswith(version):
            return url[: -len(version)]
    return url


def graph_scope(graph_url: str) -> str:
    """The ``.default`` scope of the Graph at *graph_url*."""
    return f"{graph_root(graph_url)}/.default"


@runtime_checkable
class Credential(Protocol):
    """Something that hands out bearer tokens for Graph.

    ``token`` returns a valid access token for *scopes*, from cache when it is fresh. After Graph
    answered 401 the caller passes the token it used as *refused*: if that is still the cached one
    a new token is obtained, otherwise (another thread already refreshed it) the newer cached token
    is returned, so a burst of 401s costs one token request, not one each.
    ``tenant_id`` keys the per-tenant concurrency limit. Implementations must be thread-safe and
    must never put a secret or token in an exception message.
    """

    tenant_id: str

    def token(self, scopes: tuple[str, ...], *, refused: str | None = None) -> str: ...


class _VerifyingHttpClient:
    """The http_client MSAL calls, on our pooled session, passing ``verify=`` and a timeout on every call."""

    def __init__(self, session: requests.Session, *, verify: str | bool, timeout: float) -> None:
        self._session = session
        self._verify = verify
        self._timeout = timeout

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, params=params, headers=headers, verify=self._verify, **kwargs)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(
            url, params=params, data=data, headers=headers, verify=self._verify, **kwargs
        )

    def close(self) -> None:
        self._session.close()


def _authority_host(authority: str) -> str:
    if not authority.startswith("https://"):
        # MSAL refuses it too, but later and less clearly.
        raise ValueError(f"authority must be an https:// URL, found {authority!r}")
    return authority.rstrip("/")


def _instance_discovery(authority_host: str, override: bool | None) -> bool:
    # Instance discovery asks login.microsoftonline.com about the authority: pointless (and
    # unreachable offline) for a host that is not Microsoft's.
    if override is not None:
        return override
    return (urlsplit(authority_host).hostname or "").lower() in _MICROSOFT_AUTHORITY_HOSTS


class _MsalCredential:
    """Shared machinery of the app-only credentials: one MSAL app, built lazily, and a token cache."""

    def __init__(
        self,
        authority: str,
        tenant_id: str,
        client_id: str,
        *,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        instance_discovery: bool | None = None,
    ) -> None:
        self.authority_host = _authority_host(authority)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.instance_discovery = _instance_discovery(self.authority_host, instance_discovery)
        self._lock = threading.Lock()
        self._app: msal.ConfidentialClientApplication | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.acquired = 0  # tokens obtained from MSAL (not from our cache): for tests and doctor

    @property
    def authority_url(self) -> str:
        """The full authority MSAL is given: host plus tenant."""
        return f"{self.authority_host}/{self.tenant_id}"

    def _client_credential(self) -> str | dict[str, str]:
        raise NotImplementedError

    def _credential_fingerprint(self) -> str:
        raise NotImplementedError

    def _build_app(self) -> msal.ConfidentialClientApplication:
        session = requests.Session()
        http_client = _VerifyingHttpClient(session, verify=self.ca_bundle or True, timeout=self.timeout)
        try:
            return msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._client_credential(),
                authority=self.authority_url,
                http_client=http_client,
                instance_discovery=self.instance_discovery,
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            raise TransportError(
                f"cannot reach the identity platform at {self.authority_host}: {type(e).__name__}"
            ) from e
        except ValueError as e:
            # MSAL raises ValueError for an unusable authority or discovery document; its text
            # never contains our secret, but mask anyway.
            raise AuthError(
                f"MSAL refused the configuration for {self.authority_url}: {truncate(mask_secrets(str(e)))}"
            ) from e

    def _app_instance(self) -> msal.ConfidentialClientApplication:
        # Called with self._lock held.
        if self._app is None:
            key = (self.authority_url, self.client_id, self._credential_fingerprint(), self.ca_bundle)
            with _APPS_LOCK:
                app = _APPS.get(key)
            if app is None:
                # Built outside the registry lock: the constructor fetches the OpenID configuration,
                # and a slow identity platform of one tenant must not hold up the others.
                built = self._build_app()
                with _APPS_LOCK:
                    app = _APPS.setdefault(key, built)
            self._app = app
        return self._app

    def token(self, scopes: tuple[str, ...], *, refused: str | None = None) -> str:
        """A bearer token for *scopes* (cached until REFRESH_MARGIN before expiry); never *refused*."""
        scopes = tuple(scopes)
        with self._lock:
            now = time.monotonic()
            cached = self._tokens.get(scopes)
            force_refresh = refused is not None and (cached is None or cached[0] == refused)
            if cached and not force_refresh and now < cached[1]:
                return cached[0]
            app = self._app_instance()
            if force_refresh:
                # MSAL's acquire_token_for_client refuses force_refresh; dropping its cached
                # app tokens has the same effect.
                app.remove_tokens_for_client()
            try:
                result = app.acquire_token_for_client(list(scopes))
            except requests.RequestException as e:
                raise TransportError(
                    f"cannot reach the token endpoint of {self.authority_url}: {type(e).__name__}"
                ) from e
            if not result or "access_token" not in result:
                raise _auth_error(result or {}, self.authority_url, self.client_id)
            expires_in = float(result.get("expires_in", 3600))
            token = str(result["access_token"])
            # Refresh REFRESH_MARGIN early, but never cache a short-lived token as "fresh" for less than a second.
            self._tokens[scopes] = (token, now + max(expires_in - REFRESH_MARGIN, 1.0))
            if result.get("token_source") != "cache":
                self.acquired += 1
            return token

    def __repr__(self) -> str:
        return f"{type(self).__name__}(authority={self.authority_url!r}, client_id={self.client_id!r})"


def _auth_error(result: dict[str, Any], authority: str, client_id: str) -> AuthError:
    error = str(result.get("error", "no_token"))
    description = str(result.get("error_description", "the identity platform returned no access token"))
    # AADSTS descriptions are multi-line with trace ids; the first line is the useful part.
    first_line = description.splitlines()[0] if description else description
    return AuthError(
        f"token request for client {client_id} at {authority} refused: {first_line}",
        code=error,
        request_id=str(result["correlation_id"]) if result.get("correlation_id") else None,
    )


_APPS: dict[tuple[str, str, str, str | None], msal.ConfidentialClientApplication] = {}
_APPS_LOCK = threading.Lock()


def _fingerprint(*parts: str) -> str:
    # The registry key must tell credentials apart without holding the secret itself.
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class ClientSecretCredential(_MsalCredential):
    """App-only credential with a client secret."""

    def __init__(self, authority: str, tenant_id: str, client_id: str, secret: str, **kwargs: Any) -> None:
        super().__init__(authority, tenant_id, client_id, **kwargs)
        if not secret:
            raise ValueError("client secret is empty")
        self._secret = secret

    def _client_credential(self) -> str:
        return self._secret

    def _credential_fingerprint(self) -> str:
        return _fingerprint("secret", self._secret)


class CertificateCredential(_MsalCredential):
    """App-only credential with a certificate: a PEM private key plus its thumbprint or its public certificate.

    With ``public_certificate`` MSAL sends the chain (``x5c``) and a SHA-256 thumbprint (PS256);
    with only ``thumbprint`` it sends the SHA-1 thumbprint (RS256).
    """

    def __init__(
        self,
        authority: str,
        tenant_id: str,
        client_id: str,
        private_key_pem: str,
        thumbprint: str | None = None,
        public_certificate: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(authority, tenant_id, client_id, **kwargs)
        if "PRIVATE KEY" not in private_key_pem:
            raise ValueError("private_key_pem is not a PEM private key")
        if not thumbprint and not public_certificate:
            raise ValueError("a certificate credential needs a thumbprint or the public certificate")
        self._private_key = private_key_pem
        self.thumbprint = thumbprint.replace(":", "").upper() if thumbprint else None
        self.public_certificate = public_certificate

    def _client_credential(self) -> dict[str, str]:
        credential = {"private_key": self._private_key}
        if self.thumbprint:
            credential["thumbprint"] = self.thumbprint
        if self.public_certificate:
            credential["public_certificate"] = self.public_certificate
        return credential

    def _credential_fingerprint(self) -> str:
        return _fingerprint("cert", self._private_key, self.thumbprint or "", self.public_certificate or "")


def __getattr__(name: str) -> Any:
    # The delegated credential moved to syncer.graph.delegated; its names stay importable from here.
    if name in {"DelegatedCredential", "SignedIn", "SIGNED_OUT_RETRY", "delegated_credential", "signed_in"}:
        from syncer.graph import delegated

        return getattr(delegated, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def credential_from_spec(spec: Spec, tenant_name: str) -> Credential:
    """The credential of tenant *tenant_name* in a loaded spec (``syncer.spec.Spec``): certificate, secret or delegated.

    Secrets are resolved here, at the last moment, so they live only inside the credential object.
    ``cloud: emulator`` specs are resolved against the emulator's info file first.
    """
    spec = spec.resolve_emulator()
    tenant = spec.tenant(tenant_name)
    if tenant.delegated:
        from syncer.graph.delegated import delegated_credential

        return delegated_credential(spec, tenant_name)
    graph = spec.graph
    common: dict[str, Any] = {"ca_bundle": str(graph.ca_bundle) if graph.ca_bundle else None}
    if tenant.certificate is not None:
        cert = tenant.certificate
        public_certificate = cert.certificate.read_text() if cert.certificate else None
        return CertificateCredential(
            graph.authority_host,
            tenant.tenant_id,
            tenant.client_id,
            cert.private_key.resolve(),
            thumbprint=cert.thumbprint,
            public_certificate=public_certificate,
            **common,
        )
    if tenant.client_secret is not None:
        return ClientSecretCredential(
            graph.authority_host, tenant.tenant_id, tenant.client_id, tenant.client_secret.resolve(), **common
        )
    raise ValueError(f"tenant {tenant_name!r} has neither a client secret nor a certificate")
