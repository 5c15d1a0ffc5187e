"""Syncer's commands as the chaos harness runs them: subprocesses in their own process groups.

A :class:`Proc` is killed with SIGKILL (the whole group: what an OOM kill or a lost container does) and
started again under the same arguments, its output kept per start for the report of a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # where syncer's commands run


@dataclass
class Proc:
    """One syncer command run as a subprocess in its own process group, restartable."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    crashes: list[int] = field(default_factory=list)  # exit codes of exits the harness did not cause
    started_at: float = 0.0

    def start(self) -> None:
        if self.process is not None and self.process.poll() not in (None, -signal.SIGKILL):
            self.crashes.append(int(self.process.returncode))
        self.starts += 1
        self.started_at = time.monotonic()
        log = (self.log_dir / f"{self.name}.{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn's workers die with their master)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if not self.running:
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()

    def output(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace")[-4000:]
            for p in sorted(self.log_dir.glob(f"{self.name}.*.log"))
        )
