"""Benchmark: `syncer reconcile` with 1,000 declared subscriptions against the emulator.

Starts an emulator in-process, seeds N users (default 1,000), declares one message subscription per
user (``for_each: {users: all}``), and runs three reconciles, reading the emulator's request log
after each:

1. from nothing: N creates (each one a validation handshake against a tiny local receiver);
2. with nothing to do: must make only list calls (GET) and no write;
3. after moving the emulator's clock so that every subscription is due: N renewals, which must take
   at most N/20 ``$batch`` calls (50 for 1,000) and no other write.

Prints the calls made and the wall time of each run, then one JSON line.

    .venv/bin/python bench/reconcile.py [--users 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncer.database import create_engine
from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.graph.times import parse_datetime
from syncer.migrate import upgrade_core
from syncer.reconcile import Outcome, graphs_for, reconcile
from syncer.spec import load_spec


@Request.application  # type: ignore[misc]
def handshake_app(request: Request) -> Response:
    """Answers Graph's validation handshake; accepts (and drops) notifications."""
    token = request.args.get("validationToken")
    if token is not None:
        return Response(token, content_type="text/plain")
    return Response(status=202)


class QuietHandler(WSGIRequestHandler):
    """No access log: 3,000 lines of handshakes would bury the figures."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class Emulator:
    """The admin side of the emulator: clock and request log."""

    def __init__(self, server: EmulatorServer) -> None:
        self.info = server.info
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = server.info["ca_cert"]

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(
            method, f"{self.info['base_url']}/_emulator/{path}", timeout=60, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def now(self) -> datetime:
        return parse_datetime(self.admin("GET", "clock")["now"])

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        return [
            e
            for e in self.admin("GET", "requests", params={"since": seq, "limit": 1_000_000})["requests"]
            if "/v1.0/" in e["path"]
        ]

    def last_seq(self) -> int:
        log = self.admin("GET", "requests", params={"limit": 1})["requests"]
        return int(log[-1]["seq"]) if log else 0


def summarise(calls: list[dict[str, Any]]) -> dict[str, int]:
    """Calls by "METHOD path" with ids folded, batch items apart."""
    counter: Counter[str] = Counter()
    for e in calls:
        path = e["path"].split("?", 1)[0]
        parts = path.split("/")
        if len(parts) > 3 and parts[2] in ("subscriptions", "users"):
            path = "/".join([*parts[:3], "{id}", *parts[4:]])
        counter[f"{'batch item ' if e.get('batch') else ''}{e['method']} {path}"] += 1
    return dict(sorted(counter.items()))


def timed(label: str, emulator: Emulator, run: Any) -> tuple[Outcome, dict[str, Any]]:
    seq = emulator.last_seq()
    started = time.perf_counter()
    outcome: Outcome = run()
    seconds = time.perf_counter() - started
    calls = emulator.requests_since(seq)
    envelope_calls = [e for e in calls if not e.get("batch")]
    writes = [e for e in calls if e["method"] != "GET" and not e["path"].endswith("/$batch")]
    figures = {
        "seconds": round(seconds, 2),
        "http_calls": len(envelope_calls),
        "batch_calls": sum(1 for e in envelope_calls if e["path"].endswith("/$batch")),
        "writes_outside_batch": sum(1 for e in writes if not e.get("batch")),
        "counts": {k: v for k, v in outcome.plan.counts().items() if v},
        "failed": len(outcome.failed),
        "calls": summarise(calls),
    }
    print(f"{label}: {json.dumps(figures)}", file=sys.stderr)
    return outcome, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    n = args.users

    receiver = make_server("127.0.0.1", 0, handshake_app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    server = EmulatorServer(EmulatorConfig(seed=7), workdir=workdir / "emulator")
    server.start()
    try:
        emulator = Emulator(server)
        emulator.admin("POST", "seed", json={"users": n})
        info = server.info
        spec_path = workdir / "subscriptions.yaml"
        spec_path.write_text(
            f"""
version: 1
graph: {{cloud: custom, graph_url: "{info["graph_url"]}", authority_host: "{info["base_url"]}", ca_bundle: "{info["ca_cert"]}"}}
tenants:
  - {{name: main, tenant_id: "{info["tenant_id"]}", client_id: "{info["client_id"]}", client_secret: {{env: BENCH_SECRET}}}}
receiver:
  notification_url: "http://127.0.0.1:{receiver.server_port}/notifications"
  lifecycle_url: "http://127.0.0.1:{receiver.server_port}/lifecycle"
database: {{url: "sqlite:///{workdir / "syncer.db"}"}}
subscriptions:
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created, updated, deleted]
    lifetime: 3d
    renew_before: 1h
    for_each: {{users: all}}
"""
        )
        spec = load_spec(spec_path, environ={"BENCH_SECRET": info["client_secret"]})
        upgrade_core(spec.database_url)
        engine = create_engine(spec.database_url)
        graphs = graphs_for(spec)

        def run() -> Outcome:
            return reconcile(spec, graphs=graphs, engine=engine, clock=emulator.now)

        created, create_figures = timed("create", emulator, run)
        noop, noop_figures = timed("no-op", emulator, run)
        emulator.admin(
            "POST", "clock", json={"advance": (timedelta(days=3) - timedelta(minutes=30)).total_seconds()}
        )
        renewed, renew_figures = timed("renew", emulator, run)

        noop_only_lists = all(key.startswith("GET ") for key in noop_figures["calls"]) and noop_figures[
            "counts"
        ] == {"keep": n}
        result = {
            "bench": "reconcile",
            "subscriptions": n,
            "create": create_figures | {"calls": None},
            "noop": noop_figures | {"calls": noop_figures["calls"]},
            "renew": renew_figures | {"calls": None},
            "noop_only_list_calls": noop_only_lists,
            "renew_batch_calls_ok": renew_figures["batch_calls"] <= -(-n // 20)
            and renew_figures["writes_outside_batch"] == 0
            and renewed.plan.counts()["renew"] == n
            and not renewed.failed,
            "created_ok": created.plan.counts()["create"] == n and not created.failed,
        }
        print(json.dumps(result))
        for graph in graphs.values():
            graph.close()
        engine.dispose()
        del noop
    finally:
        server.stop()
        receiver.shutdown()


if __name__ == "__main__":
    main()
