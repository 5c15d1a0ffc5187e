"""`syncer reconcile`: the plan printed (text or JSON), then applied, with Terraform's exit statuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from syncer.cli.options import friendly_errors, spec_option


@click.command()
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
