"""Benchmark: the Graph client's paging overhead against raw requests + orjson, on the same pages.

Starts an emulator in-process, seeds N users (default 100k), then pages the users delta with
``Prefer: odata.maxpagesize=999`` alternately through :class:`syncer.graph.GraphClient` and through a
bare ``requests.Session`` + ``orjson.loads`` loop (same token, same pages), several rounds each, and
prints one JSON line: items/s of each (best round) and the ratio client/raw (goal >= 0.9): the
median over back-to-back pairs of rounds, the order alternating, after one warm-up round.

    .venv/bin/python bench/client.py [--users 100000] [--rounds 3]

Both paths parse every page fully and count its items, and neither stores anything: what is
measured is the client's own cost per page (token lookup, semaphores, ids, error checks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.graph import ClientSecretCredential, GraphClient

PREFER = {"Prefer": "odata.maxpagesize=999"}


def raw_round(session: requests.Session, url: str, token: str, verify: str) -> tuple[int, int, float, float]:
    """Page a delta round with bare requests + orjson; (items, pages, seconds, CPU seconds of this thread)."""
    headers = {"Authorization": f"Bearer {token}", **PREFER}
    items = pages = 0
    cpu = time.thread_time()
    started = time.perf_counter()
    next_url: str | None = url
    while next_url:
        response = session.get(next_url, headers=headers, verify=verify, timeout=(10, 60))
        response.raise_for_status()
        doc: dict[str, Any] = orjson.loads(response.content)
        items += len(doc["value"])
        pages += 1
        next_url = doc.get("@odata.nextLink")
    return items, pages, time.perf_counter() - started, time.thread_time() - cpu


def client_round(client: GraphClient, url: str) -> tuple[int, int, float, float]:
    """Page the same round through GraphClient.delta; (items, pages, seconds, CPU seconds of this thread)."""
    cpu = time.thread_time()
    started = time.perf_counter()
    delta = client.delta(url, headers=PREFER)
    items = 0
    for page in delta:
        items += len(page.items)
    assert delta.delta_link, "the round must end on a deltaLink"
    return items, delta.pages, time.perf_counter() - started, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with EmulatorServer(EmulatorConfig()) as server:
        info = server.info
        seed = requests.post(
            f"{info['admin_url']}/seed", json={"users": args.users}, verify=info["ca_cert"], timeout=600
        )
        seed.raise_for_status()
        credential = ClientSecretCredential(
            info["base_url"],
            info["tenant_id"],
            info["client_id"],
            info["client_secret"],
            ca_bundle=info["ca_cert"],
        )
        client = GraphClient(info["graph_url"], credential, ca_bundle=info["ca_cert"])
        url = f"{client.base_url}/users/delta"
        token = credential.token(client.scopes)
        session = requests.Session()
        raw_runs, client_runs = [], []
        # One warm-up round (emulator caches, connection set-up), then alternate which goes first
        # so that neither side always meets a warmer server.
        raw_round(session, url, token, info["ca_cert"])
        for n in range(args.rounds):
            if n % 2:
                client_runs.append(client_round(client, url))
                raw_runs.append(raw_round(session, url, token, info["ca_cert"]))
            else:
                raw_runs.append(raw_round(session, url, token, info["ca_cert"]))
                client_runs.append(client_round(client, url))
        client.close()

    items = raw_runs[0][0]
    assert all(run[0] == items for run in raw_runs + client_runs), (raw_runs, client_runs)
    raw_rate = max(run[0] / run[2] for run in raw_runs)
    client_rate = max(run[0] / run[2] for run in client_runs)
    # The machines are shared (±25% between runs): the headline ratio is the median of the ratios of
    # back-to-back pairs, which cancels most of the drift; best-of rates are printed beside it.
    paired = sorted(raw[2] / cli[2] for raw, cli in zip(raw_runs, client_runs, strict=True))
    median = _median(paired)
    # The emulator runs in other threads of this process, so this thread's CPU time is the cost of
    # the paging loop alone (requests, TLS, parsing, and the client's own work), immune to the load
    # other processes put on the shared cores.
    cpu_ratio = _median([raw[3] / cli[3] for raw, cli in zip(raw_runs, client_runs, strict=True)])
    print(
        orjson.dumps(
            {
                "bench": "graph_client_paging",
                "users": args.users,
                "items_per_round": items,
                "pages_per_round": raw_runs[0][1],
                "rounds": args.rounds,
                "raw_items_per_s": round(raw_rate),
                "client_items_per_s": round(client_rate),
                "ratio": round(median, 3),
                "ratio_best_of": round(client_rate / raw_rate, 3),
                "pair_ratios": [round(r, 3) for r in paired],
                "cpu_ratio": round(cpu_ratio, 3),
                "client_cpu_us_per_page": round(min(c[3] for c in client_runs) / client_runs[0][1] * 1e6),
                "raw_cpu_us_per_page": round(min(r[3] for r in raw_runs) / raw_runs[0][1] * 1e6),
                "goal": 0.9,
            }
        ).decode()
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


if __name__ == "__main__":
    main()
