"""One webhook URL as Graph's delivery sees it: its queues, its health and its pooled connection.

The dispatcher (:mod:`syncer.emulator.delivery`) keeps one :class:`Endpoint` per notification or lifecycle URL:
fresh notifications wait in :attr:`Endpoint.fresh` until due, failed batches in :attr:`Endpoint.retries`, the
slow/drop state lives in :attr:`Endpoint.health`, and :meth:`Endpoint.post` is the one place an HTTP request
leaves for a receiver. Mutations happen under the dispatcher's lock; :meth:`post` runs outside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from syncer.emulator.delivery_policy import DueQueue, EndpointHealth, ThrottleRules
from syncer.emulator.subscription_model import Subscription


@dataclass
class Notification:
    """One ``changeNotification`` (or lifecycle) item on its way to one URL."""

    url: str
    kind: str  # "change" | "lifecycle"
    payload: dict[str, Any]
    subscription: Subscription
    rich: bool = False


@dataclass
class Batch:
    """Items POSTed together; retried together."""

    seq: int
    url: str
    kind: str
    items: list[Notification]
    attempts: int = 0
    first_attempt_at: float | None = None


@dataclass
class Endpoint:
    """Everything the dispatcher knows about one notification URL."""

    url: str
    health: EndpointHealth
    session: requests.Session
    fresh: DueQueue[Notification] = field(default_factory=DueQueue)
    retries: DueQueue[Batch] = field(default_factory=DueQueue)
    in_flight: int = 0
    posts: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    last_status: int | str | None = None

    @classmethod
    def open(cls, url: str, *, rules: ThrottleRules, pool_size: int) -> Endpoint:
        """A new endpoint with its own keep-alive connection pool (a session per URL, as a sender would)."""
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= (requests' trust_env)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return cls(url=url, health=EndpointHealth(rules), session=session)

    def post(self, data: bytes, *, timeout: float, verify: bool | str) -> tuple[int | str, float, bool]:
        """POST a ``changeNotificationCollection``: (status or "timeout"/"connectionError", seconds, timed out).

        ``timeout`` bounds the whole answer, not only each socket read: Graph counts a 2xx that comes late as a
        failure too.
        """
        status: int | str
        timed_out = False
        started = time.monotonic()
        try:
            response = self.session.post(
                self.url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=timeout,
                verify=verify,
                allow_redirects=False,
            )
            status = response.status_code
            response.close()
        except requests.Timeout:
            status, timed_out = "timeout", True
        except requests.RequestException:
            status = "connectionError"
        elapsed = time.monotonic() - started
        return status, elapsed, timed_out or elapsed > timeout

    def snapshot(self, now: float) -> dict[str, Any]:
        """The admin report's view of this endpoint."""
        return {
            "url": self.url,
            **self.health.snapshot(now),
            "queued": len(self.fresh),
            "retrying": len(self.retries),
            "inFlight": self.in_flight,
            "posts": self.posts,
            "delivered": self.delivered,
            "failedAttempts": self.failed_attempts,
            "dropped": self.dropped,
            "lastStatus": self.last_status,
        }
