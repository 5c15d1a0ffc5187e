"""Delegated accounts (``auth: delegated``): `login` keeps a user's tokens in its token cache, `logout` forgets them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from syncer.cli.options import friendly_errors, spec_option


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


@click.command()
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


@click.command()
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
