"""The `syncer` command line: thin commands, each a call into one module.

A command's docstring is its --help text, and every command is listed in the README (a test checks).
Errors from syncer's tree are printed as one clear message and exit 1; anything else is a bug and
keeps its traceback (:mod:`syncer.cli.options`).

This module is the root group and its list of commands; the commands live with their neighbours:

- :mod:`~syncer.cli.prepare`: ``validate``, ``db upgrade``, ``doctor`` (getting a deployment ready);
- :mod:`~syncer.cli.reconcile`: ``reconcile`` (Graph's subscriptions made to match the spec);
- :mod:`~syncer.cli.processes`: ``worker``, ``serve``, ``run`` (the long-running processes);
- :mod:`~syncer.cli.sync`: ``sync``, ``replay`` (work on the pull half by hand);
- :mod:`~syncer.cli.status`: ``status``, ``ui``, ``history`` (looking at the mirror);
- :mod:`~syncer.cli.accounts`: ``login``, ``logout`` (delegated accounts);
- :mod:`~syncer.cli.emulator`: ``emulator``, ``demo`` (the Graph emulator, and the loop run against it).
"""

from __future__ import annotations

import click

from syncer import __version__
from syncer.cli import accounts, emulator, prepare, processes, reconcile, status, sync


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


for command in (
    prepare.validate,
    prepare.db,
    prepare.doctor,
    reconcile.reconcile,
    processes.worker,
    processes.serve,
    processes.run,
    sync.sync_command,
    sync.replay,
    status.status,
    status.ui,
    status.history,
    accounts.login,
    accounts.logout,
    emulator.emulator,
    emulator.demo,
):
    main.add_command(command)
