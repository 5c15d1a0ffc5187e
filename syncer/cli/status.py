"""Looking at the mirror: `status` (freshness and health), `ui` (the read-only status page), `history` (a row's versions)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import click

from syncer import database
from syncer.cli.options import EXIT_SIGN_IN_REQUIRED, duration, friendly_errors, spec_option


@click.command()
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
    callback=lambda _ctx, _param, value: None if value is None else duration(value),
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


@click.command()
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


@click.command()
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
