"""The emulator's one source of time.

Token expiry, delta-token ages, subscription expiry and delivery backoff all read this clock, so a test
can freeze it or jump it forward (``advance``) instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock UTC time plus an offset, or a frozen instant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen: float | None = None

    def time(self) -> float:
        """Seconds since the epoch, as the emulator sees them."""
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return time.time() + self._offset

    def now(self) -> datetime:
        """The current instant as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    @property
    def frozen(self) -> bool:
        """True while time stands still."""
        return self._frozen is not None

    def freeze(self, at: datetime | None = None) -> None:
        """Stop time (at *at*, default now)."""
        instant = at.timestamp() if at is not None else self.time()
        with self._lock:
            self._frozen = instant

    def unfreeze(self) -> None:
        """Let time run again from the frozen instant (no jump back to the wall clock)."""
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - time.time()
                self._frozen = None

    def advance(self, seconds: float) -> None:
        """Jump forward (or back, if negative) by *seconds*."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds

    def set(self, at: datetime) -> None:
        """Jump to *at* (keeps running unless frozen)."""
        with self._lock:
            if self._frozen is not None:
                self._frozen = at.timestamp()
            else:
                self._offset = at.timestamp() - time.time()


def iso(dt: datetime) -> str:
    """Graph's DateTimeOffset rendering: UTC with a trailing Z, whole seconds."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ts(ts: float) -> str:
    """:func:`iso` for an epoch timestamp."""
    return iso(datetime.fromtimestamp(ts, tz=UTC))


def parse_iso(text: str) -> datetime:
    """Parse a Graph DateTimeOffset; naive values are taken as UTC. Raises ValueError."""
    value = text.strip()
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    # Graph writes 7 fractional digits; Python accepts at most 6.
    if "." in value:
        head, _, rest = value.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        value = f"{head}.{digits[:6] or '0'}{rest[i:]}"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


__all__ = ["Clock", "iso", "iso_ts", "parse_iso"]
