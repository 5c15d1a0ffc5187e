"""Getting a deployment ready: `validate` the spec, `db upgrade` the tables, `doctor` before the first reconcile."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from syncer.cli.options import friendly_errors, spec_option


@click.command()
@spec_option
@friendly_errors
def validate(spec_path: Path) -> None:
    """Check subscriptions.yaml and print every problem with its line and field."""
    from syncer.spec import load_spec

    spec = load_spec(spec_path)
    click.echo(f"{spec_path}: valid ({len(spec.subscriptions)} subscriptions, {len(spec.tenants)} tenants)")


@click.group()
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


@click.command()
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
