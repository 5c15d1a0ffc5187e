"""The chaos harness: syncer as real processes against the emulator, killed, starved and throttled.

Shared by tests/test_chaos.py (a short run in the suite) and bench/chaos.py (minutes, with a 30 s
database outage). What it does, all seeded:

- a small organisation in the emulator and a spec following users, groups, three mailboxes' inboxes
  and OneDrives (``for_each`` lists fixed ids, so the set of scopes does not move under the test);
- ``syncer serve`` (gunicorn) and ``syncer worker`` as subprocesses in their own process groups,
  killed with SIGKILL (the whole group: what an OOM kill or a lost container does) at random moments
  and restarted; the worker always under the same ``--worker-id``, as a systemd unit or a pod would;
- a stream of creates, updates and deletes through the emulator's Graph write API;
- request faults on Graph reads (429 with a short Retry-After, 5xx, 410 on delta calls) and
  notification faults (drops, duplicates);
- a database outage: on PostgreSQL every syncer process reaches the database through a TCP proxy
  that the harness cuts (connections reset, new ones refused: the database host vanished); on SQLite,
  whose "server" is a file, another process holds an exclusive write transaction on it.

Then the faults stop and :func:`converge` waits until :func:`syncer.verify.compare` finds no
difference; :func:`unstored_acks` checks the emulator's delivery log: every notification answered
2xx is in the inbox.

The database it can take away is tests/chaos_database.py, the processes it kills tests/chaos_processes.py.

Faults hit reads only (GET): the writes are the harness's change stream, not the system under test,
and a blind retry of a failed POST would create an item twice.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from chaos_database import Database
from chaos_processes import Proc

from syncer import database, mirror, schema, verify
from syncer.demo import free_port
from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.emulator.delivery_policy import RetryRules
from syncer.graph.client import GraphClient
from syncer.migrate import upgrade_core
from syncer.spec import Spec, load_spec

WORKER_ID = "chaos-worker"

SPEC = """\
version: 1
graph:
  cloud: emulator
  emulator_info: {info}
receiver:
  notification_url: http://127.0.0.1:{port}/notifications
  lifecycle_url: http://127.0.0.1:{port}/lifecycle
  host: 127.0.0.1
  port: {port}
database:
  url: ${{SYNCER_DATABASE_URL}}
defaults:
  lifetime: max
  sync_interval: {sync_interval}
subscriptions:
  - name: users
    resource: users
    change_types: [updated, deleted]
    mirror:
      table: users
      columns: [displayName, userPrincipalName, jobTitle, accountEnabled]
  - name: groups
    resource: groups
    mirror:
      table: groups
      columns: [displayName, mail]
  - name: inbox
    resource: users/{{user}}/mailFolders/inbox/messages
    for_each: {{users: [{users}]}}
    change_types: [created, updated, deleted]
    lifetime: 2d
    mirror:
      table: inbox_messages
      delete: hard
      columns: [subject, isRead]
  - name: files
    resource: users/{{user}}/drive/root
    for_each: {{users: [{users}]}}
    change_types: [updated]
    mirror:
      table: drive_items
      columns: [name, {{field: parentReference.id, column: parent_id, type: text}}]
"""

SEED = {"users": 8, "groups": 2, "membersPerGroup": 3, "messagesPerUser": 3, "driveItemsPerUser": 2,
        "eventsPerUser": 0, "contactsPerUser": 0, "tasksPerUser": 0, "contentUsers": 3}


def emulator_config(seed: int) -> EmulatorConfig:
    """The emulator as the harness wants it: Graph's retry rules, but seconds instead of minutes."""
    return EmulatorConfig(
        seed=seed, retry=RetryRules(initial_backoff_s=0.5, backoff_factor=2.0, max_backoff_s=2.0)
    )


# --- the harness ------------------------------------------------------------------------------------


@dataclass
class Harness:
    """Emulator + spec + syncer processes + the change stream, for one database."""

    database_url: str
    workdir: Path
    seed: int = 1
    sync_interval: str = "1m"  # the spec's minimum
    echo: Callable[[str], None] = lambda line: None
    org: dict[str, int] = field(default_factory=lambda: dict(SEED))
    drain_interval: float = 0.3
    emulator_settings: dict[str, Any] = field(default_factory=dict)
    proxy: bool = True  # PostgreSQL through a TCP proxy the harness can cut (for outages)

    emulator: EmulatorServer | None = None
    db: Database | None = None
    spec: Spec | None = None
    graph: GraphClient | None = None
    session: requests.Session = field(default_factory=requests.Session)
    receiver: Proc | None = None
    worker: Proc | None = None
    port: int = 0
    rng: random.Random = field(default_factory=random.Random)
    changes: Counter[str] = field(default_factory=Counter)
    content_users: list[str] = field(default_factory=list)
    created_users: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    _n: int = 0

    # --- set-up ---

    def start(self) -> Harness:
        self.rng = random.Random(self.seed)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = emulator_config(self.seed).with_changes(**self.emulator_settings)
        self.emulator = EmulatorServer(config, workdir=self.workdir / "emulator").start()
        info = self.emulator.info
        info_file = self.workdir / "emulator.json"
        self.emulator.write_info(info_file)
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= otherwise
        self.session.verify = info["ca_cert"]
        self.admin("POST", "seed", json=self.org)
        self.db = Database.for_url(self.database_url, proxy=self.proxy)

        # The content users (the first ones) are those the per-user declarations follow.
        self.port = free_port()
        bootstrap = self._load(info_file, users=["placeholder"])
        self.graph = GraphClient.from_spec(bootstrap, bootstrap.tenants[0].name)
        self.users = [u["id"] for page in self.graph.iter_pages("users?$select=id&$top=999") for u in page.items]
        self.content_users = self.users[: self.org["contentUsers"]]
        self.spec = self._load(info_file, users=self.content_users)
        self.groups = [g["id"] for g in self.graph.get_json("groups?$select=id")["value"]]
        for user in self.content_users:
            self.messages[user] = [
                m["id"] for m in self.graph.get_json(f"users/{user}/mailFolders/inbox/messages?$select=id")["value"]
            ]
            self.files[user] = []

        upgrade_core(self.spec.database_url)
        for _ in mirror.upgrade(self.spec):
            pass
        env = dict(os.environ)
        env.update(
            SYNCER_EMULATOR_INFO=str(info_file),
            SYNCER_DATABASE_URL=self.db.process_url,
            SYNCER_LOG_LEVEL="WARNING",
            SYNCER_SPEC=str(self.workdir / "subscriptions.yaml"),
        )
        syncer = [sys.executable, "-m", "syncer"]
        self.receiver = Proc(
            "receiver", [*syncer, "serve", "--workers", "1", "--threads", "8"], env, self.workdir
        )
        self.worker = Proc(
            "worker",
            [*syncer, "worker", "--worker-id", WORKER_ID, "--drain-interval", str(self.drain_interval),
             "--safety-net-interval", "1"],
            env,
            self.workdir,
        )
        self.start_receiver()
        from syncer.reconcile import reconcile

        engine = database.create_engine(self.spec.database_url)
        try:
            outcome = reconcile(self.spec, engine=engine)
        finally:
            engine.dispose()
        assert outcome.applied, "reconcile did not apply its plan"
        self.worker.start()
        return self

    def _load(self, info_file: Path, *, users: list[str]) -> Spec:
        path = self.workdir / "subscriptions.yaml"
        path.write_text(
            SPEC.format(info=info_file, port=self.port, sync_interval=self.sync_interval, users=", ".join(users))
        )
        environ = {**os.environ, "SYNCER_DATABASE_URL": self.database_url}
        return load_spec(path, environ=environ).resolve_emulator()

    def start_receiver(self, timeout: float = 30.0) -> None:
        assert self.receiver is not None
        self.receiver.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or a worker still booting behind the listening socket
            if not self.receiver.running:
                break
            time.sleep(0.1)
        raise AssertionError("the receiver did not come up\n" + self.receiver.output())

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.emulator is not None
        kwargs.setdefault("timeout", 60)
        response = self.session.request(method, f"{self.emulator.info['admin_url']}/{path}", **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    # --- faults ---

    def faults_on(self, *, delta_resets: int = 3) -> None:
        """30% 429 (Retry-After 1 s) and 10% 5xx on Graph reads, 410s on delta, dropped and duplicated notifications."""
        self.admin("POST", "faults", json=[
            {"type": "status", "status": 429, "method": "GET", "probability": 0.3, "retryAfter": 1},
            # Of the remaining 70%, one in seven: 10% of all reads.
            {"type": "status", "status": 503, "method": "GET", "probability": 0.1 / 0.7 / 2},
            {"type": "status", "status": 500, "method": "GET", "probability": 0.1 / 0.7 / 2},
            {"type": "deltaReset", "scope": "^users$", "kind": "expired", "count": max(1, delta_resets // 2)},
            {"type": "deltaReset", "scope": "messages", "kind": "reset", "count": max(1, delta_resets - delta_resets // 2)},
        ])
        self.admin("POST", "delivery/faults", json={"drop": 0.15, "duplicate": 0.15})

    def faults_off(self) -> None:
        self.admin("DELETE", "faults")
        self.admin("DELETE", "delivery/faults")

    # --- the change stream ---

    def change(self) -> str:
        """One random change through Graph's write API; its kind."""
        assert self.graph is not None
        g, r = self.graph, self.rng
        self._n += 1
        n = self._n
        kind = r.choice(["user_update", "user_update", "user_create", "user_delete", "group_update",
                         "msg_create", "msg_create", "msg_update", "msg_delete",
                         "file_create", "file_rename", "file_delete"])
        user = r.choice(self.content_users)
        if kind == "user_update":
            g.request("PATCH", f"users/{r.choice(self.users)}", json={"jobTitle": f"title {n}"})
        elif kind == "user_create":
            nick = f"chaos{self.seed}x{n}"
            body = {"accountEnabled": True, "displayName": f"Chaos {n}", "mailNickname": nick,
                    "userPrincipalName": f"{nick}@{self.emulator.info['tenant_domain']}" if self.emulator else nick,
                    "passwordProfile": {"password": "xWwvJ]6NMw+bWH-d"}}
            created = g.request("POST", "users", json=body).json()["id"]
            self.created_users.append(created)
            self.users.append(created)
        elif kind == "user_delete" and self.created_users:
            victim = self.created_users.pop(r.randrange(len(self.created_users)))
            self.users.remove(victim)
            g.request("DELETE", f"users/{victim}")
        elif kind == "group_update":
            g.request("PATCH", f"groups/{r.choice(self.groups)}", json={"displayName": f"Group {n}"})
        elif kind == "msg_create" or (kind in ("msg_update", "msg_delete") and not self.messages[user]):
            kind = "msg_create"
            created = g.request("POST", f"users/{user}/mailFolders/inbox/messages",
                                json={"subject": f"message {n}", "body": {"contentType": "text", "content": "x"}})
            self.messages[user].append(created.json()["id"])
        elif kind == "msg_update":
            g.request("PATCH", f"users/{user}/messages/{r.choice(self.messages[user])}",
                      json={"isRead": r.random() < 0.5, "subject": f"re: {n}"})
        elif kind == "msg_delete":
            victim = self.messages[user].pop(r.randrange(len(self.messages[user])))
            g.request("DELETE", f"users/{user}/messages/{victim}")
        elif kind == "file_create" or (kind in ("file_rename", "file_delete") and not self.files[user]):
            kind = "file_create"
            created = g.request("POST", f"users/{user}/drive/root/children",
                                json={"name": f"folder {n}", "folder": {}, "@microsoft.graph.conflictBehavior": "rename"})
            self.files[user].append(created.json()["id"])
        elif kind == "file_rename":
            g.request("PATCH", f"users/{user}/drive/items/{r.choice(self.files[user])}", json={"name": f"renamed {n}"})
        elif kind == "file_delete":
            victim = self.files[user].pop(r.randrange(len(self.files[user])))
            g.request("DELETE", f"users/{user}/drive/items/{victim}")
        else:
            kind = "user_update"
            g.request("PATCH", f"users/{r.choice(self.users)}", json={"jobTitle": f"title {n}"})
        self.changes[kind] += 1
        return kind

    def touch_every_scope(self) -> None:
        """One change in every declared scope, so that each gets a notification and a pass.

        A pass syncs everything that changed since its deltaLink, so it also brings in the changes
        whose notification was dropped. Without this the spec's safety net (sync_interval, at least a
        minute) does the same, later: the bench waits for it, the test does not.
        """
        assert self.graph is not None
        g = self.graph
        self._n += 1
        g.request("PATCH", f"users/{self.users[0]}", json={"jobTitle": f"touched {self._n}"})
        for group in self.groups:
            g.request("PATCH", f"groups/{group}", json={"displayName": f"touched {self._n}"})
        for user in self.content_users:
            created = g.request("POST", f"users/{user}/mailFolders/inbox/messages",
                                json={"subject": f"touched {self._n}", "body": {"contentType": "text", "content": "x"}})
            self.messages[user].append(created.json()["id"])
            created = g.request("POST", f"users/{user}/drive/root/children",
                                json={"name": f"touched {self._n}", "folder": {}})
            self.files[user].append(created.json()["id"])
        self.changes["touch"] += 1 + len(self.groups) + 2 * len(self.content_users)

    def changes_for(self, seconds: float, *, rate: float, during: Callable[[float], None] | None = None) -> None:
        """Changes at about *rate* per second for *seconds*; *during(elapsed)* is called between them."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            self.change()
            if during is not None:
                during(elapsed)
            time.sleep(self.rng.expovariate(rate))

    # --- chaos on the processes ---

    def killer(self, *, seconds: float, kills: int) -> Callable[[float], None]:
        """A *during* callback that SIGKILLs the receiver or the worker at *kills* seeded moments and restarts it."""
        moments = sorted(self.rng.uniform(0.5, seconds * 0.9) for _ in range(kills))
        first = self.rng.choice(["receiver", "worker"])
        other = "worker" if first == "receiver" else "receiver"
        victims = [first if i % 2 == 0 else other for i in range(kills)]  # both, whatever the seed
        plan = list(zip(moments, victims, strict=True))
        down: dict[str, float] = {}

        def during(elapsed: float) -> None:
            while plan and plan[0][0] <= elapsed:
                _, victim = plan.pop(0)
                proc = self.receiver if victim == "receiver" else self.worker
                assert proc is not None
                if proc.running:
                    proc.kill()
                    down[victim] = elapsed + self.rng.uniform(0.2, 1.5)
                    self.echo(f"{elapsed:5.1f}s SIGKILL {victim}")
            for victim, at in list(down.items()):
                if at <= elapsed:
                    del down[victim]
                    self.ensure_running()

        return during

    def ensure_running(self) -> None:
        assert self.receiver is not None and self.worker is not None
        if not self.receiver.running:
            self.start_receiver()
        if not self.worker.running:
            self.worker.start()

    def settle(self, min_uptime: float = 3.0) -> None:
        """Everything running, and past its start-up (a worker that starts while the database is away
        exits at once, as it should: its supervisor restarts it; the outage tests the running ones)."""
        self.ensure_running()
        for proc in (self.receiver, self.worker):
            assert proc is not None
            time.sleep(max(0.0, proc.started_at + min_uptime - time.monotonic()))

    # --- convergence and checks ---

    def engine(self) -> sa.Engine:
        return database.create_engine(self.database_url)

    def idle(self, engine: sa.Engine) -> bool:
        s, i = schema.sync_state, schema.inbox
        with engine.connect() as connection:
            pending = connection.execute(
                sa.select(sa.func.count()).select_from(i).where(i.c.processed_at.is_(None))
            ).scalar_one()
            dirty = connection.execute(
                sa.select(sa.func.count()).select_from(s).where(
                    sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True), s.c.page_link.is_not(None))
                )
            ).scalar_one()
        return pending == 0 and dirty == 0

    def converge(self, timeout: float) -> tuple[float, list[verify.Difference]]:
        """Wait until the mirror equals Graph (or *timeout*); (seconds taken, differences left)."""
        assert self.spec is not None and self.graph is not None
        started = time.monotonic()
        self.admin("POST", "delivery/wait", json={"timeoutSeconds": min(timeout, 30), "includeScheduled": True})
        clients = {self.spec.tenants[0].tenant_id: self.graph}
        declared = verify.declared(self.spec, clients)
        engine = self.engine()
        differences: list[verify.Difference] = []
        try:
            while time.monotonic() - started < timeout:
                self.ensure_running()
                if self.idle(engine):
                    differences = verify.compare(engine, clients, declared)
                    if not differences:
                        return time.monotonic() - started, []
                time.sleep(0.5)
            return time.monotonic() - started, differences or verify.compare(engine, clients, declared)
        finally:
            engine.dispose()

    def delivery(self) -> dict[str, Any]:
        report: dict[str, Any] = self.admin("GET", "delivery", params={"limit": 100000, "since": 0})
        return report

    def unstored_acks(self, report: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Notifications the receiver answered 2xx that are not in the inbox (must be none)."""
        engine = self.engine()
        try:
            with engine.connect() as connection:
                stored = {
                    (str(s), str(e), str(r or ""))
                    for s, e, r in connection.execute(
                        sa.select(schema.inbox.c.subscription_id, schema.inbox.c.event, schema.inbox.c.resource)
                    )
                }
        finally:
            engine.dispose()
        missing = []
        for entry in report.get("log", []):
            if not (isinstance(entry.get("status"), int) and 200 <= entry["status"] < 300):
                continue
            for item in (entry.get("body") or {}).get("value", []):
                if "changeType" not in item:
                    continue  # lifecycle events are keyed differently; changes are what the check is about
                key = (str(item.get("subscriptionId")), str(item.get("changeType")), str(item.get("resource") or ""))
                if key not in stored:
                    missing.append(key)
        return missing

    def counts(self) -> dict[str, int]:
        """Inbox rows, passes (ok / full), of the whole run."""
        engine = self.engine()
        r = schema.sync_runs
        try:
            with engine.connect() as connection:
                inbox = connection.execute(sa.select(sa.func.count()).select_from(schema.inbox)).scalar_one()
                passes = connection.execute(sa.select(sa.func.count()).select_from(r)).scalar_one()
                ok = connection.execute(sa.select(sa.func.count()).select_from(r).where(r.c.outcome == "ok")).scalar_one()
                full = connection.execute(
                    sa.select(sa.func.count()).select_from(r).where(r.c.full_round.is_(True))
                ).scalar_one()
        finally:
            engine.dispose()
        return {"inbox_rows": inbox, "passes": passes, "passes_ok": ok, "full_passes": full}

    def stop(self) -> None:
        for proc in (self.worker, self.receiver):
            if proc is not None:
                proc.stop()
        if self.graph is not None:
            self.graph.close()
        self.session.close()
        if self.emulator is not None:
            self.emulator.stop()
        if self.db is not None:
            self.db.close()
