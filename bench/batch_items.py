"""Benchmark: the emulator's CPU per ``$batch`` item, in-process (no network, no added latency).

    .venv/bin/python bench/batch_items.py [--envelopes 150] [--repeat 3]

Seeds 50 mailboxes of 20 messages, then sends ``--envelopes`` envelopes of 20 items, each listing 10 messages of
another mailbox, through the Flask app's test client (the items themselves run as the emulator runs them, on its
threads), and reports this process's CPU milliseconds per item: the median of ``--repeat`` runs. Every benchmark
whose client batches (reconcile, the mirror's first pages) pays this per request. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncer.emulator import EmulatorConfig
from syncer.emulator.app import create_app
from syncer.emulator.seed import seed
from syncer.emulator.state import EmulatorState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    state = EmulatorState.create(EmulatorConfig(seed=1))
    seed(state, {"users": 50, "contentUsers": 50, "messagesPerUser": 20})
    client = create_app(state).test_client()
    config = state.config
    token = client.post(f"/{config.tenant_id}/oauth2/v2.0/token", data={
        "client_id": config.client_id, "client_secret": config.client_secret,
        "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
    }).json["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    users = client.get("/v1.0/users?$top=50", headers=headers).json["value"]
    body = orjson.dumps({"requests": [
        {"id": str(i), "method": "GET", "url": f"/users/{user['id']}/mailFolders/inbox/messages?$top=10&$select=subject"}
        for i, user in enumerate(users[:20])
    ]})

    def send(count: int) -> None:
        for _ in range(count):
            answer = client.post("/v1.0/$batch", data=body, headers=headers).json
            if any(item["status"] != 200 for item in answer["responses"]):
                raise SystemExit(f"an item failed: {answer['responses'][0]}")

    send(5)  # warm-up: imports, caches
    runs = []
    for _ in range(args.repeat):
        started = time.process_time()
        send(args.envelopes)
        runs.append(1000 * (time.process_time() - started) / (20 * args.envelopes))
    print(json.dumps({"cpu_ms_per_item": round(statistics.median(runs), 3), "runs": [round(r, 3) for r in runs]}))


if __name__ == "__main__":
    main()
