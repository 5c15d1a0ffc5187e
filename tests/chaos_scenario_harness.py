"""What every chaos scenario stands on: the :class:`Scenario` a fault subclasses, and the harness it runs on.

:class:`ScenarioHarness` is tests/chaos_harness.py's harness plus what the scenarios need: workers whose
clock can be moved (tests/skewed_worker.py), extra receivers and workers, the admin database URL, and a
reset after a fault syncer did not recover from. The faults are grouped by family in
tests/chaos_faults_database.py, tests/chaos_faults_processes.py and tests/chaos_faults_inputs.py;
tests/chaos_scenarios.py lists them and runs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from chaos_harness import WORKER_ID, Harness
from chaos_processes import ROOT, Proc

from syncer import schema
from syncer.emulator.delivery_policy import ThrottleRules

SECOND_WORKER_ID = "chaos-worker-2"


@dataclass
class ScenarioHarness(Harness):
    """The chaos harness plus: workers whose clock can be moved, extra processes, the admin database URL."""

    admin_url: str = ""  # the server's maintenance connection (ALTER DATABASE), PostgreSQL only
    extra: list[Proc] = field(default_factory=list)
    # Graph's slow/drop endpoint penalties in seconds instead of 10 minutes: scenarios run one after
    # the other, and a slow database must not silence the next one's notifications for 10 minutes.
    emulator_settings: dict[str, Any] = field(
        default_factory=lambda: {"throttle": ThrottleRules(slow_delay_s=5.0, drop_duration_s=5.0)}
    )

    def start(self) -> ScenarioHarness:
        super().start()
        assert self.worker is not None
        # The worker is restarted through the skewing launcher (offset 0 until a scenario moves it).
        self.worker.stop()
        self.worker.argv = self.worker_argv(WORKER_ID, self.clock_file(WORKER_ID))
        self.worker.start()
        return self

    def clock_file(self, worker_id: str) -> Path:
        return self.workdir / f"clock-{worker_id}.txt"

    def set_worker_clock(self, worker_id: str, seconds: float) -> None:
        """Move *worker_id*'s clock to wall clock + *seconds* (a jump, seen within 0.2 s)."""
        self.clock_file(worker_id).write_text(f"{seconds}\n")

    def worker_argv(self, worker_id: str, clock_file: Path) -> list[str]:
        assert self.worker is not None
        argv = list(self.worker.argv)
        at = argv.index("worker")
        rest = argv[at:]
        rest[rest.index("--worker-id") + 1] = worker_id
        return [argv[0], str(ROOT / "tests" / "skewed_worker.py"), str(clock_file), *rest]

    def second_worker(self, worker_id: str = SECOND_WORKER_ID) -> Proc:
        assert self.worker is not None
        proc = Proc(worker_id, self.worker_argv(worker_id, self.clock_file(worker_id)), self.worker.env, self.workdir)
        self.extra.append(proc)
        proc.start()
        return proc

    def receivers_on(self, ports: dict[str, int]) -> list[Proc]:
        """More receivers (``syncer serve --bind``), started together, once they answer /healthz."""
        assert self.receiver is not None
        procs = [Proc(name, [*self.receiver.argv, "--bind", f"127.0.0.1:{port}"], self.receiver.env, self.workdir)
                 for name, port in ports.items()]
        for proc in procs:
            proc.start()
        for proc, port in zip(procs, ports.values(), strict=True):
            _wait_healthy(port, proc)
        return procs

    def stop_extra(self) -> None:
        for proc in self.extra:
            proc.stop()
        self.extra.clear()

    def ensure_running(self) -> None:
        super().ensure_running()
        for proc in self.extra:
            if not proc.running:
                proc.start()

    def last_seq(self) -> int:
        return max((e["seq"] for e in self.delivery()["log"]), default=0)

    def last_inbox_id(self) -> int:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return int(connection.execute(sa.select(sa.func.max(schema.inbox.c.id))).scalar_one() or 0)
        finally:
            engine.dispose()

    def inbox_rows_after(self, inbox_id: int) -> int:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return int(connection.execute(
                    sa.select(sa.func.count()).select_from(schema.inbox).where(schema.inbox.c.id > inbox_id)
                ).scalar_one())
        finally:
            engine.dispose()

    def reset(self) -> None:
        """What an operator does after a fault syncer did not recover from, so that the next scenario is
        measured on its own and not on this one's leftovers: every process restarted, every scope resynced."""
        for proc in self.processes():
            proc.kill()
        s = schema.sync_state
        engine = self.engine()
        try:
            with engine.begin() as connection:
                connection.execute(sa.update(s).values(
                    delta_link=None, page_link=None, resync_requested=True, leased_by=None, lease_until=None,
                    not_before=None))
        finally:
            engine.dispose()
        self.ensure_running()
        self.touch_every_scope()

    def processes(self) -> list[Proc]:
        return [p for p in (self.receiver, self.worker, *self.extra) if p is not None]

    def stop(self) -> None:
        self.stop_extra()
        super().stop()


def _wait_healthy(port: int, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not proc.running:
            break
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not come up\n" + proc.output())


class Scenario:
    """A fault: ``start`` before the change stream, ``during`` between changes, ``end`` after it;
    ``cleanup`` once the recovery is measured (for what must outlive the fault's end, e.g. two workers)."""

    name = ""
    description = ""

    def start(self, h: ScenarioHarness) -> None:
        pass

    def during(self, h: ScenarioHarness, elapsed: float) -> None:
        pass

    def end(self, h: ScenarioHarness) -> None:
        pass

    def cleanup(self, h: ScenarioHarness) -> None:
        pass

    def notes(self) -> dict[str, Any]:
        return {}
