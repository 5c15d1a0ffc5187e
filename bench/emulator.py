"""Benchmark of the Graph emulator itself: it must never be the bottleneck of the other benchmarks.

    .venv/bin/python bench/emulator.py [--users 100000] [--rounds 2] [--seed-million 1000000]

Starts `syncer emulator` in a subprocess (so server and client use separate cores, as in real runs),
seeds --users users through the admin API, then pages the users delta with
``Prefer: odata.maxpagesize=999`` through plain ``requests`` (session with trust_env off and the
emulator's CA), several rounds, parsing each page with orjson to count its items. Then it times seeding
--seed-million users in a fresh emulator. The last line printed is one JSON object:
``delta_pages_per_s``, ``delta_items_per_s`` (best round), ``delta_page_ms_p50``/``_max``,
``seed_users_s`` (time to seed 1M users, admin round trip included), the same delta with Graph's
default page (100 users: ``delta_default_page_items_per_s``), plus EMU-B's delivery figures
when its part is present (``bench_delivery`` below).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def emulator_process(workdir: Path) -> Iterator[dict[str, Any]]:
    """Run `syncer emulator` in a subprocess; yield its info dict."""
    info_file = workdir / "info.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "emulator", "--info-file", str(info_file), "--workdir", str(workdir / "wd")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.time() + 60
        while not info_file.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        yield json.loads(info_file.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _session(info: dict[str, Any]) -> tuple[requests.Session, str]:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.verify = info["ca_cert"]
    token = session.post(f"{info['authority']}/oauth2/v2.0/token", timeout=30, data={
        "client_id": info["client_id"], "client_secret": info["client_secret"],
        "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session, token


def bench_delta(info: dict[str, Any], *, users: int, rounds: int, prefer: str = "odata.maxpagesize=999",
                seed: bool = True) -> dict[str, Any]:
    """Page a users delta of *users* items, *rounds* times; best round's throughput."""
    session, _ = _session(info)
    if seed:
        r = session.post(f"{info['base_url']}/_emulator/seed", json={"users": users}, timeout=60)
        r.raise_for_status()
    best: dict[str, Any] = {}
    for _ in range(rounds):
        url = f"{info['graph_url']}/users/delta"
        pages = items = 0
        page_ms: list[float] = []
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            resp = session.get(url, headers={"Prefer": prefer} if prefer else {}, timeout=60)
            resp.raise_for_status()
            body = orjson.loads(resp.content)
            page_ms.append((time.perf_counter() - t0) * 1000)
            pages += 1
            items += len(body["value"])
            if "@odata.deltaLink" in body:
                break
            url = body["@odata.nextLink"]
        elapsed = time.perf_counter() - started
        if items != users:
            raise RuntimeError(f"delta returned {items} items, expected {users}")
        result = {"delta_pages_per_s": round(pages / elapsed, 1), "delta_items_per_s": round(items / elapsed),
                  "delta_page_ms_p50": round(statistics.median(page_ms), 2), "delta_page_ms_max": round(max(page_ms), 2),
                  "delta_pages": pages, "delta_users": users}
        if not best or result["delta_items_per_s"] > best["delta_items_per_s"]:
            best = result
    return best


def bench_seed(info: dict[str, Any], *, users: int) -> dict[str, Any]:
    """Time seeding *users* users through the admin API."""
    session, _ = _session(info)
    started = time.perf_counter()
    r = session.post(f"{info['base_url']}/_emulator/seed", json={"users": users}, timeout=600)
    r.raise_for_status()
    elapsed = time.perf_counter() - started
    # prove they are there: the last one is addressable
    last = r.json()["users"]["upnPattern"].replace("{i}", str(users - 1))
    got = session.get(f"{info['graph_url']}/users/{last}", timeout=30)
    got.raise_for_status()
    return {"seed_users": users, "seed_users_s": round(elapsed, 4)}


class _CountingReceiver:
    """The fastest webhook we can write in-process: raw WSGI, keep-alive, counts items, answers 202.

    It answers the validation handshake like a correct receiver, so the emulator accepts the subscription.
    """

    def __init__(self) -> None:
        import threading

        from werkzeug.serving import WSGIRequestHandler, make_server

        class Handler(WSGIRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                return None

        self.items = 0
        self.posts = 0
        self.done = threading.Event()
        self.expected = 0
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from urllib.parse import parse_qs

        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        token = parse_qs(environ.get("QUERY_STRING", "")).get("validationToken")
        if token:
            data = token[0].encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
            return [data]
        count = len(orjson.loads(body)["value"])
        with self._lock:
            self.items += count
            self.posts += 1
            if self.expected and self.items >= self.expected:
                self.done.set()
        start_response("202 Accepted", [("Content-Length", "0")])
        return [b""]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def bench_delivery(info: dict[str, Any], *, changes: int = 20_000) -> dict[str, Any]:
    """EMU-B's part: notifications/s from the dispatcher to a fast receiver.

    One users subscription; the admin burst endpoint updates *changes* seeded users through the store (a change
    source much faster than HTTP writes). ``delivery_notifications_per_s`` times change-to-receipt of them all (the
    store's write path is part of it); ``delivery_drain_per_s`` times the dispatcher alone, releasing *changes*
    already-queued notifications at once.
    """
    from datetime import UTC, datetime, timedelta

    session, _ = _session(info)
    session.post(f"{info['base_url']}/_emulator/seed", json={"users": changes}, timeout=60).raise_for_status()
    receiver = _CountingReceiver()
    try:
        expiry = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        created = session.post(f"{info['graph_url']}/subscriptions", timeout=30, json={
            "resource": "users", "changeType": "updated", "notificationUrl": receiver.url,
            "expirationDateTime": expiry, "clientState": "bench"})
        created.raise_for_status()
        receiver.expected = changes
        started = time.perf_counter()
        burst = session.post(f"{info['base_url']}/_emulator/delivery/burst", json={"count": changes}, timeout=600)
        burst.raise_for_status()
        if not receiver.done.wait(timeout=600):
            raise RuntimeError(f"only {receiver.items} of {changes} notifications arrived")
        elapsed = time.perf_counter() - started
        # Second round: hold every notification back (delay fault on a frozen clock), then release them at once
        # to time the dispatcher alone, without the store's write path feeding it.
        admin = f"{info['base_url']}/_emulator"
        session.post(f"{admin}/clock", json={"freeze": True}, timeout=30).raise_for_status()
        session.post(f"{admin}/delivery/faults", json={"delay": 1, "delaySeconds": 1}, timeout=30).raise_for_status()
        receiver.items, receiver.posts = 0, 0
        receiver.done.clear()
        session.post(f"{admin}/delivery/burst", json={"count": changes}, timeout=600).raise_for_status()
        session.post(f"{admin}/delivery/wait", json={"includeScheduled": False, "timeoutSeconds": 60}, timeout=90)
        session.delete(f"{admin}/delivery/faults", timeout=30).raise_for_status()
        drain_started = time.perf_counter()
        session.post(f"{admin}/clock", json={"advance": 2}, timeout=30).raise_for_status()
        if not receiver.done.wait(timeout=600):
            raise RuntimeError(f"only {receiver.items} of {changes} held notifications arrived")
        drain = time.perf_counter() - drain_started
        report = session.get(f"{admin}/delivery", params={"limit": 0}, timeout=30).json()
        return {
            "delivery_drain_per_s": round(changes / drain),
            "delivery_notifications_per_s": round(changes / elapsed),
            "delivery_notifications": changes,
            "delivery_posts": receiver.posts,
            "delivery_items_per_post": round(receiver.items / max(receiver.posts, 1), 1),
            "delivery_changes_per_s": round(changes / max(burst.json()["seconds"], 1e-9)),
            "delivery_failed_attempts": report["failedAttempts"],
        }
    finally:
        receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed-million", type=int, default=1_000_000)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with emulator_process(Path(tmp) / "a") as info:
            results.update(bench_delta(info, users=args.users, rounds=args.rounds))
            default = bench_delta(info, users=args.users, rounds=1, prefer="", seed=False)
            results["delta_default_page_items_per_s"] = default["delta_items_per_s"]
            results["delta_default_page_ms_p50"] = default["delta_page_ms_p50"]
            print(f"delta: {results}", file=sys.stderr)
        with emulator_process(Path(tmp) / "b") as info:
            results.update(bench_seed(info, users=args.seed_million))
        with emulator_process(Path(tmp) / "c") as info:
            results.update(bench_delivery(info))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
