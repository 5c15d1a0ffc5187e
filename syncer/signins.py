"""Which delegated accounts must sign in again: the ``syncer_sign_ins`` table.

A worker whose delegated account's refresh was refused (``invalid_grant``: password reset, sessions
revoked, consent withdrawn) pauses that account's scopes and records it here; when a new ``syncer
login`` lets it obtain a token again it records that too. ``syncer status`` prints the accounts that
must sign in, and the receiver's ``/metrics`` exposes ``syncer_sign_in_required{account=...}`` (1 or 0),
both from this table, so they agree with the worker whichever process serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import schema


@dataclass(frozen=True)
class SignIn:
    """One delegated account as a worker last saw it."""

    tenant_id: str
    name: str  # the tenant entry: `syncer login NAME`
    account: str
    required_since: datetime | None  # None: signed in
    reason: str | None

    @property
    def required(self) -> bool:
        return self.required_since is not None

    def line(self) -> str:
        """What a person reads."""
        return f"sign-in required: {self.account}, run `syncer login {self.name}`"


def record(
    engine: Engine, *, tenant_id: str, name: str, account: str, now: datetime, reason: str | None = None,
    required: bool,
) -> None:
    """Write the account's state (``required``: it must sign in again, for *reason*); the first time it was
    found signed out is kept across workers and restarts."""
    t = schema.sign_ins
    since: sa.ColumnElement[datetime | None] | None = (
        sa.func.coalesce(t.c.required_since, sa.bindparam("now_", now, type_=schema.UtcDateTime))
        if required else None
    )
    values = {"name": name, "account": account, "reason": reason if required else None, "updated_at": now,
              "required_since": since}
    with engine.begin() as connection:
        updated = connection.execute(sa.update(t).where(t.c.tenant_id == tenant_id).values(**values)).rowcount
        if updated:
            return
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(t).values(
                tenant_id=tenant_id, name=name, account=account, reason=values["reason"], updated_at=now,
                required_since=now if required else None,
            ))
    except sa.exc.IntegrityError:  # another worker inserted it meanwhile
        with engine.begin() as connection:
            connection.execute(sa.update(t).where(t.c.tenant_id == tenant_id).values(**values))


def read(engine: Engine) -> list[SignIn]:
    """Every recorded account, by name; empty before the table exists (an older database)."""
    t = schema.sign_ins
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(t.c.tenant_id, t.c.name, t.c.account, t.c.required_since, t.c.reason).order_by(t.c.name)
            ).all()
    except sa.exc.ProgrammingError:
        return []
    except sa.exc.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    return [SignIn(*row) for row in rows]
