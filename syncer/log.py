"""Logging set-up for syncer's commands: one format, and no secret ever reaches a log line.

Modules log through ``logging.getLogger(__name__)`` as usual; the CLI calls :func:`configure` once.
The formatter masks tokens, client secrets and clientState values even when a library (MSAL,
urllib3) logs them, because a leak in a log is a leak for good.
"""

from __future__ import annotations

import logging
import os
import sys

from syncer.errors import mask_secrets


class MaskingFormatter(logging.Formatter):
    """A formatter that runs :func:`syncer.errors.mask_secrets` over every formatted record."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def configure(level: str | int | None = None) -> None:
    """Log to stderr at *level* (default ``$SYNCER_LOG_LEVEL`` or INFO), masking secrets."""
    level = level or os.environ.get("SYNCER_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
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
