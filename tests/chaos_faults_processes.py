"""Chaos scenarios of syncer's processes: their clocks (``clock``) and their number (``two``).

``clock`` moves Graph's clock and the workers' apart; ``two`` runs two receivers behind one notification
URL (a :class:`Balancer` alternating connections) and two workers.
"""

from __future__ import annotations

import itertools

from chaos_database import TcpProxy
from chaos_harness import WORKER_ID
from chaos_processes import Proc
from chaos_scenario_harness import SECOND_WORKER_ID, Scenario, ScenarioHarness

from syncer.demo import free_port


class Balancer(TcpProxy):
    """A TcpProxy whose connections alternate between several targets (a load balancer's round robin)."""

    def __init__(self, targets: list[tuple[str, int]], *, port: int) -> None:
        self._targets = itertools.cycle(targets)
        super().__init__(targets[0])
        self.port = port

    @property  # type: ignore[override]
    def target(self) -> tuple[str, int]:
        return next(self._targets)

    @target.setter
    def target(self, value: tuple[str, int]) -> None:
        pass  # the cycle decides


class ClockJump(Scenario):
    name = "clock"
    description = "Graph +1h and back; worker +10 min and back; a second worker at -10 min"

    def __init__(self, graph_seconds: float = 3700.0, worker_seconds: float = 600.0) -> None:
        self.graph_seconds = graph_seconds
        self.worker_seconds = worker_seconds

    def start(self, h: ScenarioHarness) -> None:
        # Past the hour of an access token: what syncer holds is suddenly expired to Graph.
        h.admin("POST", "clock", json={"advance": self.graph_seconds})
        h.set_worker_clock(WORKER_ID, self.worker_seconds)
        h.set_worker_clock(SECOND_WORKER_ID, -self.worker_seconds)
        h.second_worker()

    def end(self, h: ScenarioHarness) -> None:
        h.admin("POST", "clock", json={"advance": -self.graph_seconds})
        h.set_worker_clock(WORKER_ID, 0)

    def cleanup(self, h: ScenarioHarness) -> None:
        h.stop_extra()
        h.set_worker_clock(SECOND_WORKER_ID, 0)


class TwoOfEach(Scenario):
    name = "two"
    description = "two receivers behind the notification URL, two workers"

    def __init__(self) -> None:
        self.balancer: Balancer | None = None
        self.original: Proc | None = None

    def start(self, h: ScenarioHarness) -> None:
        assert h.receiver is not None
        self.original = h.receiver
        # SIGKILL rather than a graceful stop, which waits for the emulator's keep-alive connections
        # to close (seconds): deliveries that meet the gap are retried, as after any restart.
        h.receiver.kill()
        a, b = free_port(), free_port()
        first, second = h.receivers_on({"receiver-a": a, "receiver-b": b})
        self.balancer = Balancer([("127.0.0.1", a), ("127.0.0.1", b)], port=h.port).start()
        # receiver-a stands for the harness's receiver (ensure_running restarts it), b is extra.
        h.receiver = first
        h.extra.append(second)
        h.second_worker()

    def cleanup(self, h: ScenarioHarness) -> None:
        for proc in h.extra:
            proc.kill()
        h.stop_extra()
        assert h.receiver is not None and self.original is not None
        h.receiver.kill()
        if self.balancer is not None:
            self.balancer.stop()
        h.receiver = self.original
        h.start_receiver()
