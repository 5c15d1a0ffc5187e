"""subscriptions.yaml: what the user declares, validated once into frozen dataclasses.

Everything after :func:`load_spec` works on :class:`Spec` and never sees a raw dict. Validation
refuses here, before any call to Graph, what Graph would refuse (unknown resources, change types,
lifetimes over the maximum, rich notifications where unsupported: :mod:`syncer.resources`) and what
would hurt later (literal secrets, unsafe SQL names, duplicate tables). All problems are reported
together, each with file, line, field path, what was expected and what was found. The format is
documented key by key in docs/spec.md.

The package, following the data:

- :mod:`~syncer.spec.model`: the frozen dataclasses (:class:`Spec`, :class:`Subscription`, ...) and the
  spec's constants; what the rest of syncer imports (from here).
- :mod:`~syncer.spec.reader`: YAML read field by field, every value with its file and line, every
  problem collected instead of raised at once.
- :mod:`~syncer.spec.loader`: the document and its connection sections (graph, receiver, database),
  and the readers every section shares (names, SQL identifiers, URLs, secrets); the tenants section
  in :mod:`~syncer.spec.tenants` (app-only credentials, delegated accounts).
- :mod:`~syncer.spec.subscriptions`: each declared subscription against Graph's rules, and the checks
  across subscriptions; with four parts read apart: :mod:`~syncer.spec.resource` (the resource path,
  change types, Teams' model), :mod:`~syncer.spec.mirror` (table and columns), :mod:`~syncer.spec.rich`
  (resource data and encryption) and :mod:`~syncer.spec.scopes` (for_each, window, folders).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from syncer.errors import ConfigError
from syncer.spec.fingerprint import fingerprint
from syncer.spec.loader import SpecLoader
from syncer.spec.model import (
    CLOUD_NAMES,
    CLOUDS,
    COLUMN_TYPES,
    DEFAULT_CONCURRENCY,
    DEFAULT_DATABASE_URL,
    DEFAULT_EMULATOR_INFO,
    DEFAULT_NOTIFICATION_URL,
    DEFAULT_SYNC_INTERVAL,
    KEY_COLUMNS,
    MAX_CONCURRENCY,
    MAX_RENEW_BEFORE,
    PERSONAL_ACCOUNT_TYPES,
    PERSONAL_TENANT_ID,
    SPEC_VERSION,
    CertificateCredential,
    Column,
    EncryptionCert,
    FanOut,
    GraphConnection,
    Mirror,
    Receiver,
    SecretRef,
    Spec,
    Subscription,
    Tenant,
    graph_root,
)
from syncer.spec.reader import compose

__all__ = [
    "CLOUDS",
    "CLOUD_NAMES",
    "COLUMN_TYPES",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_EMULATOR_INFO",
    "DEFAULT_NOTIFICATION_URL",
    "DEFAULT_SYNC_INTERVAL",
    "KEY_COLUMNS",
    "MAX_CONCURRENCY",
    "MAX_RENEW_BEFORE",
    "PERSONAL_ACCOUNT_TYPES",
    "PERSONAL_TENANT_ID",
    "SPEC_VERSION",
    "CertificateCredential",
    "Column",
    "EncryptionCert",
    "FanOut",
    "GraphConnection",
    "Mirror",
    "Receiver",
    "SecretRef",
    "Spec",
    "Subscription",
    "Tenant",
    "graph_root",
    "load_spec",
    "parse_spec",
]


def load_spec(
    path: str | Path, *, environ: Mapping[str, str] | None = None, check_secrets: bool = True
) -> Spec:
    """Read and validate the spec at *path*; raises :class:`~syncer.errors.SpecErrors` listing every problem.

    *environ* (default ``os.environ``) feeds ``${VAR}`` interpolation and ``{env: NAME}`` secrets. With
    *check_secrets*, secrets given as environment variables or files must exist now (not only when used).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read spec {path}: {exc.strerror}") from exc
    return parse_spec(
        text, path=path, environ=os.environ if environ is None else environ, check_secrets=check_secrets
    )


def parse_spec(text: str, *, path: Path, environ: Mapping[str, str], check_secrets: bool = True) -> Spec:
    """Validate spec *text* as if read from *path* (relative paths in it are taken from its directory)."""
    loader = SpecLoader(path, environ=environ, check_secrets=check_secrets)
    spec = loader.build(compose(text, str(path)))
    loader.r.raise_errors()
    assert spec is not None  # no problem recorded means every part was built
    return dataclasses.replace(spec, fingerprint=fingerprint(spec.subscriptions, spec.tenants))
