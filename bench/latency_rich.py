"""The rich variant of bench/latency.py (``--rich``, issue 15): rows from rich payloads vs delta passes.

One run, one emulator, one receiver and worker (subprocesses, as in production). Four declarations: inbox
messages of two mailboxes with basic notifications and of two others with rich ones; the channel messages of
one team with basic notifications and of another with rich ones. Changes (new messages, new channel posts) go
round-robin to the four at --rate per second. For each: change -> row visible (the finish of the write that
stored it), and the GETs of the item in the emulator's request log (a rich item must need none).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from chaos_harness import SPEC as CHAOS_SPEC
from chaos_harness import Harness
from latency import epoch, summary

from syncer import mirror, schema
from syncer.spec import Spec, load_spec

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
  sync_interval: {sync_interval}
subscriptions:
{declarations}
"""
# Graph allows one subscription per resource and change types: the two differ in the latter (only creations are
# measured), and each channel declaration names its own channel.
MAIL = """\
  - name: mail-{kind}
    resource: users/{{user}}/mailFolders/inbox/messages
    for_each: {{users: [{users}]}}
    change_types: [{change_types}]
    lifetime: 1d{rich}
    mirror: {{table: mail_{kind}, columns: [subject, lastModifiedDateTime]}}
"""
CHANNEL = """\
  - name: channel-{kind}
    resource: 'teams/{team}/channels/{channel}/messages'
    lifetime: 1d{rich}
    mirror: {{table: channel_{kind}, columns: [subject, {{field: body.content, column: body_text}}, lastModifiedDateTime]}}
"""
PATHS = ("mail-basic", "mail-rich", "channel-basic", "channel-rich")


def certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed RSA certificate and its key, for Graph to encrypt with."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncer-bench")])
    now = datetime.now().astimezone()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "bench-cert.pem", workdir / "bench-cert.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class RichHarness(Harness):
    """The chaos harness with the four declarations above instead of its own."""

    teams: list[str]
    channels: dict[str, str]  # team -> the channel followed

    def _load(self, info_file: Path, *, users: list[str]) -> Spec:
        if users == ["placeholder"]:  # the bootstrap spec, only for a Graph client
            return super()._load(info_file, users=users)
        assert self.graph is not None
        self.teams = [t["id"] for t in self.graph.get_json("teams?$select=id")["value"]][:2]
        self.channels = {t: self.graph.get_json(f"teams/{t}/channels?$select=id")["value"][0]["id"] for t in self.teams}
        cert, key = certificate(self.workdir)
        rich = (f'\n    include_resource_data: true\n    encryption: {{certificate: "{cert}", '
                f'private_key: {{file: "{key}"}}, id: bench-1}}')
        declarations = "".join([
            MAIL.format(kind="basic", users=", ".join(users[:2]), rich="", change_types="created, updated, deleted"),
            MAIL.format(kind="rich", users=", ".join(users[2:4]), rich=rich, change_types="created, updated"),
            *(CHANNEL.format(kind=kind, team=team, channel=self.channels[team], rich=rich if kind == "rich" else "")
              for kind, team in zip(("basic", "rich"), self.teams, strict=True)),
        ])
        path = self.workdir / "subscriptions.yaml"
        path.write_text(SPEC.format(info=info_file, port=self.port, sync_interval=self.sync_interval,
                                    declarations=declarations))
        assert CHAOS_SPEC  # the bootstrap's
        import os

        return load_spec(path, environ={**os.environ, "SYNCER_DATABASE_URL": self.database_url}).resolve_emulator()


def run_rich(args: Any, db: tuple[str, Any]) -> None:
    url, cleanup = db
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="syncer-latency-rich-"))
    org = {"users": 20, "groups": 1, "membersPerGroup": 2, "messagesPerUser": 2, "driveItemsPerUser": 0,
           "eventsPerUser": 0, "contactsPerUser": 0, "tasksPerUser": 0, "teamsPerUser": 1, "chatsPerUser": 0,
           "channelMessagesPerUser": 2, "contentUsers": 4}
    harness = RichHarness(url, workdir, seed=args.seed, org=org, drain_interval=args.drain_interval, proxy=False)
    changes: list[dict[str, Any]] = []
    try:
        harness.start()
        took, differences = harness.converge(timeout=180)
        if differences:
            raise SystemExit(f"initial sync did not converge: {differences[:3]}")
        print(f"initial sync converged in {took:.1f}s", file=sys.stderr)
        if args.graph_latency_ms:
            # Graph answers in tens to hundreds of milliseconds, the emulator in one: its latency rule gives each
            # Graph read the time a real one takes, which is what a rich notification saves.
            harness.admin("POST", "faults", json={"type": "latency", "ms": args.graph_latency_ms,
                                                  "path": "^/v1.0/", "method": "GET"})
        assert harness.graph is not None
        g, users = harness.graph, harness.content_users
        seq = _log_seq(harness)
        # Poisson arrivals: at a fixed pace each path would meet the drain's timer at the same phase every time
        # (4 changes/s over 4 paths and a 0.5 s drain: one path always just after a drain, another just before).
        rng = random.Random(args.seed)
        # Watched while the changes are made: a rich scope's next delta pass rewrites the rows its payloads wrote
        # (its deltaLink did not move), and the row's run is then the later one.
        watcher = Watcher(harness, changes)
        watcher.start()
        due = time.monotonic()
        for n in range(args.changes):
            path = PATHS[n % 4]
            t0 = time.time()
            if path.startswith("mail"):
                user = users[(n // 4) % 2 + (2 if path == "mail-rich" else 0)]
                item = g.request("POST", f"users/{user}/mailFolders/inbox/messages",
                                 json={"subject": f"latency {n}", "body": {"contentType": "text", "content": "x"}}
                                 ).json()["id"]
            else:
                team = harness.teams[0 if path == "channel-basic" else 1]
                channel = harness.channels[team]
                item = harness.admin("POST", f"teams/{team}/channels/{quote(channel, safe='')}/messages",
                                     json={"from": users[0], "body": {"contentType": "html", "content": f"{n}"}})["id"]
            changes.append({"path": path, "id": item, "t0": t0})
            due += rng.expovariate(args.rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        visible = watcher.finish(timeout=args.timeout)
        gets = _item_gets(harness, seq, changes)
        inbox = _inbox_times(harness)
        result: dict[str, Any] = {"variant": "rich", "database": args.database, "rate": args.rate,
                                  "drain_interval": args.drain_interval, "graph_latency_ms": args.graph_latency_ms,
                                  "changes": len(changes)}
        for path in PATHS:
            mine = [c for c in changes if c["path"] == path]
            result[path] = {"latency": summary([visible[c["id"]] - c["t0"] for c in mine if c["id"] in visible]),
                            "not_visible": sum(c["id"] not in visible for c in mine),
                            "item_gets": sum(gets.get(c["id"], 0) for c in mine), "items": len(mine),
                            "breakdown": {
                                "delivery": summary([inbox[c["id"]][0] - c["t0"] for c in mine if c["id"] in inbox]),
                                "inbox_wait": summary([inbox[c["id"]][1] - inbox[c["id"]][0] for c in mine
                                                       if c["id"] in inbox]),
                                "write": summary([visible[c["id"]] - inbox[c["id"]][1] for c in mine
                                                  if c["id"] in inbox and c["id"] in visible])}}
        ratio = {}
        for kind in ("mail", "channel"):
            basic, rich = result[f"{kind}-basic"]["latency"]["p50"], result[f"{kind}-rich"]["latency"]["p50"]
            ratio[kind] = round(basic / rich, 2) if basic and rich else None
        result["basic_over_rich_p50"] = ratio
        result["target_met"] = all(r is not None and r >= 2 for r in ratio.values()) and all(
            result[p]["item_gets"] == 0 for p in ("mail-rich", "channel-rich"))
        print(json.dumps(result))
    finally:
        harness.stop()
        cleanup()


def _inbox_times(harness: Harness) -> dict[str, tuple[float, float]]:
    """Item id -> (received, processed) of its first notification."""
    out: dict[str, tuple[float, float]] = {}
    engine = harness.engine()
    try:
        with engine.connect() as connection:
            i = schema.inbox
            for item_id, received, processed in connection.execute(
                    sa.select(i.c.resource_id, i.c.received_at, i.c.processed_at).order_by(i.c.id)):
                if item_id and item_id not in out and processed is not None:
                    out[str(item_id)] = (epoch(received), epoch(processed))
    finally:
        engine.dispose()
    return out


def _log_seq(harness: Harness) -> int:
    log = harness.admin("GET", "requests", params={"limit": 1})["requests"]
    return int(log[-1]["seq"]) if log else 0


def _item_gets(harness: Harness, since: int, changes: list[dict[str, Any]]) -> dict[str, int]:
    """Item id -> GETs naming it (not delta, not lists) in the emulator's request log since *since*."""
    log = harness.admin("GET", "requests", params={"since": since, "limit": 1_000_000})["requests"]
    counts: dict[str, int] = {}
    ids = {c["id"] for c in changes}
    for entry in log:
        if entry["method"] != "GET" or "/delta" in entry["path"]:
            continue
        for part in entry["path"].replace("(", "/").replace(")", "/").replace("'", "/").split("/"):
            if part in ids:
                counts[part] = counts.get(part, 0) + 1
    return counts


class Watcher(threading.Thread):
    """Item id -> the finish time of the first write (pass or payload batch) seen to store its row."""

    def __init__(self, harness: Harness, changes: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True, name="latency-watcher")
        assert harness.spec is not None
        self.harness, self.changes = harness, changes  # appended to while it runs
        self.tables = {s.name: mirror.build_table(s.mirror) for s in harness.spec.subscriptions}
        self.found: dict[str, float] = {}
        self.deadline = float("inf")

    def run(self) -> None:
        runs = schema.sync_runs
        engine = self.harness.engine()
        try:
            while time.monotonic() < self.deadline:
                wanted = list(self.changes)
                if self.deadline < float("inf") and len(self.found) >= len(wanted):
                    return
                with engine.connect() as connection:
                    for path in PATHS:
                        t = self.tables[path]
                        ids = sorted({c["id"] for c in wanted if c["path"] == path} - set(self.found))
                        if not ids:
                            continue
                        rows = connection.execute(
                            sa.select(t.c.id, runs.c.finished_at).join(runs, runs.c.id == t.c._sync_run_id)
                            .where(t.c.id.in_(ids), runs.c.finished_at.is_not(None))).all()
                        self.found.update({item_id: epoch(finished) for item_id, finished in rows})
                time.sleep(0.05)
        finally:
            engine.dispose()

    def finish(self, *, timeout: float) -> dict[str, float]:
        self.deadline = time.monotonic() + timeout
        self.join()
        return dict(self.found)
