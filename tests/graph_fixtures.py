"""Fixtures for the Graph client's tests against the emulator (a pytest plugin listed in tests/conftest.py).

``make_client`` builds GraphClients on the test's emulator and remembers every credential, so that
``no_secret_in_logs`` (autouse in those modules) can check, after each test, that no log record of
the test (syncer, MSAL, urllib3, the emulator: every logger, at DEBUG, unmasked) and no error text
contains the client secret, the private key or any access token that was issued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from syncer.emulator import EmulatorServer
from syncer.graph import CertificateCredential, ClientSecretCredential, GraphClient, RetryPolicy
from syncer.graph.auth import _MsalCredential

FAST = RetryPolicy(max_attempts=4, max_elapsed=30.0, backoff_base=0.01, backoff_max=0.05)


class Recorder(logging.Handler):
    """Keeps every record's message (and formatted exception) as plain text."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


class Harness:
    """The test's emulator plus helpers: admin calls, clients, remembered credentials and sleeps."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.info: dict[str, Any] = server.info
        self.credentials: list[_MsalCredential] = []
        self.errors: list[BaseException] = []
        self.sleeps: list[float] = []
        self._session = requests.Session()

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the admin API; returns the parsed JSON (None for empty)."""
        response = self._session.request(
            method,
            f"{self.info['admin_url']}/{path.lstrip('/')}",
            verify=self.info["ca_cert"],
            timeout=60,
            **kwargs,
        )
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def fault(self, **rule: Any) -> None:
        """Add one fault rule (see syncer.emulator.faults)."""
        self.admin("POST", "faults", json=rule)

    def requests_log(self, path_regex: str = "") -> list[dict[str, Any]]:
        """The emulator's request log, Graph calls only, optionally filtered by a substring of the path."""
        return [r for r in self.admin("GET", "requests?limit=10000")["requests"] if path_regex in r["path"]]

    def secret_credential(self, **kwargs: Any) -> ClientSecretCredential:
        info = self.info
        credential = ClientSecretCredential(
            info["base_url"],
            info["tenant_id"],
            info["client_id"],
            info["client_secret"],
            ca_bundle=info["ca_cert"],
            **kwargs,
        )
        self.credentials.append(credential)
        return credential

    def certificate_credential(self, *, with_certificate: bool) -> CertificateCredential:
        info = self.info
        with open(info["client_key"]) as f:
            key = f.read()
        with open(info["client_cert"]) as f:
            cert = f.read()
        credential = CertificateCredential(
            info["base_url"],
            info["tenant_id"],
            info["client_id"],
            key,
            thumbprint=None if with_certificate else info["client_cert_thumbprint"],
            public_certificate=cert if with_certificate else None,
            ca_bundle=info["ca_cert"],
        )
        self.credentials.append(credential)
        return credential

    def client(self, credential: Any = None, *, real_sleep: bool = False, **kwargs: Any) -> GraphClient:
        """A GraphClient on this emulator (fast retry policy; sleeps recorded, real only if asked)."""
        kwargs.setdefault("retry", FAST)
        client = GraphClient(
            self.info["graph_url"],
            credential or self.secret_credential(),
            ca_bundle=self.info["ca_cert"],
            **kwargs,
        )
        import time

        def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            if real_sleep:
                time.sleep(seconds)

        client._sleep = sleep
        return client

    def sensitive(self) -> list[str]:
        """Every secret value the test handled: client secret, private key material, tokens issued."""
        values = [self.info["client_secret"]]
        with open(self.info["client_key"]) as f:
            values += [line for line in f.read().splitlines() if len(line) > 40]
        for credential in self.credentials:
            values += [token for token, _ in credential._tokens.values()]
        return values


@pytest.fixture
def harness(emulator: EmulatorServer) -> Iterator[Harness]:
    h = Harness(emulator)
    yield h
    h._session.close()


@pytest.fixture
def no_secret_in_logs(harness: Harness) -> Iterator[Recorder]:
    """Record every log line of the test at DEBUG; fail if a secret or token shows up in one."""
    recorder = Recorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        root.setLevel(old_level)
    texts = recorder.lines + [str(e) for e in harness.errors] + [repr(e) for e in harness.errors]
    secrets = [s for s in harness.sensitive() if s]
    assert len(secrets) >= 2
    leaks = find_leaks(texts, secrets)
    assert not leaks, f"secret material in log lines or errors: {leaks[:3]}"
    assert recorder.lines, "the test logged nothing at DEBUG: the check above proved nothing"


def find_leaks(texts: list[str], secrets: list[str]) -> list[tuple[str, str]]:
    """(first characters of the secret, the line) for every text that contains a secret."""
    return [(s[:6], line[:200]) for s in secrets for line in texts if s in line]


def raises_typed(harness: Harness, call: Callable[[], Any], cls: type[BaseException]) -> Any:
    """Run *call*, expect *cls*, remember the error for the secret check, and return it."""
    with pytest.raises(cls) as info:
        call()
    harness.errors.append(info.value)
    return info.value
