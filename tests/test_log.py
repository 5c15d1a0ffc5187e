"""No secret reaches a log line, whoever logs it."""

from __future__ import annotations

import logging

import pytest

from syncer import log
from syncer.errors import GraphError, mask_secrets

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    "text, secret",
    [
        (f"Authorization: Bearer {JWT}", JWT),
        ("POST /token client_secret=hunter2-very-secret&scope=x", "hunter2-very-secret"),
        ('{"clientState": "s3cr3t-state-123"}', "s3cr3t-state-123"),
        (f"token {JWT} leaked", JWT),
        ("client_assertion=abc.def.ghi&grant_type=x", "abc.def.ghi"),
        # delta and skip tokens: a deltaLink reads a scope's changes
        ("GET https://graph.microsoft.com/v1.0/users/delta?$deltatoken=sZwAFZibx-LQOdZ: HTTP 400", "sZwAFZibx-LQOdZ"),
        ("https://graph.microsoft.com/v1.0/users/delta?$select=id&$skiptoken=pqwSUjGYvb3j", "pqwSUjGYvb3j"),
        ("https://graph.microsoft.com/v1.0/drives/b!x/root/delta?token=MzslMjM0OyUyMzE7", "MzslMjM0OyUyMzE7"),
        ("https://graph.microsoft.com/v1.0/drives/b!x/root/delta(token='MzslMjM0')", "MzslMjM0"),
    ],
)
def test_mask_secrets(text: str, secret: str) -> None:
    masked = mask_secrets(text)
    assert secret not in masked
    assert "***" in masked


def test_masking_formatter_masks_library_logs(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure("DEBUG")
    try:
        logging.getLogger("urllib3.connectionpool").debug("sending client_secret=topsecret123 to %s", "x")
        logging.getLogger("syncer.graph").info("header Authorization: Bearer %s", JWT)
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "topsecret123" not in err and JWT not in err
    assert err.count("***") >= 2


def test_graph_error_str_is_masked_and_truncated() -> None:
    error = GraphError(
        "bad",
        status=400,
        code="invalidRequest",
        method="POST",
        url="https://graph.example/v1.0/x?client_secret=abc123",
        request_id="rid-1",
        body="x" * 5000 + " client_secret=abc123",
    )
    text = str(error)
    assert "abc123" not in text and "rid-1" in text and "HTTP 400 invalidRequest" in text
    assert error.body is not None and len(error.body) < 700


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_by_its_changes_of_state_not_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy as sa

    clock = FakeClock()
    outage = log.OutageLog(logging.getLogger("syncer.test"), "database", every=60.0, clock=clock)
    error = sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    with caplog.at_level(logging.DEBUG, logger="syncer.test"):
        outage.ok()  # nothing to say while all is well
        for _ in range(300):  # 150 s of a drain every 0.5 s
            outage.failed(error)
            clock.now += 0.5
        outage.ok()
        outage.ok()
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.getMessage() for r in lines] == [
        "database unreachable: ConnectionRefusedError: connection refused; retrying",
        "database still unreachable after 60 s; 121 failed attempts, the last: ConnectionRefusedError: "
        "connection refused; retrying",
        "database still unreachable after 2 min; 241 failed attempts, the last: ConnectionRefusedError: "
        "connection refused; retrying",
        "database reachable again after 2 min 30 s (300 failed attempts)",
    ]
    assert all(r.exc_info is None for r in lines)
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 300 and all(r.exc_info for r in debug)  # the tracebacks, for whoever wants them


def test_what_counts_as_the_database_being_unreachable() -> None:
    import sqlalchemy as sa

    from syncer.errors import DatabaseUnreachable, LockTimeout

    refused = sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    assert log.database_unreachable(refused)
    assert log.database_unreachable(DatabaseUnreachable("down"))
    try:
        try:
            raise refused
        except sa.exc.OperationalError as inner:
            raise LockTimeout("could not take the lock") from inner
    except LockTimeout as outer:
        assert log.database_unreachable(outer)
    assert not log.database_unreachable(sa.exc.IntegrityError("INSERT", {}, ValueError("duplicate key")))
    assert not log.database_unreachable(KeyError("a bug"))
