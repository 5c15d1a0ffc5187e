"""`syncer replay`: processed inbox rows go back in the queue by time range or subscription, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from syncer import database, schema
from syncer.cli import main
from syncer.inbox import Inbox, NewItem
from syncer.migrate import upgrade_core

SPEC = Path(__file__).resolve().parent.parent / "subscriptions.yaml"


def item(n: int, subscription: str) -> NewItem:
    return NewItem("tenant", subscription, "change", "updated", f"Users/u{n}", f"u{n}", f"key-{n}",
                   {"subscriptionId": subscription, "resource": f"Users/u{n}"})


def test_replay_by_time_range_and_subscription(database_url: str) -> None:
    upgrade_core(database_url)
    engine = database.create_engine(database_url)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    times = iter([base, base + timedelta(hours=1), base + timedelta(hours=2), base + timedelta(hours=3)])
    inbox = Inbox(engine, clock=lambda: next(times))
    # Rows received at 00:00, 01:00 (subscription a) and 02:00 (subscription b), all processed.
    for n, subscription in enumerate(["a", "a", "b"]):
        inbox.put([item(n, subscription)])
    t = schema.inbox
    with engine.begin() as connection:
        connection.execute(sa.update(t).values(processed_at=base + timedelta(hours=5)))
    runner = CliRunner()
    env = {"SYNCER_DATABASE_URL": database_url}

    def waiting() -> list[str]:
        with engine.connect() as connection:
            return sorted(connection.execute(sa.select(t.c.resource).where(t.c.processed_at.is_(None))).scalars())

    try:
        refused = runner.invoke(main, ["replay", "--spec", str(SPEC)], env=env)
        assert refused.exit_code == 2 and waiting() == []

        result = runner.invoke(main, ["replay", "--spec", str(SPEC), "--since", "2026-01-01T00:30:00",
                                      "--until", "2026-01-01T01:30:00"], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("1 notifications queued again")
        assert waiting() == ["Users/u1"]

        # The times `syncer status --output json` prints (offset +00:00) are taken, and offsets are honoured.
        with engine.begin() as connection:
            connection.execute(sa.update(t).values(processed_at=base + timedelta(hours=5)))
        result = runner.invoke(main, ["replay", "--spec", str(SPEC), "--since", "2026-01-01T00:30:00+00:00",
                                      "--until", "2026-01-01T02:30:00+01:00"], env=env)
        assert result.exit_code == 0, result.output
        assert waiting() == ["Users/u1"]
        bad = runner.invoke(main, ["replay", "--spec", str(SPEC), "--since", "yesterday"], env=env)
        assert bad.exit_code == 2 and "ISO 8601" in bad.output

        result = runner.invoke(main, ["replay", "--spec", str(SPEC), "--subscription", "b"], env=env)
        assert result.exit_code == 0, result.output
        assert waiting() == ["Users/u1", "Users/u2"]

        # Replayed rows are claimable again: the worker's next drain takes them.
        claimed = Inbox(engine).claim("w", limit=10)
        assert sorted(i.resource or "" for i in claimed) == ["Users/u1", "Users/u2"]
    finally:
        engine.dispose()
