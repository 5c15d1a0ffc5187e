"""Benchmark of the Graph emulator itself: it must never be the bottleneck of the other benchmarks.

    .venv/bin/python bench/emulator.py [--users 100000] [--rounds 2] [--seed-million 1000000]

Starts `syncer emulator` in a subprocess (so server and client use separate cores, as in real runs),
seeds --users users through the admin API, then pages the users delta with
``Prefer: odata.maxpagesize=999`` through plain ``requests`` (session with trust_env off and the
emulator's CA), several rounds, parsing each page with orjson to count its items. Then it times seeding
--seed-million users in a fresh emulator. The last line printed is one JSON object:
``delta_pages_per_s``, ``delta_items_per_s`` (best round), ``delta_page_ms_p50``/``_max``,
``seed_users_s`` (time to seed 1M users, admin round trip included), plus EMU-B's delivery figures
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


def bench_delta(info: dict[str, Any], *, users: int, rounds: int) -> dict[str, Any]:
    """Page a users delta of *users* items, *rounds* times; best round's throughput."""
    session, _ = _session(info)
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
            resp = session.get(url, headers={"Prefer": "odata.maxpagesize=999"}, timeout=60)
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


def bench_delivery(info: dict[str, Any]) -> dict[str, Any]:
    """EMU-B's part: notification delivery throughput (filled in by EMU-B)."""
    return {}


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
            print(f"delta: {results}", file=sys.stderr)
        with emulator_process(Path(tmp) / "b") as info:
            results.update(bench_seed(info, users=args.seed_million))
        with emulator_process(Path(tmp) / "c") as info:
            results.update(bench_delivery(info))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
