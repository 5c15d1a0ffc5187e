"""Logging set-up for syncer's commands: one format, and no secret ever reaches a log line.

Modules log through ``logging.getLogger(__name__)`` as usual; the CLI calls :func:`configure` once.
The formatter masks tokens, client secrets and clientState values even when a library (MSAL,
urllib3) logs them, because a leak in a log is a leak for good. :class:`OutageLog` keeps an outage
of the database to a few lines however often the worker's jobs or Graph's retries run into it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from syncer.errors import DatabaseUnreachable, mask_secrets


class MaskingFormatter(logging.Formatter):
    """A formatter that runs :func:`syncer.errors.mask_secrets` over every formatted record."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``time``, ``level``, ``logger``, ``message``, and ``exception`` or
    ``stack`` when present), for log collectors; each text masked like :class:`MaskingFormatter`.

    Masking before encoding keeps a masked line valid JSON whatever the secret's characters.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = mask_secrets(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_secrets(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


LOG_FORMATS = ("text", "json")


def configure(level: str | int | None = None, log_format: str | None = None) -> None:
    """Log to stderr at *level* (default ``$SYNCER_LOG_LEVEL`` or INFO), masking secrets, as text or as
    one JSON object per line (*log_format*, default ``$SYNCER_LOG_FORMAT`` or text)."""
    level = level or os.environ.get("SYNCER_LOG_LEVEL", "INFO")
    log_format = (log_format or os.environ.get("SYNCER_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # APScheduler logs every job run at INFO, and at WARNING each drain it skips because the previous
    # one is still running (by design: max_instances=1, every half second). alembic announces each
    # plugin at INFO on every upgrade. None of it is anything a user acts on; job errors still show.
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.ERROR))
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


def database_unreachable(error: BaseException) -> bool:
    """Whether *error* (or what it was raised from) says the database cannot be reached or used now.

    Connection refused or reset, a server shutting down, SQLite's "database is locked" or "unable to
    open database file": SQLAlchemy raises these as OperationalError (or InterfaceError, or any DBAPI
    error it saw invalidate the connection). A programming or constraint error is not one of them.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnreachable | sa.exc.OperationalError | sa.exc.InterfaceError):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def one_line(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of *error*, the driver's own error for SQLAlchemy's (whose
    message carries the SQL statement and a link over several lines)."""
    shown = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig is not None else error
    text = str(shown).strip().splitlines()[0] if str(shown).strip() else ""
    text = f"{type(shown).__name__}: {text}" if text else type(shown).__name__
    if shown is error and isinstance(error.__cause__, sa.exc.DBAPIError):
        text += f" ({one_line(error.__cause__, limit)})"  # syncer's wrapper: the driver says what happened
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duration(seconds: float) -> str:
    """``45 s``, ``2 min 30 s``, ``3 h 5 min``."""
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole // 60, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


class OutageLog:
    """Log an outage of *what* (the database) by its changes of state, not once per failed attempt.

    A job retried every half second, or a receiver answering 503 to each POST, would otherwise write a
    line (and a traceback) per attempt for as long as the outage lasts, burying everything else. This
    writes one line when the first attempt fails, one summary every *every* seconds while it lasts,
    and one line when an attempt succeeds again; each failure's traceback only at DEBUG. Thread-safe:
    the worker's jobs and passes, and the receiver's request threads, share one per process.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str = "database",
        *,
        level: int = logging.WARNING,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self.every = every
        self.clock = clock
        self.since: float | None = None  # when the first failed attempt of the current outage was seen
        self.attempts = 0  # failed attempts in the current outage
        self._summarised = 0.0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self.since is not None

    def failed(self, error: BaseException, consequence: str = "retrying") -> None:
        """One attempt failed with *error*; *consequence* says what happens meanwhile."""
        with self._lock:
            now = self.clock()
            self.attempts += 1
            if self.since is None:
                self.since = self._summarised = now
                self.logger.log(self.level, "%s unreachable: %s; %s", self.what, one_line(error), consequence)
            elif now - self._summarised >= self.every:
                self._summarised = now
                self.logger.log(
                    self.level,
                    "%s still unreachable after %s; %d failed attempts, the last: %s; %s",
                    self.what, _duration(now - self.since), self.attempts, one_line(error), consequence,
                )
        self.logger.debug("%s unreachable", self.what, exc_info=error)

    def ok(self) -> None:
        """An attempt succeeded: ends the outage, if there was one."""
        if self.since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.since is None:
                return
            down_for, attempts = self.clock() - self.since, self.attempts
            self.since, self.attempts = None, 0
        self.logger.warning("%s reachable again after %s (%d failed attempts)", self.what, _duration(down_for), attempts)
