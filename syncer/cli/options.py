"""The flags and exit statuses every command shares: --spec, durations and times as flags, errors.

Errors from syncer's tree are printed as one clear message and exit 1 (4: a delegated account must sign
in again); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

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


def duration(value: str) -> timedelta:
    """A duration flag, written as in the spec (``7d``, ``36h``, ``90m``)."""
    from syncer.spec.reader import parse_duration

    found = parse_duration(value)
    if found is None or found <= timedelta(0):
        raise click.BadParameter(f"{value!r} is not a duration such as 7d, 36h or 90m")
    return found


def retention(value: str) -> timedelta | None:
    """A retention flag: a duration, or ``forever``."""
    if value.strip().lower() == "forever":
        return None
    try:
        return duration(value)
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
