"""syncer's own record of its subscriptions (``syncer_subscriptions``): read for the plan, written as Graph answers.

The table is the only place a clientState lives: :func:`load_recorded` gives the planner every
column but that one, and :func:`client_state_of` reads it back for one subscription. The writers are
called by :mod:`syncer.reconcile.apply` and :mod:`syncer.reconcile.lifecycle` as soon as Graph has
confirmed a call, so a crash between two phases loses nothing Graph already did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer.errors import DatabaseError
from syncer.graph.subscriptions import LiveSubscription
from syncer.reconcile.actions import Action, Kind
from syncer.reconcile.desired import Desired
from syncer.reconcile.plan import Recorded
from syncer.schema import one_of
from syncer.schema import subscriptions as table


def load_recorded(engine: Engine, *, tenant_ids: Sequence[str] | None = None) -> list[Recorded]:
    """The rows of ``syncer_subscriptions`` (without their clientState), optionally for some tenants."""
    query = sa.select(*(c for c in table.c if c.name != "client_state"))
    if tenant_ids is not None:
        query = query.where(table.c.tenant_id.in_(list(tenant_ids)))
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    except sa.exc.OperationalError as error:
        raise DatabaseError(
            f"cannot read syncer_subscriptions ({error.orig}); is the database migrated (`syncer db upgrade`)?"
        ) from error
    except sa.exc.ProgrammingError as error:
        raise DatabaseError(
            f"cannot read syncer_subscriptions ({error.orig}); run `syncer db upgrade` first"
        ) from error
    return [
        Recorded(
            subscription_id=r.subscription_id,
            tenant_id=r.tenant_id,
            name=r.name,
            scope_key=r.scope_key,
            resource=r.resource,
            change_types=tuple(sorted(c for c in r.change_type.split(",") if c)),
            notification_url=r.notification_url,
            expires_at=r.expires_at,
            lifecycle_url=r.lifecycle_url,
            include_resource_data=bool(r.include_resource_data),
            encryption_certificate_id=r.encryption_certificate_id,
            status=r.status,
        )
        for r in rows
    ]


def client_state_of(engine: Engine, subscription_id: str) -> str | None:
    """The clientState syncer gave *subscription_id* (for the receiver), or None when unknown."""
    with engine.connect() as connection:
        return connection.execute(
            sa.select(table.c.client_state).where(table.c.subscription_id == subscription_id)
        ).scalar_one_or_none()


def scope_keys_of(engine: Engine, subscription_ids: Sequence[str]) -> dict[str, str]:
    """Subscription id -> its scope key (the subscription-level resource), for the ids that have a row."""
    if not subscription_ids:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.subscription_id, table.c.scope_key)
            .where(one_of(table.c.subscription_id, subscription_ids, dialect=engine.dialect.name))
        ).all()
    return {r.subscription_id: str(r.scope_key) for r in rows}


def row_values(d: Desired, live: LiveSubscription, client_state: str, now: datetime) -> dict[str, Any]:
    """The row of a subscription just created for *d*, with the clientState only this table keeps."""
    return {
        "subscription_id": live.id,
        "tenant_id": d.tenant_id,
        "name": d.name,
        "scope_key": d.scope_key,
        "resource": d.resource,
        "change_type": ",".join(d.change_types),
        "notification_url": d.notification_url,
        "lifecycle_url": d.lifecycle_url,
        "client_state": client_state,
        "include_resource_data": d.include_resource_data,
        "encryption_certificate_id": d.encryption_certificate_id,
        "expires_at": live.expiration,
        "created_at": now,
        "updated_at": now,
        "status": "active",
    }


def record_created(engine: Engine, rows: Sequence[dict[str, Any]], *, replacing: Sequence[str]) -> None:
    """Insert the rows of subscriptions just created, and delete those of the ones they replace, in one transaction."""
    with engine.begin() as connection:
        if replacing:
            connection.execute(sa.delete(table).where(table.c.subscription_id.in_(list(replacing))))
        if rows:
            connection.execute(sa.insert(table), list(rows))


def delete_rows(engine: Engine, subscription_ids: Sequence[str]) -> None:
    """Forget these subscriptions (in chunks: an IN list of thousands is slow or refused)."""
    ids = [s for s in subscription_ids if s]
    if not ids:
        return
    with engine.begin() as connection:
        for start in range(0, len(ids), 500):
            connection.execute(sa.delete(table).where(table.c.subscription_id.in_(ids[start : start + 500])))


def record_patches(
    engine: Engine, patched: Sequence[tuple[Action, LiveSubscription]], *, now: datetime
) -> None:
    """Record what Graph answered to PATCHes (expiry, URL, certificate; an adopt's new link).

    Plain renewals, nearly all of them at scale, go in one executemany; rows with more to change one by one.
    """
    if not patched:
        return
    plain: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for action, live in patched:
            values: dict[str, Any] = {"expires_at": live.expiration, "updated_at": now, "status": "active"}
            values["notification_url"] = live.notification_url
            if not live.include_resource_data and action.kind != Kind.ADOPT:
                plain.append({"b_id": live.id, "b_expires": live.expiration, "b_url": live.notification_url})
                continue
            if live.include_resource_data:
                values["encryption_certificate_id"] = live.encryption_certificate_id
            if action.kind == Kind.ADOPT and action.desired is not None:
                values.update(link_values(action.desired))
            connection.execute(sa.update(table).where(table.c.subscription_id == live.id).values(**values))
        if plain:
            connection.execute(
                sa.update(table)
                .where(table.c.subscription_id == sa.bindparam("b_id"))
                .values(expires_at=sa.bindparam("b_expires"), notification_url=sa.bindparam("b_url"),
                        updated_at=now, status="active"),
                plain,
            )


def link_values(d: Desired) -> dict[str, Any]:
    """The columns that tie a row to its declaration."""
    return {"name": d.name, "scope_key": d.scope_key, "resource": d.resource, "tenant_id": d.tenant_id}


def relink_rows(engine: Engine, actions: Sequence[Action], *, now: datetime) -> None:
    """Tie adopted subscriptions' rows to the declarations that adopt them."""
    if not actions:
        return
    with engine.begin() as connection:
        for action in actions:
            assert action.desired is not None
            connection.execute(
                sa.update(table)
                .where(table.c.subscription_id == action.subscription_id)
                .values(**link_values(action.desired), updated_at=now, status="active")
            )
