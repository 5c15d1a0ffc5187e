"""Chaos scenarios of bad input: from Graph (``poison``), in syncer's own cursors (``deltalink``), from the network (``hostile``).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests
import sqlalchemy as sa
from chaos_scenario_harness import Scenario, ScenarioHarness

from syncer import schema


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
