"""The SQLite file a worker opened, watched for deletion or replacement.

SQLite keeps writing to a file deleted under it (the open descriptors still reach the unlinked
inode): a worker whose database file was removed went on draining and syncing into a file no one
can read, silently, and each new pool connection created an empty database in its place, whose
"no such table" errors APScheduler logged with a traceback every half second (~7,000 lines), and a
traceback again at exit. Nothing written from then on can be kept, and no retry brings the file
back: the worker says so once and stops, non-zero, for its supervisor or operator.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from syncer import database

log = logging.getLogger("syncer.worker.jobs")

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the file (one ``stat``): the drain runs every 0.5 s by default."""


@dataclass(frozen=True)
class DatabaseFile:
    """A SQLite database file and its identity (device, inode) when the worker started."""

    path: Path
    identity: tuple[int, int]

    @classmethod
    def of(cls, engine: Engine) -> DatabaseFile | None:
        """The file behind *engine*; None for PostgreSQL and in-memory SQLite."""
        name = engine.url.database
        if not database.is_sqlite(engine) or not name or name == ":memory:" or name.startswith("file::memory:"):
            return None
        path = Path(name).resolve()
        found = os.stat(path)
        return cls(path, (found.st_dev, found.st_ino))

    def problem(self) -> str | None:
        """What happened to the file, or None while it is still the one opened."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return f"the SQLite database {self.path} was deleted while the worker ran"
        if (found.st_dev, found.st_ino) != self.identity:
            return f"the SQLite database {self.path} was replaced by another file while the worker ran"
        return None
