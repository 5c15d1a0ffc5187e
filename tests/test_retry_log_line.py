"""A retry after 429 is logged as one short line: what, where, how long we wait; never a token."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer.errors import GraphError, ThrottledError, mask_secrets
from syncer.worker import sync


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, sqlite_url, graph, USERS_SPEC.format(delete="soft"))


def test_a_throttled_page_is_retried_with_one_short_line(env: SyncEnv, caplog: pytest.LogCaptureFixture) -> None:
    env.graph.admin("POST", "seed", json={"users": 30})
    # A first pass for a deltaLink, then a round of pages whose second page is throttled once.
    assert sync.sync_scope(env.engine, env.client, env.scope(), worker="w").outcome == "ok"
    env.graph.admin("POST", "seed", json={"users": 30})
    rule = {"type": "status", "status": 429, "path": "/users/delta", "retryAfter": 1, "count": 1}
    env.graph.admin("POST", "faults", json=rule)
    with caplog.at_level(logging.INFO, logger="syncer"):
        result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w", page_size=10)
    assert result.outcome == "ok"
    retries = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "retry" in r.getMessage()]
    assert len(retries) == 1, [r.getMessage() for r in caplog.records]
    (line,) = retries
    assert line.startswith("Graph: 429 TooManyRequests on GET /v1.0/users/delta; retrying in 1.0s"), line
    assert len(line) < 120 and "\n" not in line and "token" not in line, line


def test_the_line_shortens_long_ids_and_never_shows_a_token() -> None:
    from syncer.graph.retry import retry_line

    mailbox = "AAMkAGI2TG93AAA=" + "x" * 140
    url = (f"https://graph.microsoft.com/v1.0/users/{mailbox}/mailFolders/{mailbox}/messages/delta"
           "?%24skiptoken=SECRETTOKEN&$select=subject")
    error = ThrottledError("Please retry again later.", status=429, code="TooManyRequests", method="GET", url=url,
                           request_id="r" * 36, client_request_id="c" * 36, retry_after=3)
    line = retry_line(error, 2, 3)
    assert line == ("Graph: 429 TooManyRequests on GET /v1.0/users/AAMkAGI2TG93.../mailFolders/AAMkAGI2TG93.../"
                    "messages/delta; retrying in 3.0s (attempt 2)")
    # The full error, kept for DEBUG and the pass record, is masked too (%24 is an encoded $).
    assert "SECRETTOKEN" not in str(error) and "SECRETTOKEN" not in mask_secrets(url)
    drive = GraphError("reset", method="GET", url="https://g/v1.0/drives/b!x/root/delta(token='SECRET')")
    assert "SECRET" not in retry_line(drive, 1, 0.5)
