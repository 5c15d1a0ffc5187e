"""`syncer demo`: the whole loop on a laptop, with no tenant and no configuration.

It starts the built-in Graph emulator, seeds a small organisation, and runs syncer on the bundled
subscriptions.yaml exactly as a deployment would (receiver, reconcile, worker), with the spec's URLs
pointed at a free port and a SQLite file under ``.syncer/demo/``. Then it changes the tenant through
Graph's own write API — creates, updates, deletes, membership changes, an expired delta token (410)
and a burst of throttling — shows the mirror catching up, and finally compares every mirror table
with a fresh enumeration from Graph (:mod:`syncer.verify`). It exits 0 only if they match.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import sqlalchemy as sa

from syncer import mirror, schema, verify
from syncer.graph.client import GraphClient
from syncer.run import Runner
from syncer.spec import Spec, load_spec
from syncer.worker.scheduler import Schedule

Echo = Callable[[str], None]

# A small organisation: enough to show every table filling, small enough to finish in seconds.
SEED = {
    "users": 24,
    "groups": 4,
    "membersPerGroup": 6,
    "messagesPerUser": 4,
    "eventsPerUser": 3,
    "contactsPerUser": 3,
    "tasksPerUser": 3,
    "driveItemsPerUser": 3,
    "contentUsers": 24,
}
# One team (a group of its own) owned by the first user: General, a standard and a private channel, each
# public one with two messages and a reply each.
TEAMS_SEED = {"teamsPerUser": 1, "contentUsers": 1}


# docs/queries.md ("inbox-per-user"): rows carry their mailbox's user id (syncer.owners), whatever the spec named.
EXAMPLE_QUERY = """\
SELECT u.display_name, u.job_title, count(m.id) AS inbox
  FROM users u LEFT JOIN inbox_messages m
    ON m.tenant_id = u.tenant_id AND m.user_id = u.id AND m._deleted_at IS NULL
 WHERE u._deleted_at IS NULL
 GROUP BY u.tenant_id, u.id, u.display_name, u.job_title
 ORDER BY inbox DESC, u.display_name
 LIMIT 5"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    """One demo run: the emulator, syncer in-process, and the figures it shows."""

    spec_path: Path
    workdir: Path
    echo: Echo = print
    timeout: float = 40.0
    started: float = field(default_factory=time.monotonic)

    emulator: Any = None
    runner: Runner | None = None
    spec: Spec | None = None
    graph: GraphClient | None = None
    admin: requests.Session | None = None

    # --- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        from syncer.emulator import EmulatorConfig, EmulatorServer

        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        # Owner-only: the folder holds the database and the emulator's credentials (emulator.json).
        for folder in reversed([p for p in (self.workdir, *self.workdir.parents) if not p.exists()]):
            folder.mkdir(mode=0o700)
        self.emulator = EmulatorServer(EmulatorConfig(seed=7), workdir=self.workdir / "emulator").start()
        info_file = self.workdir / "emulator.json"
        self.emulator.write_info(info_file)
        info = self.emulator.info
        self.say(f"Graph emulator on {info['base_url']} (tenant {info['tenant_id']})")

        self.admin = requests.Session()
        self.admin.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= otherwise
        self.admin.verify = info["ca_cert"]
        seeded = self._admin("POST", "seed", json=SEED)
        self.say(
            f"seeded {SEED['users']} users, {SEED['groups']} groups, and per user "
            f"{SEED['messagesPerUser']} messages, {SEED['eventsPerUser']} events, {SEED['contactsPerUser']} contacts, "
            f"{SEED['driveItemsPerUser']} files, {SEED['tasksPerUser']} tasks ({seeded.get('seconds', 0):.2f}s)"
        )
        self._admin("POST", "seed", json=TEAMS_SEED)
        self.say("seeded a team with three channels and a short conversation")

        port = free_port()
        environ = dict(os.environ)
        environ.update(
            SYNCER_EMULATOR_INFO=str(info_file),
            SYNCER_RECEIVER_PORT=str(port),
            SYNCER_DATABASE_URL=f"sqlite:///{(self.workdir / 'syncer.db').resolve()}",
        )
        self.spec = load_spec(self.spec_path, environ=environ).resolve_emulator()
        self.graph = GraphClient.from_spec(self.spec, self.spec.tenants[0].name)
        self.runner = Runner(
            self.spec,
            port=port,
            schedule=Schedule(drain=0.3, safety_net=5.0, reconcile=3600.0),
            echo=self._runner_line,
        )
        self.say(
            f"syncer: receiver, reconcile and worker on {self.spec_path} -> {self.workdir / 'syncer.db'}"
        )
        self.runner.start()

    def _runner_line(self, line: str) -> None:
        # Reconcile prints one line per subscription (about a hundred here): show the summaries only.
        if not line.lstrip().startswith(("ok ", "ok\t", "+", "~", "-", "=")):
            self.say(line, indent=4)

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.admin is not None
        response = self.admin.request(
            method, f"{self.emulator.info['admin_url']}/{path}", timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None

    # --- what the user sees ---------------------------------------------------------------------

    def say(self, line: str, *, indent: int = 0) -> None:
        self.echo(f"[{time.monotonic() - self.started:5.1f}s] {' ' * indent}{line}")

    def counts(self) -> dict[str, int]:
        """Notifications stored, passes run, and live rows per mirror table."""
        assert self.spec is not None and self.runner is not None and self.runner.engine is not None
        engine = self.runner.engine
        out: dict[str, int] = {}
        with engine.connect() as connection:
            out["notifications"] = connection.execute(
                sa.select(sa.func.count()).select_from(schema.inbox)
            ).scalar_one()
            out["passes"] = connection.execute(
                sa.select(sa.func.count())
                .select_from(schema.sync_runs)
                .where(schema.sync_runs.c.outcome == "ok")
            ).scalar_one()
            for subscription in sorted(self.spec.subscriptions, key=lambda s: s.mirror.table):
                table = mirror.build_table(subscription.mirror)
                out[table.name] = connection.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c._deleted_at.is_(None))
                ).scalar_one()
        return out

    def show(self, label: str = "") -> None:
        counts = self.counts()
        text = "  ".join(f"{k} {v}" for k, v in counts.items())
        self.say(f"{label}{text}")

    def idle(self) -> bool:
        """No unprocessed notification, no dirty scope, no pass running."""
        assert self.runner is not None and self.runner.engine is not None
        s, i = schema.sync_state, schema.inbox
        with self.runner.engine.connect() as connection:
            pending = connection.execute(
                sa.select(sa.func.count()).select_from(i).where(i.c.processed_at.is_(None))
            ).scalar_one()
            dirty = connection.execute(
                sa.select(sa.func.count())
                .select_from(s)
                .where(sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True)))
            ).scalar_one()
        return pending == 0 and dirty == 0

    def wait_converged(self, deadline: float, *, label: str) -> list[verify.Difference]:
        """Show progress every second until the mirror matches Graph or *deadline* passes."""
        assert self.graph is not None and self.spec is not None and self.runner is not None
        assert self.runner.engine is not None
        clients = {self.spec.tenants[0].tenant_id: self.graph}
        declared = verify.declared(self.spec, clients)
        differences: list[verify.Difference] = []
        last_show = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - last_show >= 1.0:
                self.show(f"{label}: ")
                last_show = time.monotonic()
            if self.idle():
                differences = verify.compare(self.runner.engine, clients, declared)
                if not differences:
                    return []
            time.sleep(0.3)
        return differences or verify.compare(self.runner.engine, clients, declared)

    # --- changing the tenant through Graph's write API ------------------------------------------

    def make_changes(self) -> None:
        assert self.graph is not None
        g = self.graph
        users = [u["id"] for u in g.get_json("users?$select=id&$top=50").get("value", [])]
        first, second, third = users[0], users[1], users[2]
        created = []
        for n in range(3):
            body = {
                "accountEnabled": True,
                "displayName": f"Demo Hire {n}",
                "mailNickname": f"demohire{n}",
                "userPrincipalName": f"demohire{n}@{self.emulator.info.get('tenant_domain', 'contoso.example')}",
                "passwordProfile": {"password": f"Demo-{n}-Passw0rd!", "forceChangePasswordNextSignIn": True},
                "jobTitle": "New hire",
            }
            created.append(g.request("POST", "users", json=body).json()["id"])
        self.say(f"created 3 users ({', '.join(created)})")
        channel = self.new_channel()
        # What the worker's reconcile job does on its schedule: new users get their mailbox
        # subscriptions (fan-out over all users), and the worker starts syncing their scopes.
        assert self.runner is not None and self.runner.worker is not None
        self.runner.reconcile()
        added = self.runner.worker.refresh_scopes()
        self.say(f"reconcile picked up the new users: {added} new scopes to sync")
        g.request(
            "PATCH", f"users/{first}", json={"jobTitle": "Chief Demo Officer", "displayName": "Ada Demo"}
        )
        self.say(f"updated user {first} (jobTitle, displayName)")
        g.request("DELETE", f"users/{third}")
        self.say(f"deleted user {third}")

        groups = [grp["id"] for grp in g.get_json("groups?$select=id").get("value", [])]
        if groups:
            g.request(
                "POST",
                f"groups/{groups[0]}/members/$ref",
                json={"@odata.id": f"{g.url_for('directoryObjects/' + created[0])}"},
            )
            self.say(f"added {created[0]} to group {groups[0]}")

        g.request(
            "POST",
            f"users/{second}/mailFolders/inbox/messages",
            json={
                "subject": "Quarterly numbers",
                "body": {"contentType": "text", "content": "See attached."},
            },
        )
        self.say(f"new message in {second}'s inbox")
        messages = g.get_json(f"users/{first}/mailFolders/inbox/messages?$select=id").get("value", [])
        if messages:
            g.request("PATCH", f"users/{first}/messages/{messages[0]['id']}", json={"isRead": True})
            g.request("DELETE", f"users/{first}/messages/{messages[-1]['id']}")
            self.say(f"marked one message read and deleted another in {first}'s inbox")
        events = g.get_json(f"users/{second}/events?$select=id").get("value", [])
        if events:
            g.request(
                "PATCH", f"users/{second}/events/{events[0]['id']}", json={"subject": "Moved: design review"}
            )
            self.say(f"renamed an event of {second}")
        contacts = g.get_json(f"users/{first}/contacts?$select=id").get("value", [])
        if contacts:
            g.request("DELETE", f"users/{first}/contacts/{contacts[0]['id']}")
            self.say(f"deleted a contact of {first}")
        g.request(
            "POST",
            f"users/{second}/drive/root/children",
            json={"name": "Demo notes", "folder": {}, "@microsoft.graph.conflictBehavior": "rename"},
        )
        self.say(f"created a folder in {second}'s OneDrive")
        self.converse(channel)

    def new_channel(self) -> tuple[str, str]:
        """A channel created through Graph (the reconcile that follows subscribes to its messages)."""
        assert self.graph is not None
        team = str(self.graph.get_json("teams?$select=id")["value"][0]["id"])
        made = self.graph.request(
            "POST", f"teams/{team}/channels", json={"displayName": "Launch", "membershipType": "standard"}
        ).json()
        self.say(f"created channel 'Launch' in team {team}")
        return team, str(made["id"])

    def converse(self, where: tuple[str, str]) -> None:
        """A conversation as users would have it: a post, replies, an edit and a soft delete.

        Graph lets an app post channel messages only in migration mode
        (https://learn.microsoft.com/graph/api/chatmessage-post): the emulator's admin API posts as a user,
        with the effects of that user's own post (notifications, delta).
        """
        assert self.graph is not None
        team, channel = where
        members = self.graph.get_json(f"teams/{team}/members")["value"]
        owner = next(str(m["userId"]) for m in members if "owner" in (m.get("roles") or []))
        existing = {u["id"] for u in self.graph.get_json("users?$select=id&$top=100")["value"]}
        author, other = owner, next(str(m["userId"]) for m in reversed(members) if m["userId"] in existing)
        base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
        root = self._admin("POST", base, json={"from": author, "body": {"content": "Launch on Friday?"}})
        replies = [
            self._admin("POST", f"{base}/{root['id']}/replies", json={"from": who, "body": {"content": text}})
            for who, text in ((other, "Friday works"), (author, "Thursday, sorry"))
        ]
        self.say(f"posted a message and two replies in 'Launch' as {author} and {other}")
        self._admin(
            "PATCH", f"{base}/{root['id']}", json={"body": {"contentType": "text", "content": "Launch on Thursday?"}}
        )
        self._admin("DELETE", f"{base}/{root['id']}/replies/{replies[1]['id']}")
        self.say("edited the message and soft-deleted a reply")

    def expire_and_throttle(self) -> None:
        """A 410 on the next users delta, and a burst of 429s on every delta call."""
        assert self.graph is not None
        self._admin(
            "POST", "faults", json={"type": "deltaReset", "scope": "^users$", "kind": "expired", "count": 1}
        )
        self._admin(
            "POST",
            "faults",
            json={
                "type": "status",
                "status": 429,
                "path": "/delta",
                "probability": 0.3,
                "count": 12,
                "retryAfter": 1,
            },
        )
        self.say(
            "the next users delta answers 410 (token expired); 30% of delta calls answer 429 (12 at most)"
        )
        self.graph.request("PATCH", "users/" + self._some_user(), json={"officeLocation": "Building 7"})
        self.say("updated one more user, so the next users pass meets the 410 and resyncs")

    def _some_user(self) -> str:
        assert self.graph is not None
        return str(self.graph.get_json("users?$select=id&$top=5")["value"][-1]["id"])

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> bool:
        try:
            self.start()
            deadline = self.started + self.timeout
            differences = self.wait_converged(deadline, label="initial sync")
            if differences:
                return self.fail(differences)
            self.show("initial sync done: ")
            self.make_changes()
            self.expire_and_throttle()
            differences = self.wait_converged(deadline, label="catching up")
            if differences:
                return self.fail(differences)
            self.show("converged: ")
            self.finish()
            return True
        finally:
            self.stop()

    def fail(self, differences: list[verify.Difference]) -> bool:
        self.say(f"the mirror does NOT match Graph ({len(differences)} differences):")
        for difference in differences[:20]:
            self.say(str(difference), indent=2)
        return False

    def finish(self) -> None:
        assert self.runner is not None and self.runner.engine is not None
        db = self.workdir / "syncer.db"
        teams_query = (
            # A Teams conversation: the owner ids are indexed columns of every message row.
            "SELECT c.display_name AS channel, u.display_name AS author, m.body\n"
            "  FROM channel_messages m JOIN channels c ON c.id = m.channel_id JOIN users u ON u.id = m.from_user_id\n"
            " WHERE m._deleted_at IS NULL AND m.message_type = 'message' AND c.display_name = 'Launch'\n"
            " ORDER BY m.id"
        )
        self.say("the mirror matches Graph, table by table. Example queries:")
        for query in (EXAMPLE_QUERY, teams_query):
            self.echo("")
            self.echo("    " + query.replace("\n", "\n    "))
            self.echo("")
            try:
                with self.runner.engine.connect() as connection:
                    for row in connection.execute(sa.text(query)):
                        self.echo(f"      {row[0]!s:<22} {row[1]!s:<22} {row[2]}")
            except sa.exc.SQLAlchemyError as error:  # the bundled spec may have been edited
                self.echo(f"      (query failed on this spec: {error.__class__.__name__})")
        self.echo("")
        self.echo(f"Explore the mirror yourself:  sqlite3 {db} '.tables'")
        self.echo(
            f"                          or: python3 -m sqlite3 {db}   (Python 3.12+), or datasette {db}"
        )

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self.graph is not None:
            self.graph.close()
        if self.admin is not None:
            self.admin.close()
        if self.emulator is not None:
            self.emulator.stop()


def run_demo(spec_path: Path, *, workdir: Path, echo: Echo = print, timeout: float = 40.0) -> bool:
    """Run the demo; True when the mirror matched the emulator at the end."""
    return Demo(spec_path=spec_path, workdir=workdir, echo=echo, timeout=timeout).run()
