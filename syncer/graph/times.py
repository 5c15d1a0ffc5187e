"""Graph's ``DateTimeOffset`` values: one parser and one formatter for every caller.

Graph writes ISO 8601 with up to seven fractional digits and a ``Z`` or an offset
(https://learn.microsoft.com/en-us/graph/api/resources/subscription#properties shows
``2016-11-20T18:23:45.9356913Z``); Python's ``fromisoformat`` takes at most six. Subscriptions'
expiry and every ``datetime`` mirror column read Graph's times through :func:`parse_datetime`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_datetime(value: str) -> datetime:
    """Graph's DateTimeOffset (``Z`` or an offset, up to 7 fractional digits) as aware UTC.

    A value without an offset is taken as UTC (Outlook's ``dateTimeTimeZone`` with ``"UTC"``).
    Raises ValueError for text that is not an ISO 8601 date and time."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """A datetime as Graph wants it: UTC, ISO 8601 with a ``Z``."""
    if value.tzinfo is None:
        raise ValueError("times sent to Graph must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
