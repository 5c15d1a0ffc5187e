"""Running the receiver: its configuration (``ServeConfig``), building the app from it, and gunicorn.

Split from :mod:`syncer.receiver.app`, which is the app itself (a request is :mod:`syncer.receiver.receive`); this module is
how a process gets one: from ``SYNCER_*`` variables or a spec, with its engine, decryption keys and
token validator, served by gunicorn with the worker settings documented on :class:`ServeConfig`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from syncer import database
from syncer.errors import ConfigError, SyncerError
from syncer.metrics import Metrics
from syncer.receiver.app import create_app
from syncer.receiver.receive import ReceiverSettings
from syncer.receiver.rich import (
    DEFAULT_ISSUER_TEMPLATE,
    DEFAULT_LEEWAY,
    DecryptionKey,
    JwksCache,
    KeyRing,
    TokenValidator,
    load_private_key,
)

log = logging.getLogger(__name__)

#: Where the identity platform publishes its signing keys (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#validation-tokens-in-the-change-notification).
DEFAULT_JWKS_URL = "https://login.microsoftonline.com/common/discovery/v2.0/keys"


@dataclass(frozen=True)
class KeySource:
    """A rich-notification private key: the certificate id Graph echoes, and how to read its PEM.

    The PEM is read when the app is built (in each worker), never stored in the configuration."""

    certificate_id: str
    read_pem: Callable[[], bytes] = field(repr=False)
    where: str = ""  # for error messages: a path or a secret reference, never the value

    @classmethod
    def from_file(cls, certificate_id: str, path: Path) -> KeySource:
        return cls(certificate_id, path.read_bytes, str(path))


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``syncer serve`` needs; also read from ``SYNCER_*`` variables by :meth:`from_env`.

    Worker settings (gunicorn), chosen by database unless set:

    * **PostgreSQL**: ``gevent`` workers, one per CPU, 1,000 connections each. Every request waits
      for the commit of its batch; with threads each such wait is an OS context switch plus a fight
      for the GIL, which on 2 cores cost more CPU than the request's own work (measured: 14-20 context
      switches and ~650 us of CPU per request with gthread, under 1 and ~400 us with gevent, 1.6-1.8x
      the requests per second). psycopg 3 cooperates with gevent by itself.
    * **SQLite**: one ``gthread`` worker with ``threads`` = 32. sqlite3 calls block, and under gevent
      a commit would stall every request of the process; threads keep parsing while one commits.
      One process: SQLite has one writer at a time, and processes contending for its lock back off
      by sleeping (p99 over a second measured with 2 workers).

    In both, the group committer batches the requests *of one process*, so each process needs many
    requests in flight. ``timeout`` 30 s (a worker stuck that long is restarted), ``keepalive`` 5 s
    (Graph reuses connections), ``graceful_timeout`` 20 s so queued rows are committed before a
    worker exits.

    Request bodies (:class:`syncer.receiver.receive.ReceiverSettings`): at most ``max_body_bytes`` each, in
    within ``body_timeout`` seconds of the headers, ``body_budget_bytes`` in flight per process. The
    request line and headers keep gunicorn's own bounds (``limit_request_line`` 4094 bytes,
    ``limit_request_fields`` 100, ``limit_request_field_size`` 8190), set explicitly below.
    """

    database_url: str
    bind: str = "127.0.0.1:8000"
    workers: int | None = None  # None: CPU count on PostgreSQL, 1 on SQLite
    worker_class: str | None = None  # None: gevent on PostgreSQL, gthread on SQLite
    threads: int = 32  # gthread only
    connections: int = 1000  # gevent only: requests in flight per worker
    timeout: int = 30
    keepalive: int = 5
    graceful_timeout: int = 20
    settings: ReceiverSettings = field(default_factory=ReceiverSettings)
    app_ids: tuple[str, ...] = ()
    jwks_url: str = DEFAULT_JWKS_URL
    jwks_ca_bundle: str | None = None
    issuer_template: str = DEFAULT_ISSUER_TEMPLATE
    # Clock skew allowed on validation tokens' nbf/iat/exp (Microsoft's default: 5 minutes).
    token_leeway: float = DEFAULT_LEEWAY
    keys: tuple[KeySource, ...] = ()
    metrics_dir: str | None = None
    access_log: bool = False
    # From a spec file (syncer.receiver.specwatch): reload keys and app ids when another spec is applied.
    spec_path: Path | None = None
    spec_fingerprint: str = ""
    spec_check: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        """Read ``SYNCER_DATABASE_URL`` (required), ``SYNCER_RECEIVER_BIND``, ``SYNCER_RECEIVER_APP_IDS``
        (comma list), ``SYNCER_RECEIVER_WORKERS``, ``SYNCER_RECEIVER_WORKER_CLASS``, ``SYNCER_RECEIVER_THREADS``,
        ``SYNCER_RECEIVER_CONNECTIONS``, ``SYNCER_RECEIVER_JWKS_URL``, ``SYNCER_RECEIVER_JWKS_CA_BUNDLE``,
        ``SYNCER_RECEIVER_KEYS`` (``certId=/path/key.pem,...``), ``SYNCER_RECEIVER_NOTIFICATION_PATH``,
        ``SYNCER_RECEIVER_LIFECYCLE_PATH``, ``SYNCER_RECEIVER_MAX_BODY`` (bytes), ``SYNCER_RECEIVER_TOKEN_LEEWAY``
        (seconds), ``SYNCER_RECEIVER_BODY_TIMEOUT`` (seconds), ``SYNCER_RECEIVER_BODY_BUDGET`` (bytes per process),
        ``SYNCER_METRICS_DIR``."""
        env = os.environ if environ is None else environ
        url = env.get("SYNCER_DATABASE_URL")
        if not url:
            raise ConfigError("SYNCER_DATABASE_URL is not set (the database the receiver stores notifications in)")
        keys = []
        for entry in filter(None, (e.strip() for e in env.get("SYNCER_RECEIVER_KEYS", "").split(","))):
            cert_id, sep, path = entry.partition("=")
            if not sep or not cert_id or not path:
                raise ConfigError(f"SYNCER_RECEIVER_KEYS: expected certId=/path/to/key.pem, found {entry!r}")
            keys.append(KeySource.from_file(cert_id, Path(path)))
        settings = ReceiverSettings(
            notification_path=env.get("SYNCER_RECEIVER_NOTIFICATION_PATH", ReceiverSettings.notification_path),
            lifecycle_path=env.get("SYNCER_RECEIVER_LIFECYCLE_PATH", ReceiverSettings.lifecycle_path),
            **_body_limits(env),
        )
        return cls(
            database_url=url,
            bind=env.get("SYNCER_RECEIVER_BIND", "127.0.0.1:8000"),
            workers=int(env["SYNCER_RECEIVER_WORKERS"]) if env.get("SYNCER_RECEIVER_WORKERS") else None,
            worker_class=env.get("SYNCER_RECEIVER_WORKER_CLASS") or None,
            threads=int(env.get("SYNCER_RECEIVER_THREADS") or cls.threads),
            connections=int(env.get("SYNCER_RECEIVER_CONNECTIONS") or cls.connections),
            settings=settings,
            app_ids=tuple(a.strip() for a in env.get("SYNCER_RECEIVER_APP_IDS", "").split(",") if a.strip()),
            jwks_url=env.get("SYNCER_RECEIVER_JWKS_URL", DEFAULT_JWKS_URL),
            jwks_ca_bundle=env.get("SYNCER_RECEIVER_JWKS_CA_BUNDLE") or None,
            token_leeway=float(env.get("SYNCER_RECEIVER_TOKEN_LEEWAY") or DEFAULT_LEEWAY),
            keys=tuple(keys),
            metrics_dir=env.get("SYNCER_METRICS_DIR") or None,
        )


    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> ServeConfig:
        """The configuration a :class:`syncer.spec.Spec` implies (call ``resolve_emulator()`` first):
        its database, listen address and URL paths, the tenants' app ids as token audiences, the
        identity platform's keys of its cloud, and every encryption key (the rotated-out one too).
        *overrides* (None values ignored) replace fields, e.g. ``bind`` or ``workers``. The body limits and
        ``connections`` are read from the same ``SYNCER_RECEIVER_*`` variables as :meth:`from_env`."""
        receiver = spec.receiver
        notification_path = urlsplit(receiver.notification_url).path or "/"
        lifecycle_path = urlsplit(receiver.lifecycle_url).path or "/" if receiver.lifecycle_url else "/lifecycle"
        keys: dict[str, KeySource] = {}
        for subscription in spec.subscriptions:
            cert = subscription.encryption
            while cert is not None:
                secret = cert.private_key
                keys.setdefault(cert.id, KeySource(cert.id, _secret_reader(secret), where=repr(secret)))
                cert = cert.previous
        ca_bundle = spec.graph.ca_bundle
        config = cls(
            database_url=spec.database_url,
            bind=f"{receiver.host}:{receiver.port}",
            settings=ReceiverSettings(
                notification_path=notification_path, lifecycle_path=lifecycle_path, **_body_limits(os.environ)
            ),
            connections=int(os.environ.get("SYNCER_RECEIVER_CONNECTIONS") or cls.connections),
            app_ids=tuple(dict.fromkeys(t.client_id for t in spec.tenants if t.client_id)),
            # The identity platform publishes the same signing keys under every tenant; "common" is
            # what Microsoft's samples use.
            jwks_url=f"{spec.graph.authority_host.rstrip('/')}/common/discovery/v2.0/keys",
            jwks_ca_bundle=str(ca_bundle) if ca_bundle else None,
            keys=tuple(keys.values()),
            spec_path=Path(spec.path) if spec.fingerprint else None,
            spec_fingerprint=spec.fingerprint,
            spec_check=float(os.environ.get("SYNCER_RECEIVER_SPEC_CHECK") or cls.spec_check),
        )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _body_limits(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "max_body_bytes": int(env.get("SYNCER_RECEIVER_MAX_BODY") or ReceiverSettings.max_body_bytes),
        "body_timeout": float(env.get("SYNCER_RECEIVER_BODY_TIMEOUT") or ReceiverSettings.body_timeout),
        "body_budget_bytes": int(env.get("SYNCER_RECEIVER_BODY_BUDGET") or ReceiverSettings.body_budget_bytes),
    }


def _secret_reader(secret: Any) -> Callable[[], bytes]:
    def read() -> bytes:
        return str(secret.resolve()).encode()

    return read


def _load_keys(sources: tuple[KeySource, ...]) -> KeyRing:
    keys = []
    for source in sources:
        try:
            private_key = load_private_key(source.read_pem())
        except (OSError, ValueError, TypeError, SyncerError) as exc:
            raise ConfigError(
                f"cannot load the private key for certificate id {source.certificate_id!r} "
                f"from {source.where or 'its source'}: {type(exc).__name__}"
            ) from None
        keys.append(DecryptionKey(source.certificate_id, private_key))
    return KeyRing(keys)


def app_for_spec(spec: Any, engine: Engine, *, metrics: Metrics | None = None) -> Flask:
    """The receiver for a loaded spec on *engine* (``syncer run`` and tests): the spec's paths,
    decryption keys and validation-token checks, as ``syncer serve`` would build it."""
    config = ServeConfig.from_spec(spec)
    return create_app(
        engine,
        settings=config.settings,
        tokens=_token_validator(config),
        keys=_load_keys(config.keys) if config.keys else None,
        metrics=metrics,
    )


def _token_validator(config: ServeConfig) -> TokenValidator | None:
    if not config.app_ids:
        return None
    jwks = JwksCache(config.jwks_url, verify=config.jwks_ca_bundle or True)
    return TokenValidator(
        jwks, app_ids=config.app_ids, issuer_template=config.issuer_template, leeway=config.token_leeway
    )


def build_app(config: ServeConfig) -> Flask:
    """The app for *config*, with its engine, key ring and token validator."""
    # gthread workers (SQLite): a group-commit leader returning from the database can wait a whole
    # switch interval for the GIL (5 ms by default) while request threads parse, which stretches
    # every commit and with it the latency of each request in the batch.
    sys.setswitchinterval(0.001)
    # Few connections: the committers keep one each, lookups are cached; PostgreSQL's max_connections
    # is shared by every worker process on every host.
    # Its waits for the server are bounded like the committer's: a subscription lookup on a pooled
    # connection that died silently (a failover) must fail in time for Graph's retry, not hang.
    io_timeout = config.settings.store_timeout + 3.0
    engine = database.create_engine(config.database_url, io_timeout=io_timeout, pool_size=4, max_overflow=4)
    keys = _load_keys(config.keys) if config.keys else None
    tokens = _token_validator(config)
    metrics = Metrics(directory=config.metrics_dir)
    app = create_app(engine, settings=config.settings, tokens=tokens, keys=keys, metrics=metrics)
    receiver = app.extensions["syncer.receiver.app"]
    receiver.closers.append(engine.dispose)
    if config.spec_path is not None and config.spec_fingerprint:
        from syncer.receiver import specwatch

        specwatch.install(receiver, config.spec_path, config.spec_fingerprint, _spec_security, interval=config.spec_check)
    return app


def _spec_security(spec: Any) -> tuple[TokenValidator | None, KeyRing | None]:
    """The token validator and key ring *spec* implies (what :class:`~syncer.receiver.specwatch.SpecWatch` reloads)."""
    config = ServeConfig.from_spec(spec)
    return _token_validator(config), _load_keys(config.keys) if config.keys else None


WORKER_CLASSES = ("gevent", "gthread")


def gunicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The gunicorn settings for *config* (documented on :class:`ServeConfig`); the benchmark reuses them."""
    sqlite = database.is_sqlite(database.normalize_url(config.database_url))
    has_gevent = importlib.util.find_spec("gevent") is not None
    worker_class = config.worker_class or ("gthread" if sqlite or not has_gevent else "gevent")
    if worker_class not in WORKER_CLASSES:
        raise ConfigError(f"receiver worker class: expected one of {', '.join(WORKER_CLASSES)}, found {worker_class!r}")
    if worker_class == "gevent" and not has_gevent:
        raise ConfigError("the gevent worker class needs gevent: pip install 'syncer[server]'")
    if not sqlite and not has_gevent:
        log.warning("gevent is not installed: serving with gthread workers, about 40% slower (pip install 'syncer[server]')")
    if worker_class == "gevent":
        _quiet_late_ssl_patch()
    return {
        "bind": config.bind,
        "workers": config.workers or (1 if sqlite else os.cpu_count() or 2),
        "worker_class": worker_class,
        "threads": config.threads,
        "worker_connections": config.connections,
        "timeout": config.timeout,
        "keepalive": config.keepalive,
        "graceful_timeout": config.graceful_timeout,
        # Graph's POSTs carry a few short headers; gunicorn answers 400 past these, before the app.
        "limit_request_line": 4094,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "accesslog": "-" if config.access_log else None,
        # Each worker builds its own app after the fork (and, with gevent, after its monkey-patching):
        # engines, pools and the committer's connections must not be shared across processes.
        "preload_app": False,
        "worker_exit": _worker_exit,
        **_no_control_socket(),
    }


def _quiet_late_ssl_patch() -> None:
    # gunicorn's gevent worker patches the standard library after the fork, when this process has
    # imported ssl already (PyJWT imports it), and gevent warns in every worker. Harmless here: the
    # only module it names as holding unpatched references is jwt.jwks_client, which syncer does not
    # use (the JWKS fetch goes through requests, imported inside the worker after the patching).
    import warnings

    warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl has already been imported")


def _no_control_socket() -> dict[str, Any]:
    # gunicorn 24+ opens a control socket at one fixed path per user (~/.gunicorn/gunicorn.ctl):
    # two receivers on one host (or two test runs) fight over it. syncer does not use it.
    from gunicorn.config import KNOWN_SETTINGS

    return {"control_socket_disable": True} if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else {}


def run_gunicorn(load: Callable[[], Any], options: Mapping[str, Any]) -> None:
    """Run gunicorn in this process (blocking) with *options*, each worker calling *load* for its app."""
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    _Gunicorn().run()


def serve(config: ServeConfig) -> None:
    """Run the receiver under gunicorn (blocking) with the settings documented on :class:`ServeConfig`."""
    metrics_dir = config.metrics_dir or tempfile.mkdtemp(prefix="syncer-metrics-")
    config = replace(config, metrics_dir=metrics_dir)
    # Fail before forking if the configuration is wrong (missing key file, bad URL).
    if config.keys:
        _load_keys(config.keys)
    sa.make_url(database.normalize_url(config.database_url))
    run_gunicorn(lambda: build_app(config), gunicorn_options(config))


def _worker_exit(_server: Any, worker: Any) -> None:
    # Commit whatever is queued before the process goes away (gunicorn drained the requests already).
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("syncer.receiver.app") if app is not None else None
    if state is not None:
        state.close()
