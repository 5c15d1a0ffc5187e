"""Work on the pull half by hand: `sync` (one pass now, the worker's own) and `replay` (notifications queued again)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from syncer import database
from syncer.cli.options import EXIT_SIGN_IN_REQUIRED, Timestamp, friendly_errors, spec_option
from syncer.errors import SignInRequired


@click.command("sync")
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


@click.command()
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
