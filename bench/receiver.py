"""Benchmark of the receiver: gunicorn on loopback, driven by wrk, against a no-op Flask app.

    .venv/bin/python bench/receiver.py [--duration 10] [--connections 64] [--backends postgresql,sqlite]

For each backend (PostgreSQL from $SYNCER_TEST_DATABASE_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test,
in a schema of its own; SQLite in a temporary file) and each body size (1 and 10 notifications per
POST), it runs the no-op app and then the receiver under the same gunicorn settings
(syncer.receiver.serve.gunicorn_options), each for --duration seconds at --connections connections, and
checks that the inbox holds at least (2xx responses x items) rows: every 2xx was committed.
Target (issue 6): on PostgreSQL >= 70% of the no-op app's req/s and p99 < 100 ms at 64 connections.
Each case runs --rounds noop/receiver pairs (alternated, the load on a shared machine drifts); the
figures reported are medians over the rounds (ratio, req/s, p99), with every round listed. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
CLIENT_STATE = "bench-client-state-0123456789"
SUBSCRIPTIONS = [str(uuid.UUID(int=i + 1)) for i in range(20)]

LUA = r"""
local n_items = %(items)d
local subs = {%(subs)s}
local counter = 0
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end
local item = '{"subscriptionId":"%%s","subscriptionExpirationDateTime":"2026-04-10T05:00:00+00:00",' ..
  '"changeType":"updated","clientState":"%(client_state)s","tenantId":"%(tenant)s","resource":"Users/%%s",' ..
  '"resourceData":{"@odata.type":"#Microsoft.Graph.User","@odata.id":"Users/%%s","id":"%%s"}}'
local headers = {["Content-Type"] = "application/json"}
request = function()
  counter = counter + 1
  local parts = {}
  local sub = subs[(counter %% #subs) + 1]
  for j = 1, n_items do
    local uid = "%(run)s-" .. tid .. "-" .. counter .. "-" .. j
    parts[j] = string.format(item, sub, uid, uid, uid)
  end
  return wrk.format("POST", "/notifications", headers, '{"value":[' .. table.concat(parts, ",") .. ']}')
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: installing it with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        path = shutil.which("wrk")
    assert path, "wrk could not be installed"
    return path


# --- the servers (run in a child process: `bench/receiver.py --serve noop|receiver`) ---------------


def noop_app() -> Any:
    from flask import Flask, Response

    app = Flask("noop")

    @app.post("/notifications")
    def notifications() -> Response:
        return Response("", status=202)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok")

    return app


def serve(kind: str, database_url: str, bind: str, workers: int | None, threads: int, committers: int,
          worker_class: str | None) -> None:
    from syncer.receiver.receive import ReceiverSettings
    from syncer.receiver.serve import ServeConfig, build_app, gunicorn_options, run_gunicorn

    settings = ReceiverSettings(committers=committers) if committers else ReceiverSettings()
    config = ServeConfig(database_url=database_url, bind=bind, workers=workers, worker_class=worker_class,
                         threads=threads, settings=settings,
                         metrics_dir=tempfile.mkdtemp(prefix="bench-metrics-"))
    load = noop_app if kind == "noop" else (lambda: build_app(config))
    run_gunicorn(load, gunicorn_options(config))


# --- the driver -------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, database_url: str, args: Any, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--database-url", database_url, "--bind", f"127.0.0.1:{port}",
           "--workers", str(args.workers or 0), "--threads", str(args.threads), "--committers", str(args.committers),
           "--worker-class", args.worker_class]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    time.sleep(0.5)  # let every worker come up
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def to_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(wrk: str, url: str, script: Path, *, duration: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    requests_total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests_total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def prepare_database(backend: str, workdir: Path) -> tuple[str, Any]:
    import sqlalchemy as sa

    from syncer import database, schema

    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        cleanup = None
    else:
        base = database.normalize_url(os.environ.get("SYNCER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
        name = f"bench_receiver_{os.getpid()}"
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)

        def cleanup() -> None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()

    engine = database.create_engine(url)
    schema.metadata.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.subscriptions), [
            dict(subscription_id=sid, tenant_id=TENANT, name="people", scope_key="users", resource="users",
                 change_type="updated,deleted", notification_url="http://127.0.0.1/notifications", lifecycle_url=None,
                 client_state=CLIENT_STATE, include_resource_data=False, encryption_certificate_id=None,
                 expires_at=now + timedelta(days=2), created_at=now, updated_at=now, status="active")
            for sid in SUBSCRIPTIONS
        ])
    engine.dispose()
    return url, cleanup


def inbox_rows(url: str, run: str) -> int:
    import sqlalchemy as sa

    from syncer import database, schema

    engine = database.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.inbox).where(schema.inbox.c.resource.like(f"Users/{run}-%"))).scalar_one()
    engine.dispose()
    return int(n)


def measure(kind: str, wrk: str, url: str, items: int, args: Any, workdir: Path, log: Path) -> dict[str, Any]:
    """One server start, a 2-second warm-up and a measured wrk run; for the receiver, the rows check."""
    # Distinct ids per wrk run: every request carries new notifications, no duplicates.
    warm, run = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    for name in (warm, run):
        (workdir / f"{name}.lua").write_text(LUA % {
            "items": items, "subs": ",".join(f'"{s}"' for s in SUBSCRIPTIONS),
            "client_state": CLIENT_STATE, "tenant": TENANT, "run": name,
        })
    proc, base = start(kind, url, args, log)
    try:
        run_wrk(wrk, base, workdir / f"{warm}.lua", duration=2, connections=args.connections)
        figures = run_wrk(wrk, base, workdir / f"{run}.lua", duration=args.duration, connections=args.connections)
    finally:
        stop(proc)
    if kind == "receiver":
        stored = inbox_rows(url, run)
        ok = figures["requests"] - figures["non_2xx"]
        figures["rows_stored"] = stored
        # wrk may cut requests in flight at the end (stored, not counted): >=, not ==
        figures["every_2xx_stored"] = stored >= ok * items and figures["non_2xx"] == 0
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["noop", "receiver"])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=0, help="0: syncer serve's default (CPU count; 1 on SQLite)")
    parser.add_argument("--worker-class", default="", help="'': syncer serve's default (gevent on PostgreSQL, gthread on SQLite)")
    parser.add_argument("--threads", type=int, default=32, help="per gthread worker")
    parser.add_argument("--committers", type=int, default=0, help="0: ReceiverSettings' default (connections per process)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--items", default="1,10")
    parser.add_argument("--rounds", type=int, default=3, help="noop/receiver pairs per case; medians are reported")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.database_url, args.bind, args.workers or None, args.threads, args.committers,
              args.worker_class or None)
        return

    from syncer.receiver.serve import ServeConfig, gunicorn_options

    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    log = workdir / "servers.log"
    results: dict[str, Any] = {
        "connections": args.connections, "duration_s": args.duration, "workers": args.workers,
        "threads": args.threads, "committers": args.committers, "rounds": args.rounds, "cases": [],
    }
    for backend in args.backends.split(","):
        url, cleanup = prepare_database(backend, workdir)
        options = gunicorn_options(ServeConfig(database_url=url, workers=args.workers or None,
                                               worker_class=args.worker_class or None))
        try:
            for items in map(int, args.items.split(",")):
                case: dict[str, Any] = {
                    "backend": backend, "items_per_post": items, "rounds": [],
                    # What the servers ran with: syncer serve's own choice, not a copy of its rules.
                    **{k: options[k] for k in ("workers", "worker_class")},
                }
                # Alternate noop and receiver runs: the machine is shared, and its load drifts within
                # minutes; pairing each receiver run with the noop run next to it keeps the ratio fair.
                for _ in range(args.rounds):
                    pair = {kind: measure(kind, wrk, url, items, args, workdir, log) for kind in ("noop", "receiver")}
                    pair["ratio"] = round(pair["receiver"]["rps"] / pair["noop"]["rps"], 3)
                    case["rounds"].append(pair)
                    print(f"{backend} items={items}: {pair}", file=sys.stderr)
                rounds = case["rounds"]
                case.update(
                    ratio=median(r["ratio"] for r in rounds),
                    noop_rps=median(r["noop"]["rps"] for r in rounds),
                    receiver_rps=median(r["receiver"]["rps"] for r in rounds),
                    receiver_p99_ms=median(r["receiver"]["p99_ms"] for r in rounds),
                    noop_p99_ms=median(r["noop"]["p99_ms"] for r in rounds),
                    every_2xx_stored=all(r["receiver"]["every_2xx_stored"] for r in rounds),
                )
                case["target_met"] = case["ratio"] >= 0.7 and case["receiver_p99_ms"] < 100
                results["cases"].append(case)
        finally:
            if cleanup:
                cleanup()
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
