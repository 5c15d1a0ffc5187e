"""JSON batching: many Graph calls in ``POST /$batch`` envelopes of at most 20, retried per item.

Notes §8: the envelope answers 200 whenever it parses; each item has its own status, headers and
body, in any order (correlated by ``id``). Throttling is per item: a 429 item carries its own
``Retry-After``. So the envelope goes through :meth:`GraphClient.request` (its own retries), and
afterwards only the items that failed with a retryable status are sent again, in a smaller batch,
after the longest Retry-After among them.

Which failed items are resent follows :mod:`.retry`, with one difference: a 429 *inside* a batch
has been observed to have taken effect anyway [OBS], so a non-idempotent item (POST/PATCH not
marked idempotent) is never resent; the caller gets its 429.

``depends_on`` works within one chunk of 20 (Graph cannot see across envelopes); a dependent of a
resent item that got 424 Failed Dependency is resent with it.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from requests.structures import CaseInsensitiveDict

from syncer.errors import GraphError, RetryBudgetExhausted
from syncer.graph import limits
from syncer.graph.responses import error_from_response
from syncer.graph.retry import RetryPolicy, RetryState, answer, is_idempotent

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient

log = logging.getLogger("syncer.graph")

MAX_BATCH = 20


@dataclass(frozen=True)
class BatchRequest:
    """One call inside a batch. ``url`` is relative to the versioned base (``/users/{id}``)."""

    method: str
    url: str
    body: Any = None
    headers: Mapping[str, str] | None = None
    id: str | None = None
    """Unique within the batch call; defaults to the position ("1", "2", ...)."""
    depends_on: tuple[str, ...] = ()
    idempotent: bool | None = None


@dataclass
class BatchResult:
    """What happened to one :class:`BatchRequest`: status, headers, body and, if it failed, the typed error."""

    id: str
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    error: GraphError | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Whether the item succeeded (2xx/3xx)."""
        return self.error is None and self.status < 400

    def raise_for_error(self) -> BatchResult:
        """Raise the item's error, or return the result."""
        if self.error is not None:
            raise self.error
        return self


def run_batch(client: GraphClient, requests: list[BatchRequest], *, retry: RetryPolicy) -> list[BatchResult]:
    """Send *requests* in envelopes of ≤20, resend retryable failures; one result per request, in order."""
    items = _with_ids(requests)
    chunks = [items[start : start + MAX_BATCH] for start in range(0, len(items), MAX_BATCH)]
    for chunk in chunks:  # all checked before anything is sent
        _check_dependencies(chunk)
    results: dict[str, BatchResult] = {}
    for chunk in chunks:
        results.update(_run_chunk(client, chunk, retry))
    return [results[item.id or ""] for item in items]


def _with_ids(requests: list[BatchRequest]) -> list[BatchRequest]:
    seen: set[str] = set()
    out = []
    for position, request in enumerate(requests, start=1):
        rid = request.id or str(position)
        if rid.lower() in seen:
            # Graph refuses the whole envelope (400) for a duplicate id; say so before sending.
            raise ValueError(f"duplicate batch request id {rid!r} (ids are case-insensitive)")
        seen.add(rid.lower())
        out.append(request if request.id else _replace_id(request, rid))
    return out


def _replace_id(request: BatchRequest, rid: str) -> BatchRequest:
    return BatchRequest(
        request.method,
        request.url,
        request.body,
        request.headers,
        rid,
        request.depends_on,
        request.idempotent,
    )


def _check_dependencies(chunk: list[BatchRequest]) -> None:
    ids = {item.id for item in chunk}
    for item in chunk:
        missing = [d for d in item.depends_on if d not in ids]
        if missing:
            raise ValueError(
                f"batch request {item.id!r} depends on {missing} outside its envelope of {MAX_BATCH}"
            )


def _item_json(client: GraphClient, item: BatchRequest, live: set[str]) -> dict[str, Any]:
    url = item.url
    if url.startswith(("https://", "http://")):
        url = client.url_for(url)[len(client.base_url) :]
    entry: dict[str, Any] = {
        "id": item.id,
        "method": item.method.upper(),
        "url": url if url.startswith("/") else f"/{url}",
    }
    headers = dict(item.headers or {})
    if item.body is not None:
        entry["body"] = item.body
        # Graph requires Content-Type on every item that has a body.
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    if headers:
        entry["headers"] = headers
    depends = [d for d in item.depends_on if d in live]
    if depends:
        entry["dependsOn"] = depends
    return entry


def _run_chunk(client: GraphClient, chunk: list[BatchRequest], policy: RetryPolicy) -> dict[str, BatchResult]:
    by_id = {item.id or "": item for item in chunk}
    results: dict[str, BatchResult] = {}
    pending = list(chunk)
    state = RetryState(policy, what=f"$batch of {len(chunk)}")
    while pending:
        attempt = state.begin_attempt()
        live = {item.id or "" for item in pending}
        envelope = {"requests": [_item_json(client, item, live) for item in pending]}
        all_idempotent = all(is_idempotent(i.method, i.idempotent) for i in pending)
        # Graph runs independent items side by side (https://learn.microsoft.com/en-us/graph/json-batching), each
        # one of its mailbox's 4 concurrent requests: the envelope holds a slot per item of each mailbox, beside
        # the passes' direct calls to them (a fifth in flight would be answered 429).
        mailboxes = Counter(m for item in pending if (m := limits.mailbox_of(item.url)) is not None)
        response = client.request(
            "POST", "/$batch", json=envelope, idempotent=all_idempotent, mailbox=dict(mailboxes)
        )
        answered = _parse_envelope(client, response.json(), by_id, attempt)
        _report_throttling(client, answered.values())
        for rid in live:
            if rid not in answered:
                answered[rid] = BatchResult(
                    rid,
                    0,
                    error=GraphError(
                        f"$batch response has no item with id {rid!r}", request_id=response.request_id
                    ),
                )
        results.update(answered)
        resend = _to_resend(pending, answered)
        if not resend:
            break
        errors = [answered[item.id or ""].error for item in resend]
        longest = max((e for e in errors if e is not None), key=lambda e: policy.wait_for(e, attempt))
        wait = policy.wait_for(longest, attempt)
        exhausted = state.exhausted_by(longest, wait)
        if exhausted is not None:
            for item in resend:
                result = answered[item.id or ""]
                if result.error is not None:
                    result.error = RetryBudgetExhausted(
                        f"$batch item {item.id}",
                        last_error=result.error,
                        attempts=state.attempts,
                        elapsed=state.elapsed,
                    )
            break
        log.warning("Graph: %s on %d of %d $batch items; resending them in %.1fs (attempt %d)",
                    answer(longest), len(resend), len(chunk), wait, attempt)
        log.debug("resending $batch items after: %s", longest)
        client._sleep(wait)
        pending = resend
    return results


def _report_throttling(client: GraphClient, results: Iterable[BatchResult]) -> None:
    """Items answered 429 slow the whole tenant, as a 429 to a direct call does (:mod:`.budget`).

    Graph evaluates throttling per item and the envelope still answers 200
    (https://learn.microsoft.com/en-us/graph/json-batching), so without this a throttled tenant would
    shrink its budget only for direct calls while envelopes kept sending at full speed.
    """
    waits = [_retry_after(r.headers.get("Retry-After")) for r in results if r.status == 429]
    if not waits:
        return
    longest = max((w for w in waits if w is not None), default=None)
    cap = client.retry.max_retry_after
    client.budget.throttled(min(longest, cap) if longest else None)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _parse_envelope(
    client: GraphClient, doc: Any, by_id: Mapping[str, BatchRequest], attempt: int
) -> dict[str, BatchResult]:
    out: dict[str, BatchResult] = {}
    responses = doc.get("responses") if isinstance(doc, dict) else None
    if not isinstance(responses, list):
        raise GraphError("$batch answered without a 'responses' list")
    lowered = {k.lower(): k for k in by_id}
    for entry in responses:
        rid = lowered.get(str(entry.get("id", "")).lower())
        if rid is None:
            continue
        status = int(entry.get("status", 0))
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {k: str(v) for k, v in (entry.get("headers") or {}).items()}
        )
        body = _decode_body(entry.get("body"), headers)
        error = None
        if status >= 400 or status == 0:
            item = by_id[rid]
            error = error_from_response(
                status, headers, body, method=item.method.upper(), url=client.url_for(item.url)
            )
        out[rid] = BatchResult(rid, status, headers, body, error, attempt)
    return out


def _decode_body(body: Any, headers: Mapping[str, str]) -> Any:
    # Non-JSON item bodies come base64-encoded (https://learn.microsoft.com/en-us/graph/json-batching); JSON ones already parsed.
    if isinstance(body, str) and not headers.get("Content-Type", "application/json").startswith(
        "application/json"
    ):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            return body
    return body


def _to_resend(pending: list[BatchRequest], answered: Mapping[str, BatchResult]) -> list[BatchRequest]:
    resend_ids: set[str] = set()
    for item in pending:
        result = answered[item.id or ""]
        if (
            result.error is not None
            and result.error.retryable
            and is_idempotent(item.method, item.idempotent)
        ):
            resend_ids.add(item.id or "")
    # Dependents that failed only because a resent item failed go again with it.
    changed = True
    while changed:
        changed = False
        for item in pending:
            rid = item.id or ""
            if rid in resend_ids or answered[rid].status != 424:
                continue
            if item.depends_on and all(
                d in resend_ids or answered[d].ok for d in item.depends_on if d in answered
            ):
                resend_ids.add(rid)
                changed = True
    return [item for item in pending if (item.id or "") in resend_ids]
