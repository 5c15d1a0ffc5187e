"""`syncer run`: the receiver and the worker in one process, for small deployments and development.

The order matters: the database is brought up to date, then the receiver listens (Graph validates
the notification URL while reconcile creates subscriptions, so it must answer first), then reconcile
runs, then the worker's jobs start. Shutdown goes the other way: the scheduler stops taking work and
waits for the passes in flight (each commits or rolls back a whole page, and releases its lease),
then the receiver commits what it has queued and stops listening.

Production deployments run `syncer serve` (under gunicorn) and one or more `syncer worker`s instead.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from syncer import database, mirror
from syncer.errors import SignInRequired
from syncer.migrate import upgrade_core

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import Engine

    from syncer.reconcile import Outcome
    from syncer.spec import Spec
    from syncer.worker.jobs import Worker
    from syncer.worker.scheduler import RunningWorker, Schedule

log = logging.getLogger("syncer.run")

Echo = Callable[[str], None]


class _QuietHandler(WSGIRequestHandler):
    # HTTP/1.1 keep-alive: Graph (and the emulator) reuse connections for successive deliveries.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@dataclass
class Runner:
    """Receiver + worker in this process; :meth:`start` returns once both are running."""

    spec: Spec
    host: str | None = None
    port: int | None = None
    schedule: Schedule | None = None
    worker_id: str | None = None
    reconcile_at_start: bool = True
    echo: Echo = print

    engine: Engine | None = None
    server: BaseWSGIServer | None = None
    app: Flask | None = None
    running: RunningWorker | None = None
    reconcile_outcome: Outcome | None = None
    _thread: threading.Thread | None = None

    @property
    def receiver_url(self) -> str:
        """Where the receiver listens (after start)."""
        assert self.server is not None
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> Runner:
        """Upgrade the database, start the receiver, reconcile, start the worker's jobs."""
        from syncer.receiver.serve import app_for_spec
        from syncer.worker.scheduler import run_worker

        spec = self.spec = self.spec.resolve_emulator()
        upgrade_core(spec.database_url)
        for change in mirror.upgrade(spec):
            self.echo(change)
        self.engine = database.create_engine(spec.database_url)
        self._check_single_worker()
        self.app = app_for_spec(spec, self.engine)
        host = self.host or spec.receiver.host
        port = spec.receiver.port if self.port is None else self.port
        # A socket timeout on each connection: an idle client (between requests, or stalling its
        # headers) lets go of its thread; the receiver bounds each whole body on top of that.
        timeout = self.app.extensions["syncer.receiver.app"].settings.body_timeout
        handler = type("_Handler", (_QuietHandler,), {"timeout": timeout})
        self.server = make_server(host, port, self.app, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="syncer-receiver", daemon=True)
        self._thread.start()
        self.echo(f"receiver listening on {self.receiver_url} (public URL {spec.receiver.notification_url})")
        if self.reconcile_at_start:
            self.reconcile()
        self.running = run_worker(spec, schedule=self.schedule, worker_id=self.worker_id, blocking=False,
                                  metrics=self.app.extensions["syncer.receiver.app"].metrics)  # one /metrics for both
        self.echo("worker started")
        return self

    def _check_single_worker(self) -> None:
        """On SQLite, refuse before anything happens when another worker holds the database.

        The worker takes its lock last; found busy only then, `syncer run` had already created
        subscriptions (notifying a URL about to close) for nothing.
        """
        from syncer.worker.jobs import default_worker_id
        from syncer.worker.scheduler import single_worker_lock

        assert self.engine is not None
        self.worker_id = self.worker_id or default_worker_id()
        try:
            probe = single_worker_lock(self.engine, self.worker_id)
        except BaseException:
            self.engine.dispose()
            self.engine = None
            raise
        if probe is not None:
            probe.release()  # the worker takes it again below, under the same id

    def reconcile(self) -> Outcome:
        """Run reconcile once and print its result lines."""
        from syncer.reconcile import reconcile, render_plan, render_results

        spec = self.spec
        while True:
            try:
                outcome = reconcile(spec, engine=self.engine)
                break
            except SignInRequired as error:
                if error.tenant not in {t.name for t in spec.tenants}:
                    raise
                # One delegated account signed out must not keep the others from running: the worker
                # pauses it, and reconciles its subscriptions once it signed in again (syncer.worker.accounts).
                self.echo(f"{error}; the other tenants go on")
                spec = replace(spec, tenants=tuple(t for t in spec.tenants if t.name != error.tenant),
                               subscriptions=tuple(s for s in spec.subscriptions if s.tenant != error.tenant))
        lines = render_results(outcome.results) if outcome.applied else render_plan(outcome.plan)
        for line in lines:
            self.echo(line)
        self.reconcile_outcome = outcome
        return outcome

    def stop(self) -> None:
        """Stop taking work, let passes in flight finish, commit queued notifications, stop listening."""
        if self.running is not None:
            self.running.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.app is not None:
            self.app.extensions["syncer.receiver.app"].close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.engine is not None:
            self.engine.dispose()
        self.running = self.server = self.app = self.engine = None

    @property
    def worker(self) -> Worker | None:
        """The worker's state (scopes, clients), while running."""
        return self.running.worker if self.running is not None else None

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(spec: Spec, *, echo: Echo = print, **kwargs: Any) -> None:
    """`syncer run`: start, then block until SIGINT or SIGTERM, then stop cleanly."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        echo(f"{signal.Signals(signum).name} received: stopping (finishing the current pages)")
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    runner = Runner(spec, echo=echo, **kwargs)
    try:
        runner.start()
        echo("syncer is running (Ctrl-C to stop)")
        stopping.wait()
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("stopped")
