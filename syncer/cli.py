"""The `syncer` command line: thin commands, each a call into one module.

A command's docstring is its --help text, and every command is listed in the README (a test checks).
Errors from syncer's tree are printed as one clear message and exit 1; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from syncer import __version__, database
from syncer.errors import SignInRequired, SyncerError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SPEC = "subscriptions.yaml"
EXIT_SIGN_IN_REQUIRED = 4  # a delegated account's refresh was refused: `syncer login NAME` (docs/spec.md)


def spec_option(func: F) -> F:
    """The --spec option every command that reads subscriptions.yaml takes."""
    return click.option(
        "--spec",
        "spec_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SYNCER_SPEC",  # for every command (not SYNCER_<COMMAND>_SPEC)
        default=DEFAULT_SPEC,
        show_default="./subscriptions.yaml or $SYNCER_SPEC",
        help="The subscriptions file to read.",
    )(func)


def friendly_errors(func: F) -> F:
    """Turn syncer's own errors into a message on stderr and exit status 1 (4: an account must sign in again)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SignInRequired as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(EXIT_SIGN_IN_REQUIRED)
        except SyncerError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        # Every flag can come from the environment: SYNCER_<COMMAND>_<FLAG> (SYNCER_SYNC_FULL=1,
        # SYNCER_WORKER_WORKER_ID=w1); --spec, --log-level and --log-format keep their own names.
        "auto_envvar_prefix": "SYNCER",
    }
)
@click.version_option(__version__, prog_name="syncer")
@click.option(
    "--log-level",
    default=None,
    envvar="SYNCER_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="How much to log to stderr (default INFO; secrets are always masked).",
)
@click.option(
    "--log-format",
    default=None,
    envvar="SYNCER_LOG_FORMAT",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="Log lines as text (default) or one JSON object per line (time, level, logger, message), masked alike.",
)
def main(log_level: str | None, log_format: str | None) -> None:
    """Keep a SQL database in step with Microsoft Graph.

    Declare the Graph resources to follow in subscriptions.yaml; syncer keeps the change-notification
    subscriptions alive, stores every notification durably and mirrors the resources into SQL tables.
    Every flag can also be set in the environment as SYNCER_<COMMAND>_<FLAG> (e.g. SYNCER_SYNC_FULL=1).
    """
    from syncer import log

    log.configure(log_level, log_format)


@main.command()
@spec_option
@friendly_errors
def validate(spec_path: Path) -> None:
    """Check subscriptions.yaml and print every problem with its line and field."""
    from syncer.spec import load_spec

    spec = load_spec(spec_path)
    click.echo(f"{spec_path}: valid ({len(spec.subscriptions)} subscriptions, {len(spec.tenants)} tenants)")


@main.group()
def db() -> None:
    """Manage syncer's database: core tables and the mirror tables."""


@db.command("upgrade")
@spec_option
@click.option(
    "--rebuild", is_flag=True, help="Drop and recreate mirror tables whose change cannot be applied in place."
)
@friendly_errors
def db_upgrade(spec_path: Path, rebuild: bool) -> None:
    """Bring the core tables (alembic) and the mirror tables (from the spec) up to date."""
    from syncer import mirror
    from syncer.migrate import upgrade_core
    from syncer.spec import load_spec

    spec = load_spec(spec_path)
    upgrade_core(spec.database_url)
    for change in mirror.upgrade(spec, rebuild=rebuild):
        click.echo(change)
    click.echo(f"database up to date: {mirror.describe_url(spec.database_url)}")


@main.command()
@spec_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--prune", is_flag=True, help="Delete subscriptions syncer can prove are its own and no longer declared."
)
@click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format."
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when nothing to do, 2 when there were changes, 1 on errors.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also list the subscriptions that stay as they are.")
@click.option(
    "--lock-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for another reconcile.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Graph requests in flight per tenant (each $batch envelope is one; reconcile sends up to a quarter of "
    "them at once) [default: the spec's concurrency, 16].",
)
@friendly_errors
def reconcile(
    spec_path: Path,
    dry_run: bool,
    prune: bool,
    output: str,
    detailed_exitcode: bool,
    verbose: bool,
    lock_timeout: float,
    concurrency: int | None,
) -> None:
    """Make Graph's live subscriptions match subscriptions.yaml (create, renew, update, replace, prune).

    Like terraform apply: the plan is printed (counts, then one line per action) and applied, unless
    --dry-run. Secrets (clientState) are never printed.

    Exit status: 1 when the plan was refused or an action failed; with --detailed-exitcode, 2 when
    there were changes (pending in a dry run, applied otherwise) and 0 when there was nothing to do.
    """
    from syncer.locks import LockInfo
    from syncer.reconcile import reconcile as run_reconcile
    from syncer.reconcile import render_plan, render_results
    from syncer.spec import load_spec

    def waiting(info: LockInfo | None) -> None:
        click.echo(f"waiting for lock held by {info or 'another process'}", err=True)

    outcome = run_reconcile(
        load_spec(spec_path).with_concurrency(concurrency), dry_run=dry_run, prune=prune,
        lock_timeout=lock_timeout, on_wait=waiting,
    )
    if output == "json":
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        for line in render_plan(outcome.plan, verbose=verbose, actions=not outcome.applied):
            click.echo(line)
        if outcome.applied and outcome.results:
            for line in render_results(outcome.results):
                click.echo(line)
        elif dry_run and outcome.plan.has_changes:
            click.echo("Dry run: nothing was changed.")
    if not outcome.ok:
        sys.exit(1)
    sys.exit(2 if detailed_exitcode and outcome.plan.has_changes else 0)


@main.command()
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
    callback=lambda _ctx, _param, value: _retention(value),
    help="How long processed notifications stay in the inbox (what `syncer replay` can replay); `forever` keeps them.",
)
@click.option(
    "--keep-runs",
    default="30d",
    show_default=True,
    callback=lambda _ctx, _param, value: _retention(value),
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


def _duration(value: str) -> timedelta:
    """A duration flag, written as in the spec (``7d``, ``36h``, ``90m``)."""
    from syncer.spec.reader import parse_duration

    found = parse_duration(value)
    if found is None or found <= timedelta(0):
        raise click.BadParameter(f"{value!r} is not a duration such as 7d, 36h or 90m")
    return found


def _retention(value: str) -> timedelta | None:
    """A retention flag: a duration, or ``forever``."""
    if value.strip().lower() == "forever":
        return None
    try:
        return _duration(value)
    except click.BadParameter as error:
        raise click.BadParameter(f"{error.message} (or forever)") from error


class Timestamp(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 time, as `syncer status --output json` prints it: ``2026-01-01``,
    ``2026-01-01T10:30:00``, ``2026-01-01 10:30``, with ``Z`` or an offset such as ``+00:00``
    (converted to UTC); without one, UTC."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import UTC, datetime

        if isinstance(value, datetime):
            found = value
        else:
            try:
                found = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 time such as 2026-01-01T10:30:00+00:00", param, ctx)
        return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


@main.command()
@spec_option
@click.option(
    "--since",
    type=Timestamp(),
    default=None,
    help="Only notifications received at or after this time (ISO 8601; UTC unless it has an offset).",
)
@click.option(
    "--until",
    type=Timestamp(),
    default=None,
    help="Only notifications received before this time (ISO 8601; UTC unless it has an offset).",
)
@click.option("--subscription", "subscription_id", default=None, help="Only this Graph subscription id.")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant id.")
@click.option("--yes", is_flag=True, help="Replay every stored notification when no filter is given.")
@friendly_errors
def replay(
    spec_path: Path,
    since: Any,
    until: Any,
    subscription_id: str | None,
    tenant_id: str | None,
    yes: bool,
) -> None:
    """Put processed inbox rows back in the queue, by time range or subscription, for recovery.

    After restoring the database from a backup, or after a bug in a pass, the worker processes the
    replayed notifications again (each marks its scope dirty; a delta pass is idempotent). The worker
    deletes processed notifications after --keep-notifications (7 days by default); those cannot be
    replayed: `syncer sync --full` enumerates from scratch instead.
    """
    from syncer.inbox import Inbox
    from syncer.spec import load_spec

    if since is None and until is None and subscription_id is None and tenant_id is None and not yes:
        raise click.UsageError("give --since, --until, --subscription or --tenant (or --yes for all)")
    spec = load_spec(spec_path, check_secrets=False)
    engine = database.create_engine(spec.database_url)
    try:
        count = Inbox(engine).replay(
            since=since,
            until=until,
            subscription_id=subscription_id,
            tenant_id=tenant_id,
        )
    finally:
        engine.dispose()
    click.echo(f"{count} notifications queued again; the worker processes them at its next drain")


@main.command("sync")
@spec_option
@click.argument("names", nargs=-1)
@click.option(
    "--full", is_flag=True, help="Enumerate every scope from scratch (and sweep what Graph no longer has)."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress line (default: when stderr is a terminal).",
)
@friendly_errors
def sync_command(spec_path: Path, names: tuple[str, ...], full: bool, progress: bool | None) -> None:
    """Run one sync pass now for the named subscriptions (all when none are named).

    The same pass the worker runs: from the stored deltaLink (or a full enumeration the first time),
    writing rows and the new deltaLink together. It runs now, even for a scope postponed after
    failures or throttling; a scope a running worker is syncing is left to it (busy). Ctrl-C or
    SIGTERM stops at the next commit and gives the scope back (the next pass resumes there).
    Exit status 0 when every scope was synced, 1 when any was not (failed, throttled, busy), 4 when a
    delegated account must sign in again (the others are synced), 130/143 when interrupted by SIGINT/SIGTERM.
    """
    import threading

    from syncer.spec import load_spec
    from syncer.worker.scheduler import stop_on_signals, sync_once
    from syncer.worker.sync import Progress, progress_line

    show = sys.stderr.isatty() if progress is None else progress
    tty = sys.stderr.isatty()

    def report(p: Progress) -> None:
        line = progress_line(p)
        click.echo(f"\r{line}" if tty else line, err=True, nl=not tty)

    spec = load_spec(spec_path).resolve_emulator()
    stop = threading.Event()
    signed_out: list[SignInRequired] = []
    with stop_on_signals(stop) as caught:
        results = sync_once(spec, names, full=full, progress=report if show else None, stop=stop, signed_out=signed_out)
    if show and tty:
        click.echo("", err=True)
    missed = []
    for r in results:
        detail = (
            f" ({r.error})" if r.error
            else f" (resync: {r.resync})" if r.resync
            else " (a running worker holds it; it is being synced)" if r.outcome == "busy"
            else " (interrupted; the next pass resumes from the last commit)" if r.outcome == "stopped"
            else ""
        )
        click.echo(
            f"{r.scope}: {r.outcome}{' full' if r.full else ''}, {r.items} items, {r.upserted} upserted, "
            f"{r.deleted} deleted, {r.pages} pages{detail}"
        )
        if r.outcome != "ok":
            missed.append(r.scope)
    if caught:
        sys.exit(128 + caught[0])
    if missed:
        click.echo(f"{len(missed)} of {len(results)} scopes not synced: {', '.join(missed[:10])}"
                   f"{' ...' if len(missed) > 10 else ''}", err=True)
    for error in signed_out:
        click.echo(f"Error: {error}", err=True)
    sys.exit(EXIT_SIGN_IN_REQUIRED if signed_out else 1 if missed else 0)


@main.command()
@click.argument("names", metavar="[NAME]...", nargs=-1)
@spec_option
@click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format."
)
@click.option("--scope", "pattern", default=None, help="Show the scopes whose key matches this glob ('users/*/messages').")
@click.option("--failing", is_flag=True, help="Show the scopes needing attention: failing, stale or never synced.")
@click.option(
    "--max-lag",
    default=None,
    callback=lambda _ctx, _param, value: None if value is None else _duration(value),
    help="Exit 2 if a scope's freshness is older than this (30m, 2h, ...) or it never succeeded: a check "
    "for monitoring. Without it, each scope is judged by its declaration's sync_interval (see --check).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 2 if a scope is stale (freshness older than its sync_interval plus a grace), failing or never synced.",
)
@click.option(
    "--rows/--no-rows",
    default=True,
    show_default=True,
    help="Count each scope's live mirror rows (reads every mirror table; --no-rows for checks run often).",
)
@friendly_errors
def status(
    names: tuple[str, ...],
    spec_path: Path,
    output: str,
    pattern: str | None,
    failing: bool,
    max_lag: timedelta | None,
    check: bool,
    rows: bool,
) -> None:
    """A summary per declaration: scopes by health, rows, freshness, next expiry, inbox depth.

    NAME (a declaration), --scope or --failing show scopes in detail. Freshness is the time as of
    which the mirror is known to equal Graph: the last pass or processed notification of the scope.
    Exit 0; 4 when a delegated account must sign in again (`syncer login NAME`, named first); 2 with
    --check or --max-lag when a scope is stale (named on stderr); 1 on errors.
    """
    import json
    import shutil

    from syncer.spec import load_spec
    from syncer.status import collect, human, needing_attention, render, stale, to_json

    spec = load_spec(spec_path, check_secrets=False)
    unknown = sorted(set(names) - {sub.name for sub in spec.subscriptions})
    if unknown:
        raise click.UsageError(
            f"no declaration named {', '.join(map(repr, unknown))} in {spec_path} "
            f"(declared: {', '.join(sub.name for sub in spec.subscriptions) or 'none'})"
        )
    engine = database.create_engine(spec.database_url)
    try:
        # The summary alone (no argument, text) is read by grouped queries, whatever the number of scopes.
        detail = bool(names or pattern or failing or check or max_lag is not None or output == "json")
        found = collect(
            engine, count_rows=rows, max_lag=max_lag, intervals={sub.name: sub.sync_interval for sub in spec.subscriptions},
            detail=detail,
        )
    finally:
        engine.dispose()
    if output == "json":
        click.echo(json.dumps(to_json(found), indent=2))
    else:
        width = shutil.get_terminal_size((160, 24)).columns
        click.echo(render(found, names=names, pattern=pattern, failing=failing, width=width))
    if found.signed_out():
        if output == "json":  # the text output says it at its top
            click.echo("\n".join(a.line() for a in found.signed_out()), err=True)
        sys.exit(EXIT_SIGN_IN_REQUIRED)
    if max_lag is not None:
        late = stale(found, max_lag)
        if late:
            click.echo(f"{len(late)} scope(s) staler than {human(max_lag)}: " + ", ".join(sc.scope for sc in late[:20]), err=True)
            sys.exit(2)
    if check:
        late = needing_attention(found)
        if late:
            click.echo(
                f"{len(late)} scope(s) need attention: "
                + ", ".join(f"{sc.scope} ({sc.health})" for sc in late[:20]),
                err=True,
            )
            sys.exit(2)


@main.command()
@spec_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file holding the token every request must carry (else SYNCER_UI_TOKEN); required off loopback.",
)
@friendly_errors
def ui(spec_path: Path, host: str, port: int, token_file: Path | None) -> None:
    """Serve a read-only status page: declarations, scopes, subscriptions, the last 24 hours, the mirror tables.

    On loopback by default. Bound to another address it needs a token (basic auth with the token as
    password, or `Authorization: Bearer TOKEN`), from --token-file or SYNCER_UI_TOKEN.
    """
    import ipaddress

    from werkzeug.serving import make_server

    from syncer.spec import load_spec
    from syncer.ui import create_app

    token = token_file.read_text().strip() if token_file else os.environ.get("SYNCER_UI_TOKEN") or None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise click.UsageError(f"--host {host} is not loopback: give a token (--token-file or SYNCER_UI_TOKEN)")
    spec = load_spec(spec_path, check_secrets=False)
    engine = database.create_engine(spec.database_url)
    server = make_server(host, port, create_app(engine, spec, token=token), threaded=True)
    click.echo(f"syncer ui: http://{host}:{server.server_port}/ (read-only{', token required' if token else ''})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.dispose()


def _delegated_entry(spec_path: Path, name: str | None) -> tuple[Any, str]:
    from syncer.spec import load_spec

    spec = load_spec(spec_path, check_secrets=False)
    delegated = [t.name for t in spec.tenants if t.delegated]
    if name is None:
        if len(delegated) != 1:
            raise click.UsageError(
                "name the account to sign in: " + (", ".join(delegated) or "the spec declares no auth: delegated tenant")
            )
        name = delegated[0]
    elif name not in delegated:
        raise click.UsageError(f"{name!r} is not a tenant with auth: delegated (declared: {', '.join(delegated) or 'none'})")
    return spec, name


@main.command()
@click.argument("name", required=False)
@click.option("--browser", is_flag=True, help="Sign in in a web browser (auth code + PKCE, loopback redirect).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A Graph permission to ask for (repeatable); default: GRAPH/.default, the app registration's permissions.",
)
@spec_option
@friendly_errors
def login(spec_path: Path, name: str | None, browser: bool, scopes: tuple[str, ...]) -> None:
    """Sign a delegated account (auth: delegated) in and keep its tokens in its token cache.

    Device code by default: open the URL shown on any device and type the code. Prints who signed in and
    which permissions were granted. NAME may be left out when the spec declares one delegated account.
    """
    from syncer.graph.auth import graph_scope
    from syncer.graph.delegated import delegated_credential

    spec, name = _delegated_entry(spec_path, name)
    spec = spec.resolve_emulator()
    credential = delegated_credential(spec, name)
    signed = credential.login(
        scopes or (graph_scope(spec.graph.graph_url),),
        show=lambda message: click.echo(message, err=True),
        browser=browser,
    )
    click.echo(f"Signed in as {signed.username} (tenant {signed.tenant_id}) for {name}.")
    click.echo("Granted: " + (" ".join(signed.scopes) or "(none reported)"))
    click.echo(f"Token cache: {credential.cache_file.path}")


@main.command()
@click.argument("name", required=False)
@spec_option
@friendly_errors
def logout(spec_path: Path, name: str | None) -> None:
    """Forget a delegated account's tokens (its token cache); sign in again with `syncer login`."""
    from syncer.graph.delegated import delegated_credential

    spec, name = _delegated_entry(spec_path, name)
    credential = delegated_credential(spec, name)
    if credential.logout():
        click.echo(f"Signed out {credential.account} ({name}): its tokens are gone from {credential.cache_file.path}.")
    else:
        click.echo(f"{credential.account} ({name}) was not signed in.")


@main.command()
@click.argument("table")
@click.argument("item_id", metavar="ID")
@spec_option
@click.option("--tenant", help="Tenant id, when the database mirrors several tenants.")
@friendly_errors
def history(spec_path: Path, table: str, item_id: str, tenant: str | None) -> None:
    """Print every version of one row of a mirror table with `history:` (docs/history.md), as a diff."""
    from syncer import database
    from syncer import history as versions
    from syncer.spec import load_spec

    spec = load_spec(spec_path)
    declared = {s.mirror.table: s.mirror for s in spec.subscriptions if s.mirror.history is not None}
    if table not in declared:
        raise click.UsageError(
            f"no declaration with history: writes table {table!r} (tables with history: {', '.join(sorted(declared)) or 'none'})"
        )
    engine = database.create_engine(spec.database_url)
    try:
        with engine.connect() as connection:
            rows = versions.versions(connection, declared[table], item_id, tenant_id=tenant)
    finally:
        engine.dispose()
    click.echo(f"{table} {item_id}: {len(rows)} versions")
    click.echo(versions.render(declared[table], rows), nl=False)


@main.command()
@spec_option
@friendly_errors
def doctor(spec_path: Path) -> None:
    """Pre-flight checks before the first reconcile, one line each with the fix when one fails.

    Spec valid, database reachable and migrated, a token per tenant, the permissions each declared
    resource needs, clock skew against Graph, and the notification URL answering Graph's validation
    echo in time (measured).
    """
    from syncer.doctor import iter_checks, report

    checks = []
    for check in iter_checks(spec_path):
        checks.append(check)
        click.echo(check.line())
    lines, code = report(checks)
    click.echo(lines[-1])
    sys.exit(code)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=0, help="Port (default: a free one, printed at start).")
@click.option(
    "--seed",
    "rng_seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every random choice (ids, faults).",
)
@click.option(
    "--seed-users", type=int, default=0, show_default=True, help="Seed this many generated users at start."
)
@click.option(
    "--info-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write graph_url, authority, tenant_id, client_id, client_secret, ca_cert... as JSON.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the certificates go (default: a temporary directory).",
)
@click.option(
    "--personal-user",
    "personal_users",
    metavar="UPN",
    multiple=True,
    help="Create this personal Microsoft account (tenant 9188040d-...) with a little mail, calendar, contacts, "
    "To Do and OneDrive content. Repeatable.",
)
@click.option(
    "--sign-in-as",
    metavar="UPN",
    default=None,
    help="Sign this user in without a page: /authorize redirects at once, device codes are approved when issued.",
)
def emulator(
    host: str,
    port: int,
    rng_seed: int,
    seed_users: int,
    info_file: Path | None,
    workdir: Path | None,
    personal_users: tuple[str, ...],
    sign_in_as: str | None,
) -> None:
    """Serve a local Microsoft Graph emulator over HTTPS (Graph at /v1.0, identity at /{tenant}).

    Prints the app credentials it registered and the CA certificate clients must trust; the admin API
    under /_emulator/ seeds data, injects faults, moves the clock and reports deliveries.
    """
    from syncer.emulator import EmulatorConfig
    from syncer.emulator.server import serve

    serve(
        EmulatorConfig(
            host=host, port=port, seed=rng_seed, sign_in_as=sign_in_as, personal_users=personal_users
        ),
        workdir=workdir,
        info_file=info_file,
        seed_users=seed_users,
        echo=click.echo,
    )


@main.command()
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


@main.command()
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


@main.command()
@spec_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".syncer/demo"),
    show_default=True,
    help="Where the demo keeps its SQLite mirror and the emulator's certificates (emptied first).",
)
@click.option(
    "--timeout", type=float, default=50.0, show_default=True, help="Seconds before the demo gives up."
)
@friendly_errors
def demo(spec_path: Path, workdir: Path, timeout: float) -> None:
    """Run the whole loop against the built-in Graph emulator and show the mirror converging.

    Starts the emulator, seeds a small organisation, runs receiver, reconcile and worker on the
    bundled subscriptions.yaml, changes the tenant (creates, updates, deletes, a 410, throttling) and
    compares every mirror table with Graph. Exit status 0 only if they match.
    """
    from syncer import log
    from syncer.demo import run_demo

    if not click.get_current_context().find_root().params.get("log_level"):
        log.configure("WARNING")  # the demo's own lines are the live view; logs only for problems
    ok = run_demo(spec_path, workdir=workdir, echo=click.echo, timeout=timeout)
    sys.exit(0 if ok else 1)
