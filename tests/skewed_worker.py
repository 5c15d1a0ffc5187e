"""`syncer worker` on a host whose clock is off, and can jump: for the chaos scenarios' clock skew.

    python tests/skewed_worker.py OFFSET_FILE worker --worker-id ... (the rest is `syncer`'s arguments)

The worker reads the time through one injection point, :class:`syncer.worker.jobs.Worker`'s ``clock``
(leases of scopes, claims of inbox rows, not_before, last_success_at). This launcher builds every
Worker with a clock that is the wall clock plus the number of seconds in OFFSET_FILE (re-read at most
every 0.2 s, so the harness makes the clock jump, forward or back, by rewriting the file while the
process runs). Nothing else changes: this is `python -m syncer` with another clock.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


class FileOffsetClock:
    """UTC now plus the offset (seconds, may be negative) written in a file; a missing file is 0."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0.0
        self._read_at = float("-inf")

    def __call__(self) -> datetime:
        if time.monotonic() - self._read_at > 0.2:
            try:
                self._offset = float(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                self._offset = 0.0
            self._read_at = time.monotonic()
        return datetime.now(UTC) + timedelta(seconds=self._offset)


def main(argv: list[str]) -> None:
    from syncer.worker import scheduler
    from syncer.worker.jobs import Worker

    clock = FileOffsetClock(Path(argv[0]))

    class SkewedWorker(Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["clock"] = clock
            super().__init__(*args, **kwargs)

    scheduler.Worker = SkewedWorker  # type: ignore[misc]  # build_worker's class, for this process only
    from syncer.cli import main as syncer_main

    sys.argv = ["syncer", *argv[1:]]
    syncer_main()


if __name__ == "__main__":
    main(sys.argv[1:])
