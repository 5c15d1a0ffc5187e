"""The long-running processes: `worker` (the pull half), `serve` (the push half, gunicorn), `run` (both in one)."""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import click

from syncer.cli.options import friendly_errors, retention, spec_option


@click.command()
@spec_option
@click.option(
    "--worker-id", default=None, help="Name of this worker in leases and `syncer status` (default host:pid)."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Graph requests in flight per tenant across all scopes and reconcile (halved for a while after a 429; "
    "4 per mailbox at most) [default: the spec's defaults.concurrency or tenants[].concurrency, else 16].",
)
@click.option(
    "--passes", type=click.IntRange(min=1), default=None, help="Sync passes run at the same time [default: 2 x --concurrency]."
)
@click.option(
    "--drain-interval",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    help="Seconds between two looks at the inbox when not woken (see --listen).",
)
@click.option(
    "--listen/--no-listen",
    default=True,
    show_default=True,
    help="PostgreSQL: drain as soon as the receiver commits (LISTEN syncer_inbox), not only every --drain-interval. "
    "--no-listen behind a pooler in transaction mode, which cannot keep a LISTEN.",
)
@click.option(
    "--safety-net-interval",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds between two checks for scopes older than their sync_interval.",
)
@click.option(
    "--keep-notifications",
    default="7d",
    show_default=True,
    callback=lambda _ctx, _param, value: retention(value),
    help="How long processed notifications stay in the inbox (what `syncer replay` can replay); `forever` keeps them.",
)
@click.option(
    "--keep-runs",
    default="30d",
    show_default=True,
    callback=lambda _ctx, _param, value: retention(value),
    help="How long the record of each sync pass is kept; `forever` keeps them.",
)
@click.option(
    "--startup-wait",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds to wait at start for an unreachable database or Graph (0: fail at once).",
)
@click.option(
    "--on-spec-change",
    type=click.Choice(["restart", "exit"]),
    default="restart",
    show_default=True,
    help="When `db upgrade` or `reconcile` applies another subscriptions.yaml: start again on the file "
    "(restart), or exit with status 75 for a supervisor to restart (exit).",
)
@friendly_errors
def worker(
    spec_path: Path,
    worker_id: str | None,
    concurrency: int | None,
    passes: int | None,
    drain_interval: float,
    listen: bool,
    safety_net_interval: float,
    keep_notifications: timedelta | None,
    keep_runs: timedelta | None,
    startup_wait: float,
    on_spec_change: str,
) -> None:
    """Run the worker: drain the inbox into sync passes, run the safety-net delta and reconcile on a schedule.

    Several workers may share one PostgreSQL database (inbox rows and scopes are leased). On SQLite
    only one worker may run: a second one is refused with the name of the first. A worker restarted
    under the same --worker-id takes back at once what its killed predecessor held.
    """
    from syncer.spec import load_spec
    from syncer.worker.jobs import Retention
    from syncer.worker.scheduler import Schedule, run_worker

    spec = load_spec(spec_path).resolve_emulator()
    click.echo(f"syncer worker started on {len(spec.subscriptions)} subscriptions (Ctrl-C to stop)", err=True)
    schedule = Schedule(drain=drain_interval, safety_net=safety_net_interval, wake=listen)
    # systemd and Kubernetes stop with SIGTERM: leave like Ctrl-C (passes in flight finish, leases
    # and the SQLite worker lock are released) instead of dying mid-page.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    retention = Retention(notifications=keep_notifications, runs=keep_runs)
    running = run_worker(spec, schedule=schedule, worker_id=worker_id, max_passes=passes, concurrency=concurrency,
                         startup_wait=startup_wait, retention=retention)
    if running.database_gone is not None:
        sys.exit(1)  # logged once by the worker (syncer.worker.dbfile)
    if (reason := running.worker.spec_watch.reason) is not None:
        if on_spec_change == "exit":
            click.echo(f"syncer worker: {reason}; exiting for the supervisor to start it again", err=True)
            sys.exit(75)  # EX_TEMPFAIL
        click.echo(f"syncer worker: {reason}; starting again on {spec_path}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # A new process, not a reload in place: every part of the worker is built from the file anew.
        os.execv(sys.executable, [sys.executable, "-m", "syncer", *sys.argv[1:]])


@click.command()
@spec_option
@click.option(
    "--host", default=None, help="Address the receiver listens on (default: receiver.host in the spec)."
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="Port the receiver listens on (default: receiver.port in the spec).",
)
@click.option(
    "--no-reconcile", is_flag=True, help="Do not reconcile at start (the worker still does on its schedule)."
)
@friendly_errors
def run(spec_path: Path, host: str | None, port: int | None, no_reconcile: bool) -> None:
    """Run the receiver and the worker in one process (small deployments, development).

    Upgrades the database, starts the receiver, reconciles, then runs the worker's jobs until SIGINT
    or SIGTERM, when it finishes the pages in flight, commits stored notifications and exits.
    Production runs `syncer serve` under gunicorn and one or more `syncer worker`s instead.
    """
    from syncer.run import run as run_all
    from syncer.spec import load_spec

    run_all(load_spec(spec_path), host=host, port=port, reconcile_at_start=not no_reconcile, echo=click.echo)


@click.command()
@spec_option
@click.option(
    "--bind", default=None, help="host:port to listen on (default: receiver.host:receiver.port in the spec)."
)
@click.option(
    "--workers", type=int, default=None, help="Worker processes (default: one per CPU; 1 on SQLite)."
)
@click.option(
    "--worker-class",
    type=click.Choice(["gevent", "gthread"]),
    default=None,
    help="gunicorn worker class (default: gevent on PostgreSQL, gthread on SQLite).",
)
@click.option(
    "--threads", type=int, default=None, help="Threads per gthread worker (default 32: they share commits)."
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@friendly_errors
def serve(
    spec_path: Path,
    bind: str | None,
    workers: int | None,
    worker_class: str | None,
    threads: int | None,
    access_log: bool,
) -> None:
    """Run the webhook receiver under gunicorn (production).

    Answers Graph's validation handshake, checks every notification (clientState, validation tokens,
    HMAC, decryption) and stores it in the inbox before answering 202; 503 when the database is down.
    gunicorn workers, one per CPU (gevent on PostgreSQL; one gthread worker with 32 threads on
    SQLite), so that concurrent requests share commits. Also serves /healthz, /readyz and
    Prometheus /metrics. Other WSGI servers can load `syncer.receiver:create_app_from_env()`
    (SYNCER_DATABASE_URL and friends).
    """
    from syncer.receiver.serve import ServeConfig
    from syncer.receiver.serve import serve as serve_receiver
    from syncer.spec import load_spec

    spec = load_spec(spec_path).resolve_emulator()
    serve_receiver(
        ServeConfig.from_spec(
            spec,
            bind=bind,
            workers=workers,
            worker_class=worker_class,
            threads=threads,
            access_log=access_log or None,
        )
    )
