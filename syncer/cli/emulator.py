"""The Graph emulator on its own (`emulator`), and the whole loop run against it (`demo`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from syncer.cli.options import friendly_errors, spec_option


@click.command()
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


@click.command()
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
