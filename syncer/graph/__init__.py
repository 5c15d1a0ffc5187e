"""syncer's one HTTP client of Microsoft Graph.

``GraphClient`` (client.py) sends every call: tokens from a :class:`Credential` (auth.py, MSAL),
retries by Graph's rules (retry.py), typed errors (responses.py, on :mod:`syncer.errors`),
per-tenant and per-mailbox concurrency caps (limits.py), lazy paging and delta rounds (delta.py),
``$batch`` (batch.py) and typed subscription calls (subscriptions.py). Nothing here imports the
emulator: the client is an independent reading of Graph's documentation.
"""

from __future__ import annotations

from syncer.graph.auth import (
    CLOUDS,
    CertificateCredential,
    ClientSecretCredential,
    Cloud,
    Credential,
    cloud,
    credential_from_spec,
)
from syncer.graph.batch import BatchRequest, BatchResult
from syncer.graph.client import GraphClient
from syncer.graph.delta import DeltaRound, Page
from syncer.graph.responses import GraphResponse, code_is, error_from_response, parse_retry_after
from syncer.graph.retry import NO_RETRY, RetryPolicy
from syncer.graph.subscriptions import LiveSubscription, Subscriptions

__all__ = [
    "CLOUDS",
    "NO_RETRY",
    "BatchRequest",
    "BatchResult",
    "CertificateCredential",
    "ClientSecretCredential",
    "Cloud",
    "Credential",
    "DeltaRound",
    "GraphClient",
    "GraphResponse",
    "LiveSubscription",
    "Page",
    "RetryPolicy",
    "Subscriptions",
    "cloud",
    "code_is",
    "credential_from_spec",
    "error_from_response",
    "parse_retry_after",
]
