"""Teams messages in the mirror: the owning ids (team, channel, chat, thread root, sender) are typed, indexed
columns of every chatMessage table, so that "messages in channel X by user Y last week" is one SQL query."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from syncer import database, mirror
from syncer.migrate import upgrade_core
from syncer.spec import load_spec
from syncer.worker.scopes import DELTA, Scope, Strategy
from syncer.worker.writer import RowWriter, apply_items

SPEC = """version: 1
graph: {{cloud: global}}
tenants:
  - {{name: contoso, tenant_id: 84bd8158-6d4d-4958-8b9f-9d6445542f95, client_id: c, client_secret: {{env: S}}}}
database: {{url: '{url}'}}
subscriptions:
  - name: channel-messages
    resource: 'teams/{{team}}/channels/{{channel}}/messages'
    for_each: {{teams: all}}
    mirror: {{table: channel_messages, columns: [subject, {{field: from.user.displayName, column: sender}}]}}
"""

TEAM, CHANNEL, OTHER = "fbe2bf47-16c8-47cf-b4a5-4b9b187c508b", "19:4a95f7d8@thread.tacv2", "19:0000@thread.tacv2"
ADA, BOB = "8ea0e38b-efb3-4757-924a-5f94061cf8c2", "2b0b5a3c-0000-4000-8000-000000000002"


def _message(mid: str, channel: str, user: str, created: datetime, reply_to: str | None = None) -> dict[str, object]:
    return {
        "id": mid, "replyToId": reply_to, "messageType": "message", "createdDateTime": created.isoformat().replace("+00:00", "Z"),
        "deletedDateTime": None, "subject": None, "chatId": None,
        "from": {"application": None, "device": None, "user": {"id": user, "displayName": user[:3], "userIdentityType": "aadUser"}},
        "body": {"contentType": "html", "content": f"<p>{mid}</p>"},
        "channelIdentity": {"teamId": TEAM, "channelId": channel},
    }


def test_messages_in_a_channel_by_a_user_last_week_is_one_query(tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SPEC.format(url=database_url))
    spec = load_spec(path, environ={"S": "x"})
    sub = spec.subscriptions[0]
    names = [c.name for c in sub.mirror.columns]
    assert names == ["subject", "sender", "team_id", "channel_id", "chat_id", "reply_to_id", "from_user_id",
                     "created_date_time", "deleted_date_time"]
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    engine = database.create_engine(spec.database_url)
    try:
        indexed = {tuple(ix["column_names"]) for ix in sa.inspect(engine).get_indexes("channel_messages")}
        for column in ("team_id", "channel_id", "chat_id", "reply_to_id", "from_user_id", "created_date_time"):
            assert ("tenant_id", column) in indexed, (column, indexed)
        tenant = spec.tenants[0].tenant_id
        scope = Scope(tenant_id=tenant, key=f"teams/{TEAM}/channels/{CHANNEL}/messages", name=sub.name,
                      parent_key=f"teams/{TEAM}/channels/{CHANNEL}/messages", table="channel_messages",
                      strategy=Strategy("chatMessage.channel", DELTA, "x"), initial_url="x", mirror=sub.mirror)
        now = datetime.now(UTC)
        items = [
            _message("1", CHANNEL, ADA, now - timedelta(days=2)),  # in: channel, Ada, this week
            _message("2", CHANNEL, ADA, now - timedelta(days=1), reply_to="1"),  # in: a reply
            _message("3", CHANNEL, BOB, now - timedelta(days=1)),  # another sender
            _message("4", OTHER, ADA, now - timedelta(days=1)),  # another channel
            _message("5", CHANNEL, ADA, now - timedelta(days=9)),  # older than a week
        ]
        with engine.begin() as connection:
            apply_items(connection, RowWriter(engine, scope), items, now=now, run_id=None)
        with engine.connect() as connection:
            found = connection.execute(
                sa.text(
                    "SELECT id, reply_to_id FROM channel_messages WHERE tenant_id = :t AND channel_id = :c "
                    "AND from_user_id = :u AND created_date_time >= :since AND _deleted_at IS NULL ORDER BY id"
                ),
                {"t": tenant, "c": CHANNEL, "u": ADA, "since": now - timedelta(days=7)},
            ).all()
            raw = connection.execute(sa.text("SELECT _raw FROM channel_messages WHERE id = '2'")).scalar_one()
        assert [tuple(r) for r in found] == [("1", None), ("2", "1")]
        assert (raw if isinstance(raw, dict) else json.loads(raw))["replyToId"] == "1"
    finally:
        engine.dispose()


def test_upgrading_an_older_table_adds_the_owner_columns_and_their_indexes(tmp_path: Path, database_url: str) -> None:
    """A chatMessage table made before the owner columns existed gets them (filled from _raw) and their indexes."""
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SPEC.format(url=database_url))
    spec = load_spec(path, environ={"S": "x"})
    sub = spec.subscriptions[0]
    old_mirror = type(sub.mirror)(sub.mirror.table, sub.mirror.columns[:2], sub.mirror.delete)
    old = spec.__class__(**{**spec.__dict__, "subscriptions": (type(sub)(**{**sub.__dict__, "mirror": old_mirror}),)})
    upgrade_core(spec.database_url)
    mirror.upgrade(old)
    engine = database.create_engine(spec.database_url)
    try:
        assert "channel_id" not in {c["name"] for c in sa.inspect(engine).get_columns("channel_messages")}
        changes = mirror.upgrade(spec)
        assert "created index ix_channel_messages_channel_id" in changes, changes
        indexed = {tuple(ix["column_names"]) for ix in sa.inspect(engine).get_indexes("channel_messages")}
        assert ("tenant_id", "channel_id") in indexed
        assert mirror.upgrade(spec) == []  # nothing left to do
    finally:
        engine.dispose()
