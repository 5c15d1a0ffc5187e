"""The example queries of docs/queries.md, run against a mirror of the demo's organisation and checked
against what Graph (the emulator) says, on SQLite and PostgreSQL.

The queries are read from the page itself, so the page cannot drift from what runs: each ``sql`` block
starting ``-- query: NAME`` (optionally ``(postgresql)`` / ``(sqlite)``) is run, and every name has a
check below computing the expected answer from Graph's own data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sync_support import SyncEnv

from syncer import database, demo, mirror
from syncer.graph.client import GraphClient
from syncer.migrate import upgrade_core
from syncer.spec import load_spec
from syncer.worker.scheduler import sync_once

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "queries.md"
_BLOCK = re.compile(r"```sql\n-- query: ([\w-]+)(?: \((postgresql|sqlite)\))?\n(.*?)```", re.S)

BOARD = """
  - name: board-mail
    resource: users/{{user}}/messages
    for_each: {{users: [{upns}]}}
    mirror: {{table: board_mail, columns: [subject, isRead]}}
  - name: ops-owners
    resource: groups/{group}/owners
    mirror: {{table: group_owners, columns: [userPrincipalName]}}
"""


def doc_queries(dialect: str) -> dict[str, str]:
    """The page's queries for *dialect*: name -> SQL."""
    found: dict[str, str] = {}
    for name, only, sql in _BLOCK.findall(DOC.read_text()):
        if not only or only == dialect:
            assert name not in found, f"docs/queries.md: query {name} twice for {dialect}"
            found[name] = sql.strip()
    return found


@dataclass
class Truth:
    """Graph's data, read through the emulator's API (not through syncer)."""

    users: dict[str, dict[str, Any]]
    inbox: dict[str, list[dict[str, Any]]]
    events: dict[str, list[dict[str, Any]]]
    drives: dict[str, tuple[str, list[dict[str, Any]]]]
    members: dict[str, tuple[str, list[str]]]
    board: list[str]
    owners: tuple[str, list[str]]
    """The declared group's name and its owners' ids."""
    mail: dict[str, list[dict[str, Any]]]
    """Every folder's messages of the board's users."""


def _minute(value: Any) -> str:
    """A time as 'YYYY-MM-DD HH:MM' whatever the driver returns (SQLite: text, PostgreSQL: a datetime)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return str(value).replace("T", " ")[:16]


def _graph_time(value: str) -> datetime:
    return datetime.fromisoformat(value[:26].rstrip("Z")).replace(tzinfo=UTC)


def inbox_per_user(t: Truth) -> list[tuple[Any, ...]]:
    rows = [(u["displayName"], u["jobTitle"], len(t.inbox.get(i, []))) for i, u in t.users.items()]
    return sorted(rows, key=lambda r: (-r[2], r[0]))[:5]


def most_unread(t: Truth) -> list[tuple[Any, ...]]:
    counts = [(t.users[i]["userPrincipalName"], sum(not m["isRead"] for m in ms)) for i, ms in t.inbox.items()]
    return sorted([c for c in counts if c[1]], key=lambda r: (-r[1], r[0]))[:10]


def board_mail(t: Truth) -> list[tuple[Any, ...]]:
    by_upn = {u["userPrincipalName"]: i for i, u in t.users.items()}
    rows = [(upn, len(t.mail[by_upn[upn]]), sum(not m["isRead"] for m in t.mail[by_upn[upn]])) for upn in t.board]
    return sorted(r for r in rows if r[1])


def meetings_next_7_days(t: Truth) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    rows = []
    for user_id, events in t.events.items():
        starts = sorted(s for e in events if now <= (s := _graph_time(e["start"]["dateTime"])) < now + timedelta(days=7))
        if starts:
            rows.append((t.users[user_id]["userPrincipalName"], len(starts), _minute(starts[0])))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def files_changed_today(t: Truth) -> list[tuple[Any, ...]]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = []
    for user_id, (drive_id, items) in t.drives.items():
        changed = sum("file" in i and _graph_time(i["lastModifiedDateTime"]) >= today for i in items)
        if changed:
            rows.append((drive_id, t.users[user_id]["userPrincipalName"], changed))
    return sorted(rows, key=lambda r: (-r[2], r[0]))


def members_without_licence(t: Truth) -> list[tuple[Any, ...]]:
    rows = [
        (name, t.users[m]["userPrincipalName"])
        for name, members in t.members.values()
        for m in members
        if m in t.users and not t.users[m].get("assignedLicenses")
    ]
    return sorted(rows)


def owners_without_licence(t: Truth) -> list[tuple[Any, ...]]:
    name, owners = t.owners
    return sorted((name, t.users[o]["userPrincipalName"]) for o in owners if not t.users[o].get("assignedLicenses"))


CHECKS: dict[str, Callable[[Truth], list[tuple[Any, ...]]]] = {
    "inbox-per-user": inbox_per_user,
    "most-unread": most_unread,
    "board-mail": board_mail,
    "meetings-next-7-days": meetings_next_7_days,
    "files-changed-today": files_changed_today,
    "members-without-licence": members_without_licence,
    "owners-without-licence": owners_without_licence,
}
NORMALISE: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    "meetings-next-7-days": lambda r: (r[0], r[1], _minute(r[2])),
}


def test_every_query_of_the_page_is_checked_on_both_databases() -> None:
    for dialect in ("sqlite", "postgresql"):
        assert set(doc_queries(dialect)) == set(CHECKS), dialect


def test_the_demo_ends_with_the_pages_join() -> None:
    """The demo's example query is the page's (on user_id: it finds users declared by UPN too)."""
    assert demo.EXAMPLE_QUERY.strip() == doc_queries("sqlite")["inbox-per-user"]
    assert "_scope" not in demo.EXAMPLE_QUERY


@pytest.fixture
def org(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[tuple[SyncEnv, Truth]]:
    """The demo's organisation, changed a little through Graph's API, mirrored with the bundled spec (plus a
    declaration naming users by UPN); and Graph's truth, read after the changes."""
    seeded = graph.admin("POST", "seed", json=demo.SEED)
    assert seeded.status_code == 200, seeded.text
    users = {u["id"]: u for u in graph.delta_all("users/delta?$select=id,displayName,jobTitle,userPrincipalName,assignedLicenses")[0]}
    ids = sorted(users)
    board = sorted(users[i]["userPrincipalName"] for i in ids[:3])

    # Changes through the API: mail read, a meeting soon and one after next week, a new file.
    for user_id, read in ((ids[0], 3), (ids[1], 1), (ids[4], 4)):
        for message in graph.get(f"users/{user_id}/mailFolders/inbox/messages?$select=id&$top={read}").json()["value"]:
            assert graph.patch(f"users/{user_id}/messages/{message['id']}", json={"isRead": True}).status_code == 200
    soon = datetime.now(UTC) + timedelta(days=2, hours=3)
    for user_id, start in ((ids[2], soon), (ids[2], soon + timedelta(days=8))):
        fmt = "%Y-%m-%dT%H:%M:%S"
        body = {"subject": "review", "start": {"dateTime": start.strftime(fmt), "timeZone": "UTC"},
                "end": {"dateTime": (start + timedelta(hours=1)).strftime(fmt), "timeZone": "UTC"}}
        assert graph.post(f"users/{user_id}/events", json=body).status_code == 201
    drive = graph.get(f"users/{ids[3]}/drive").json()["id"]
    assert graph.request("PUT", f"drives/{drive}/root:/plan.txt:/content", data=b"plan").status_code in (200, 201)

    # Two owners of one group: one with a licence, one without (the seed leaves every fourth user unlicensed).
    group = sorted(g["id"] for g in graph.delta_all("groups/delta?$select=id")[0])[0]
    unlicensed = next(i for i in ids if not users[i]["assignedLicenses"])
    licensed = next(i for i in ids if users[i]["assignedLicenses"])
    for owner in (unlicensed, licensed):
        ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{owner}"}
        assert graph.post(f"groups/{group}/owners/$ref", json=ref).status_code == 204

    info = tmp_path / "emulator.json"
    info.write_text(__import__("json").dumps(emulator_info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text((ROOT / "subscriptions.yaml").read_text() + BOARD.format(upns=", ".join(board), group=group))
    spec = load_spec(path, environ={"SYNCER_EMULATOR_INFO": str(info), "SYNCER_DATABASE_URL": database_url})
    spec = spec.resolve_emulator()
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    engine = database.create_engine(spec.database_url)
    client = GraphClient.from_spec(spec, spec.tenants[0].name)
    try:
        results = sync_once(spec, (), clients={spec.tenants[0].tenant_id: client}, engine=engine)
        assert all(r.outcome == "ok" for r in results), [r for r in results if r.outcome != "ok"]
        truth = Truth(
            users=users,
            inbox={i: list(graph.delta_all(f"users/{i}/mailFolders/inbox/messages/delta?$select=id,isRead")[0]) for i in ids},
            events={i: graph.get(f"users/{i}/events?$top=999").json()["value"] for i in ids},
            drives={
                i: (graph.get(f"users/{i}/drive").json()["id"], graph.delta_all(f"users/{i}/drive/root/delta")[0])
                for i in ids
            },
            members={
                g["id"]: (g["displayName"], [m["id"] for m in graph.get(f"groups/{g['id']}/members?$select=id").json()["value"]])
                for g in graph.delta_all("groups/delta?$select=id,displayName")[0]
            },
            board=board,
            owners=(
                graph.get(f"groups/{group}").json()["displayName"],
                [o["id"] for o in graph.get(f"groups/{group}/owners?$select=id").json()["value"]],
            ),
            mail={
                i: graph.get(f"users/{i}/messages?$select=id,isRead&$top=999").json()["value"]
                for i in ids if users[i]["userPrincipalName"] in board
            },
        )
        yield SyncEnv(spec, engine, client, graph), truth
    finally:
        client.close()
        engine.dispose()


def test_the_pages_queries_answer_what_graph_says(org: tuple[SyncEnv, Truth]) -> None:
    env, truth = org
    dialect = env.engine.dialect.name
    with env.engine.connect() as connection:
        for name, sql in doc_queries(dialect).items():
            normalise = NORMALISE.get(name, lambda r: r)
            found = [normalise(tuple(row)) for row in connection.execute(sa.text(sql))]
            expected = CHECKS[name](truth)
            assert found == expected, name
            assert found, f"{name}: the organisation gives it rows to find"
    # The join the demo printed before owner columns: nothing for the users the spec names by UPN.
    with env.engine.connect() as connection:
        old = connection.execute(sa.text(
            "SELECT count(*) FROM users u JOIN board_mail m ON m._scope LIKE 'users/' || u.id || '/%'"
        )).scalar_one()
    assert old == 0
