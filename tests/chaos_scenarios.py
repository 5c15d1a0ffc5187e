"""Chaos scenarios: one fault at a time while real notifications flow, and what it cost.

Each :class:`Scenario` starts a fault, lets the harness's change stream run through the emulator's
Graph write API while it lasts (so the emulator delivers real notifications to ``syncer serve``), ends
the fault, then measures (:func:`run`):

- **2xx answered**: change items in POSTs the receiver answered 2xx (the emulator's delivery log);
- **rows stored**: inbox rows added meanwhile (duplicates are stored once, so fewer is normal; in
  ``hostile`` more: its replayed valid items are stored again once the first copy was processed);
- **lost**: items answered 2xx that are not in the inbox (must be 0);
- **recovery**: seconds from the fault's end until :func:`syncer.verify.compare` finds no difference
  between the mirror and the emulator (None: not within the timeout).

The scenarios (``SCENARIOS``, in the order ``--scenarios all`` runs them):

``partition``  the database stops answering without closing anything (packets dropped: a silent network
               partition); after it, the connections opened before stay silent (stale pooled
               connections) — TcpProxy.blackhole(new_connections=True), restore();
``readonly``   the primary turns read-only (a failover demoted it): ``default_transaction_read_only``
               on the database, its sessions terminated; at the end writes are allowed again for *new*
               sessions only, as on the promoted primary (a pooled session stays read-only);
``slowdb``     the database answers, slowly (TcpProxy.slow: 200 ms more per round trip);
``clock``      Graph's clock jumps an hour ahead (token times, subscription expiry) and back; the
               worker's clock jumps 10 minutes ahead and back, while a second worker runs 10 minutes
               behind (leases and claims judged by two clocks 20 minutes apart);
``poison``     items with U+0000, 100 kB strings and wrong JSON types (written into the emulator's store
               directly: Graph's write API refuses wrong types);
``deltalink``  the stored deltaLinks are overwritten (empty, not a URL, a bogus token, truncated) while
               the worker runs;
``hostile``    threads POST floods of random subscription ids, slow and short bodies, and mixed batches
               (a replayed valid item among forged ones) straight to the receiver;
``two``        two receivers behind the notification URL (connections alternate) and two workers.

The receiver's own clock is not skewed: it reads the time only to stamp ``received_at``; the token times
it checks are Graph's, which ``clock`` moves.

The harness is tests/chaos_harness.py; tests/test_chaos.py runs every scenario briefly, bench/chaos.py
longer (``--scenarios``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from chaos_harness import ROOT, WORKER_ID, Harness, Proc, TcpProxy

from syncer import schema
from syncer.database import IO_TIMEOUT_PARAM
from syncer.demo import free_port
from syncer.emulator.delivery_policy import ThrottleRules

SECOND_WORKER_ID = "chaos-worker-2"


# --- the database of its own ------------------------------------------------------------------------


@contextlib.contextmanager
def dedicated_database(base_url: str, *, prefix: str = "chaos", io_timeout: float | None = None) -> Iterator[str]:
    """A PostgreSQL database of its own on *base_url*'s server (``readonly`` alters the whole database).

    *io_timeout*: syncer's client-side bound on a wait for the server (``syncer_io_timeout`` in the URL),
    standing in for ``tcp_user_timeout`` (20 s), which the harness's user-space proxy hides: the local
    kernel acknowledges every byte, so a blackholed connection is noticed only by syncer's own timer."""
    base = sa.make_url(base_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name)
    if io_timeout is not None:
        url = url.update_query_dict({IO_TIMEOUT_PARAM: f"{io_timeout:g}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
            connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# --- round robin in front of two receivers ----------------------------------------------------------


class Balancer(TcpProxy):
    """A TcpProxy whose connections alternate between several targets (a load balancer's round robin)."""

    def __init__(self, targets: list[tuple[str, int]], *, port: int) -> None:
        self._targets = itertools.cycle(targets)
        super().__init__(targets[0])
        self.port = port

    @property  # type: ignore[override]
    def target(self) -> tuple[str, int]:
        return next(self._targets)

    @target.setter
    def target(self, value: tuple[str, int]) -> None:
        pass  # the cycle decides


# --- the harness, with what the scenarios need ------------------------------------------------------


@dataclass
class ScenarioHarness(Harness):
    """The chaos harness plus: workers whose clock can be moved, extra processes, the admin database URL."""

    admin_url: str = ""  # the server's maintenance connection (ALTER DATABASE), PostgreSQL only
    extra: list[Proc] = field(default_factory=list)
    # Graph's slow/drop endpoint penalties in seconds instead of 10 minutes: scenarios run one after
    # the other, and a slow database must not silence the next one's notifications for 10 minutes.
    emulator_settings: dict[str, Any] = field(
        default_factory=lambda: {"throttle": ThrottleRules(slow_delay_s=5.0, drop_duration_s=5.0)}
    )

    def start(self) -> ScenarioHarness:
        super().start()
        assert self.worker is not None
        # The worker is restarted through the skewing launcher (offset 0 until a scenario moves it).
        self.worker.stop()
        self.worker.argv = self.worker_argv(WORKER_ID, self.clock_file(WORKER_ID))
        self.worker.start()
        return self

    def clock_file(self, worker_id: str) -> Path:
        return self.workdir / f"clock-{worker_id}.txt"

    def set_worker_clock(self, worker_id: str, seconds: float) -> None:
        """Move *worker_id*'s clock to wall clock + *seconds* (a jump, seen within 0.2 s)."""
        self.clock_file(worker_id).write_text(f"{seconds}\n")

    def worker_argv(self, worker_id: str, clock_file: Path) -> list[str]:
        assert self.worker is not None
        argv = list(self.worker.argv)
        at = argv.index("worker")
        rest = argv[at:]
        rest[rest.index("--worker-id") + 1] = worker_id
        return [argv[0], str(ROOT / "tests" / "skewed_worker.py"), str(clock_file), *rest]

    def second_worker(self, worker_id: str = SECOND_WORKER_ID) -> Proc:
        assert self.worker is not None
        proc = Proc(worker_id, self.worker_argv(worker_id, self.clock_file(worker_id)), self.worker.env, self.workdir)
        self.extra.append(proc)
        proc.start()
        return proc

    def receivers_on(self, ports: dict[str, int]) -> list[Proc]:
        """More receivers (``syncer serve --bind``), started together, once they answer /healthz."""
        assert self.receiver is not None
        procs = [Proc(name, [*self.receiver.argv, "--bind", f"127.0.0.1:{port}"], self.receiver.env, self.workdir)
                 for name, port in ports.items()]
        for proc in procs:
            proc.start()
        for proc, port in zip(procs, ports.values(), strict=True):
            _wait_healthy(port, proc)
        return procs

    def stop_extra(self) -> None:
        for proc in self.extra:
            proc.stop()
        self.extra.clear()

    def ensure_running(self) -> None:
        super().ensure_running()
        for proc in self.extra:
            if not proc.running:
                proc.start()

    def last_seq(self) -> int:
        return max((e["seq"] for e in self.delivery()["log"]), default=0)

    def last_inbox_id(self) -> int:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return int(connection.execute(sa.select(sa.func.max(schema.inbox.c.id))).scalar_one() or 0)
        finally:
            engine.dispose()

    def inbox_rows_after(self, inbox_id: int) -> int:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return int(connection.execute(
                    sa.select(sa.func.count()).select_from(schema.inbox).where(schema.inbox.c.id > inbox_id)
                ).scalar_one())
        finally:
            engine.dispose()

    def reset(self) -> None:
        """What an operator does after a fault syncer did not recover from, so that the next scenario is
        measured on its own and not on this one's leftovers: every process restarted, every scope resynced."""
        for proc in self.processes():
            proc.kill()
        s = schema.sync_state
        engine = self.engine()
        try:
            with engine.begin() as connection:
                connection.execute(sa.update(s).values(
                    delta_link=None, page_link=None, resync_requested=True, leased_by=None, lease_until=None,
                    not_before=None))
        finally:
            engine.dispose()
        self.ensure_running()
        self.touch_every_scope()

    def processes(self) -> list[Proc]:
        return [p for p in (self.receiver, self.worker, *self.extra) if p is not None]

    def stop(self) -> None:
        self.stop_extra()
        super().stop()


def _wait_healthy(port: int, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if not proc.running:
            break
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not come up\n" + proc.output())


# --- scenarios --------------------------------------------------------------------------------------


class Scenario:
    """A fault: ``start`` before the change stream, ``during`` between changes, ``end`` after it;
    ``cleanup`` once the recovery is measured (for what must outlive the fault's end, e.g. two workers)."""

    name = ""
    description = ""

    def start(self, h: ScenarioHarness) -> None:
        pass

    def during(self, h: ScenarioHarness, elapsed: float) -> None:
        pass

    def end(self, h: ScenarioHarness) -> None:
        pass

    def cleanup(self, h: ScenarioHarness) -> None:
        pass

    def notes(self) -> dict[str, Any]:
        return {}


def _proxy(h: ScenarioHarness) -> TcpProxy:
    assert h.db is not None and h.db.proxy is not None, "this scenario needs PostgreSQL behind the harness's proxy"
    return h.db.proxy


class Partition(Scenario):
    name = "partition"
    description = "database silent (packets dropped, nothing closed)"

    def start(self, h: ScenarioHarness) -> None:
        # Open connections and new ones alike go silent; at the end new ones get through again while
        # those opened before stay silent for ever (a stale pooled connection must be noticed).
        _proxy(h).blackhole(new_connections=True)

    def end(self, h: ScenarioHarness) -> None:
        _proxy(h).restore()


class SlowDatabase(Scenario):
    name = "slowdb"
    description = "database slow, not absent"

    def __init__(self, delay: float = 0.1) -> None:  # per chunk each way: +200 ms a round trip
        self.delay = delay

    def start(self, h: ScenarioHarness) -> None:
        _proxy(h).slow(self.delay)

    def end(self, h: ScenarioHarness) -> None:
        _proxy(h).restore()


class ReadOnlyPrimary(Scenario):
    name = "readonly"
    description = "primary turned read-only (pooled sessions stay read-only after)"

    def _database(self, h: ScenarioHarness) -> str:
        name = sa.make_url(h.database_url).database
        assert name and h.admin_url, "readonly needs a PostgreSQL database of its own (dedicated_database)"
        return name

    def _admin(self, h: ScenarioHarness, *statements: str) -> None:
        admin = sa.create_engine(h.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement), {"n": self._database(h)})
        finally:
            admin.dispose()

    def start(self, h: ScenarioHarness) -> None:
        name = self._database(h)
        self._admin(
            h,
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = on',
            # Sessions read the setting when they start: end the current ones, as the demotion does.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()",
        )

    def end(self, h: ScenarioHarness) -> None:
        # The promoted primary accepts writes from new sessions; sessions opened during the fault
        # keep default_transaction_read_only = on, as connections still open to the demoted one do.
        self._admin(h, f'ALTER DATABASE "{self._database(h)}" SET default_transaction_read_only = off')

    def cleanup(self, h: ScenarioHarness) -> None:
        # Whatever the outcome, the next scenario starts with no read-only session left.
        self._admin(h, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                       "AND pid <> pg_backend_pid()")


class ClockJump(Scenario):
    name = "clock"
    description = "Graph +1h and back; worker +10 min and back; a second worker at -10 min"

    def __init__(self, graph_seconds: float = 3700.0, worker_seconds: float = 600.0) -> None:
        self.graph_seconds = graph_seconds
        self.worker_seconds = worker_seconds

    def start(self, h: ScenarioHarness) -> None:
        # Past the hour of an access token: what syncer holds is suddenly expired to Graph.
        h.admin("POST", "clock", json={"advance": self.graph_seconds})
        h.set_worker_clock(WORKER_ID, self.worker_seconds)
        h.set_worker_clock(SECOND_WORKER_ID, -self.worker_seconds)
        h.second_worker()

    def end(self, h: ScenarioHarness) -> None:
        h.admin("POST", "clock", json={"advance": -self.graph_seconds})
        h.set_worker_clock(WORKER_ID, 0)

    def cleanup(self, h: ScenarioHarness) -> None:
        h.stop_extra()
        h.set_worker_clock(SECOND_WORKER_ID, 0)


class Poison(Scenario):
    name = "poison"
    description = "items with U+0000, 100 kB strings, wrong JSON types"

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.next_at = 0.0
        self.written: Counter[str] = Counter()

    def start(self, h: ScenarioHarness) -> None:
        self.next_at = 0.0
        self.written = Counter()
        self.users: dict[str, dict[str, Any]] = {}  # poisoned user -> the item before
        self.groups: set[str] = set()
        self.messages: list[tuple[str, str]] = []

    def _user(self, h: ScenarioHarness) -> str:
        """A user to poison, remembered as it was (cleanup puts it back)."""
        user_id = h.rng.choice(h.users)
        if user_id not in self.users:
            item = self._users(h).get(user_id)
            if item is not None:
                self.users[user_id] = dict(item)
        return user_id

    def _users(self, h: ScenarioHarness) -> Any:
        from syncer.emulator.families.directory.users import users_of

        assert h.emulator is not None and h.spec is not None
        return users_of(h.emulator.state.store.tenant(h.spec.tenants[0].tenant_id))

    def during(self, h: ScenarioHarness, elapsed: float) -> None:
        if elapsed < self.next_at:
            return
        self.next_at = elapsed + self.every
        assert h.graph is not None
        g, r, n = h.graph, h.rng, sum(self.written.values())
        kind = ["nul", "huge", "types"][n % 3]
        user = r.choice(h.content_users)
        if kind == "nul":
            g.request("PATCH", f"users/{self._user(h)}", json={"jobTitle": f"nul\u0000title {n}"})
            created = g.request("POST", f"users/{user}/mailFolders/inbox/messages", json={
                "subject": f"nul\u0000subject {n}", "body": {"contentType": "text", "content": "a\u0000b"}})
            self.messages.append((user, created.json()["id"]))
            group = r.choice(h.groups)
            g.request("PATCH", f"groups/{group}", json={"displayName": f"nul\u0000group {n}"})
            self.groups.add(group)
        elif kind == "huge":
            big = f"{n} " + "x" * 100_000
            g.request("PATCH", f"users/{self._user(h)}", json={"jobTitle": big})
            created = g.request("POST", f"users/{user}/mailFolders/inbox/messages", json={
                "subject": big, "body": {"contentType": "text", "content": big}})
            self.messages.append((user, created.json()["id"]))
        else:
            self._wrong_types(h, self._user(h), n)
        self.written[kind] += 1

    def _wrong_types(self, h: ScenarioHarness, user_id: str, n: int) -> None:
        """A user whose properties have the wrong JSON types, as a buggy or newer Graph could send.

        Graph's write API refuses them (as the emulator does), so the item is put into the emulator's
        store directly; the store notifies subscribers and serves it in delta like any other change."""
        assert h.emulator is not None
        store = h.emulator.state.store
        collection = self._users(h)
        with store.lock:
            current = collection.get(user_id)
        if current is None:
            return
        variants: list[dict[str, Any]] = [
            {"jobTitle": 12345 + n, "accountEnabled": "yes"},
            {"jobTitle": ["a", "list", n], "displayName": {"nested": n}},
            {"accountEnabled": 1, "jobTitle": None, "displayName": 3.5},
        ]
        item = {**current, **variants[n % len(variants)]}
        store.put(collection, user_id, item, change_type="updated")

    def cleanup(self, h: ScenarioHarness) -> None:
        """Graph's data made valid again, so that the next scenario starts from a mirror that can converge."""
        assert h.emulator is not None and h.graph is not None
        store, collection = h.emulator.state.store, self._users(h)
        for user_id, item in self.users.items():
            if collection.get(user_id) is not None:
                store.put(collection, user_id, item, change_type="updated")
        for group in self.groups:
            h.graph.request("PATCH", f"groups/{group}", json={"displayName": "cleaned"})
        for user, message in self.messages:
            h.graph.request("DELETE", f"users/{user}/messages/{message}")

    def notes(self) -> dict[str, Any]:
        return {"poison_writes": dict(self.written)}


class CorruptDeltaLink(Scenario):
    name = "deltalink"
    description = "stored deltaLinks overwritten (empty, not a URL, bogus token, truncated) mid-run"

    def __init__(self, times: int = 2) -> None:
        self.times = times
        self.at: list[float] = []
        self.corrupted = 0

    def start(self, h: ScenarioHarness) -> None:
        self.corrupted = 0
        self.at = [0.0] + [float(i + 1) for i in range(self.times - 1)]
        self.during(h, 0.0)

    def during(self, h: ScenarioHarness, elapsed: float) -> None:
        if not self.at or self.at[0] > elapsed:
            return
        self.at.pop(0)
        assert h.emulator is not None
        graph_url = h.emulator.info["graph_url"]
        s = schema.sync_state
        engine = h.engine()
        try:
            with engine.begin() as connection:
                rows = connection.execute(
                    sa.select(s.c.tenant_id, s.c.scope_key, s.c.delta_link).where(s.c.delta_link.is_not(None))
                ).all()
                for i, (tenant, key, link) in enumerate(rows):
                    bad = ["", "not a url", f"{graph_url}/{key}/delta?$deltatoken=corrupt{i}", link[: len(link) // 2]]
                    connection.execute(
                        sa.update(s).where(s.c.tenant_id == tenant, s.c.scope_key == key)
                        .values(delta_link=bad[(i + self.corrupted) % len(bad)])
                    )
                self.corrupted += len(rows)
        finally:
            engine.dispose()

    def notes(self) -> dict[str, Any]:
        return {"links_corrupted": self.corrupted}


class Hostile(Scenario):
    name = "hostile"
    description = "id floods, slow/short bodies, mixed batches straight to the receiver"

    def __init__(self, threads: int = 2, slow_clients: int = 4) -> None:
        self.threads = threads
        self.slow_clients = slow_clients
        self.stop_event = threading.Event()
        self.workers: list[threading.Thread] = []
        self.statuses: Counter[str] = Counter()
        self.forged_ids: set[str] = set()
        self.lock = threading.Lock()

    def start(self, h: ScenarioHarness) -> None:
        self.stop_event.clear()
        self.statuses = Counter()
        self.forged_ids = set()
        url = f"http://127.0.0.1:{h.port}/notifications"
        tenant = h.spec.tenants[0].tenant_id if h.spec is not None else "t"
        valid = self._valid_items(h)
        targets: list[Callable[[], None]] = (
            [lambda: self._flood(url, tenant) for _ in range(self.threads)]
            + [lambda: self._mixed(url, tenant, valid) for _ in range(self.threads)]
            + [lambda: self._slow(h.port) for _ in range(self.slow_clients)]
        )
        self.workers = [threading.Thread(target=t, daemon=True) for t in targets]
        for thread in self.workers:
            thread.start()

    def end(self, h: ScenarioHarness) -> None:
        self.stop_event.set()
        for thread in self.workers:
            thread.join(timeout=15)

    def _count(self, status: object) -> None:
        with self.lock:
            self.statuses[str(status)] += 1

    def _forged(self, tenant: str, n: int) -> list[dict[str, Any]]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        with self.lock:
            self.forged_ids.update(ids)
        return [{"subscriptionId": sid, "changeType": "updated", "clientState": "guess", "tenantId": tenant,
                 "resource": f"users/{uuid.uuid4()}", "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                 "resourceData": {"id": str(uuid.uuid4())}} for sid in ids]

    def _flood(self, url: str, tenant: str) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self.stop_event.is_set():
                try:
                    self._count(session.post(url, json={"value": self._forged(tenant, 50)}, timeout=10).status_code)
                except requests.RequestException as error:
                    self._count(type(error).__name__)

    def _valid_items(self, h: ScenarioHarness) -> list[dict[str, Any]]:
        """Real items from the delivery log (replayed: the receiver stores them again or dedupes them)."""
        items = [i for e in h.delivery()["log"] if isinstance(e.get("status"), int) and 200 <= e["status"] < 300
                 for i in (e.get("body") or {}).get("value", []) if "changeType" in i]
        return items[-20:]

    def _mixed(self, url: str, tenant: str, valid: list[dict[str, Any]]) -> None:
        other_tenant = str(uuid.uuid4())
        n = 0
        with requests.Session() as session:
            session.trust_env = False
            while not self.stop_event.is_set():
                n += 1
                batch = self._forged(tenant, 3) + self._forged(other_tenant, 2)
                if valid:
                    good = dict(valid[n % len(valid)])
                    wrong_state = {**valid[(n + 1) % len(valid)], "clientState": "not-ours"}
                    batch += [good, wrong_state]
                body: dict[str, Any] = {"value": batch,
                                        "validationTokens": ["eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0.", "garbage"]}
                try:
                    self._count(session.post(url, json=body, timeout=10).status_code)
                except requests.RequestException as error:
                    self._count(type(error).__name__)
                self.stop_event.wait(0.05)

    def _slow(self, port: int) -> None:
        """A client that sends its body a few bytes at a time, or promises more than it sends."""
        n = 0
        while not self.stop_event.is_set():
            n += 1
            body = json.dumps({"value": []}).encode()
            promised = len(body) + (1000 if n % 2 else 0)  # every other one never finishes its body
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.sendall(b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 + f"Content-Length: {promised}\r\n\r\n".encode())
                    for byte in body:
                        if self.stop_event.wait(0.3):
                            break
                        conn.sendall(bytes([byte]))
                    conn.settimeout(5)
                    reply = conn.recv(64)
                    self._count("slow:" + (reply.split(b" ")[1].decode() if reply.startswith(b"HTTP") else "closed"))
            except OSError as error:
                self._count("slow:" + type(error).__name__)

    def forged_stored(self, h: ScenarioHarness) -> int:
        """Inbox rows for forged subscription ids (must be none)."""
        if not self.forged_ids:
            return 0
        engine = h.engine()
        try:
            with engine.connect() as connection:
                ids = {str(s) for (s,) in connection.execute(sa.select(schema.inbox.c.subscription_id).distinct())}
        finally:
            engine.dispose()
        return len(ids & self.forged_ids)

    def notes(self) -> dict[str, Any]:
        return {"hostile_responses": dict(self.statuses), "forged_ids": len(self.forged_ids)}


class TwoOfEach(Scenario):
    name = "two"
    description = "two receivers behind the notification URL, two workers"

    def __init__(self) -> None:
        self.balancer: Balancer | None = None
        self.original: Proc | None = None

    def start(self, h: ScenarioHarness) -> None:
        assert h.receiver is not None
        self.original = h.receiver
        # SIGKILL rather than a graceful stop, which waits for the emulator's keep-alive connections
        # to close (seconds): deliveries that meet the gap are retried, as after any restart.
        h.receiver.kill()
        a, b = free_port(), free_port()
        first, second = h.receivers_on({"receiver-a": a, "receiver-b": b})
        self.balancer = Balancer([("127.0.0.1", a), ("127.0.0.1", b)], port=h.port).start()
        # receiver-a stands for the harness's receiver (ensure_running restarts it), b is extra.
        h.receiver = first
        h.extra.append(second)
        h.second_worker()

    def cleanup(self, h: ScenarioHarness) -> None:
        for proc in h.extra:
            proc.kill()
        h.stop_extra()
        assert h.receiver is not None and self.original is not None
        h.receiver.kill()
        if self.balancer is not None:
            self.balancer.stop()
        h.receiver = self.original
        h.start_receiver()


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "partition": Partition,
    "readonly": ReadOnlyPrimary,
    "slowdb": SlowDatabase,
    "clock": ClockJump,
    "poison": Poison,
    "deltalink": CorruptDeltaLink,
    "hostile": Hostile,
    "two": TwoOfEach,
}


# --- running one -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario cost."""

    name: str
    answered: int  # change items answered 2xx by the receiver
    stored: int  # inbox rows added
    lost: int  # answered 2xx, not in the inbox
    recovery: float | None  # seconds from the fault's end to mirror == Graph; None: not converged
    changes: int
    statuses: dict[str, int]
    differences: list[str] = field(default_factory=list)
    crashes: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the scenario could not run (e.g. a fault the harness does not have yet)

    def row(self) -> str:
        recovery = f"{self.recovery:.1f}" if self.recovery is not None else "never"
        return f"{self.name:<10} {self.answered:>12} {self.stored:>11} {self.lost:>5} {recovery:>11}"

    def as_json(self) -> dict[str, Any]:
        return {
            "answered_2xx": self.answered, "rows_stored": self.stored, "lost": self.lost,
            "recovery_seconds": None if self.recovery is None else round(self.recovery, 1),
            "converged": self.recovery is not None, "changes": self.changes, "responses": self.statuses,
            "differences": self.differences[:5], "crashes": self.crashes, **self.notes,
            **({"error": self.error} if self.error else {}),
        }


HEADER = f"{'scenario':<10} {'2xx answered':>12} {'rows stored':>11} {'lost':>5} {'recovery s':>11}"


def run(h: ScenarioHarness, scenario: Scenario, *, seconds: float, rate: float, timeout: float,
        nudge: bool = False) -> Outcome:
    """Run *scenario* on the started harness *h*: fault, changes while it lasts, end, measure.

    *nudge*: after the fault, one change in every scope (a notification for each), so that a
    notification Graph gave up on is made good by the next one's pass rather than by the spec's
    safety net a minute later (the test suite's choice; the bench measures without)."""
    h.settle(min_uptime=1.0)
    seq, inbox_id, changes = h.last_seq(), h.last_inbox_id(), sum(h.changes.values())
    crashes_before = {p.name: len(p.crashes) for p in h.processes()}
    error = None
    try:
        scenario.start(h)
        try:
            h.changes_for(seconds, rate=rate, during=lambda elapsed: scenario.during(h, elapsed))
        finally:
            scenario.end(h)
    except Exception as exc:  # reported with the figures; the next scenario still runs
        error = f"{type(exc).__name__}: {exc}"
    ended = time.monotonic()
    recovery: float | None = None
    differences: list[str] = []
    try:
        if nudge:
            h.touch_every_scope()
        _, found = h.converge(timeout=timeout)
        differences = [str(d) for d in found]
        recovery = None if found else time.monotonic() - ended
        report = h.delivery()
        log = [e for e in report["log"] if e["seq"] > seq]
        answered = sum(
            1 for e in log if isinstance(e.get("status"), int) and 200 <= e["status"] < 300
            for i in (e.get("body") or {}).get("value", []) if "changeType" in i
        )
        lost = len(h.unstored_acks({"log": log}))
        notes = scenario.notes()
        if isinstance(scenario, Hostile):
            notes["forged_stored"] = scenario.forged_stored(h)
        statuses = Counter(str(e.get("status", e.get("outcome"))) for e in log)
        crashes = {p.name: p.crashes[crashes_before.get(p.name, 0):] for p in h.processes()
                   if p.crashes[crashes_before.get(p.name, 0):]}
        return Outcome(scenario.name, answered, h.inbox_rows_after(inbox_id), lost, recovery,
                       sum(h.changes.values()) - changes, dict(statuses), differences, crashes, notes, error)
    finally:
        scenario.cleanup(h)
        if recovery is None:
            h.reset()
            h.converge(timeout=timeout)


