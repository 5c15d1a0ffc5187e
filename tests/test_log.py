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
