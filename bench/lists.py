"""Benchmark of SharePoint list items: the first mirror of a list of N items and a pass over changes, SQLite and PostgreSQL.

The list is declared by its site's server-relative path (``sites/{host}:/sites/seeded:/lists/Issues``), so each run
also resolves the site and list (two GETs). The emulator runs in its own process (bench/sync.py's ``Emulator``) and
seeds ``--items`` items (``listItemsPerUser`` over ``--users`` users) into the list "Issues" of ``/sites/seeded``.

- ``first``: :func:`syncer.worker.scheduler.sync_once` (what ``syncer sync`` runs) from an empty mirror, items/s;
- ``incremental``: ``--changes`` items edited through Graph's API (PATCH .../fields), then one pass from the deltaLink.

Usage: ``python bench/lists.py [--users 100] [--items 20000] [--changes 500] [--postgres URL]``.
Progress on stderr; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sync import Emulator, drop_database, fresh_database  # noqa: E402

from syncer import database, mirror  # noqa: E402
from syncer.migrate import upgrade_core  # noqa: E402
from syncer.spec import load_spec  # noqa: E402
from syncer.worker.scheduler import sync_once  # noqa: E402

PAGE_SIZE = 999


def log(message: str) -> None:
    print(f"[bench/lists] {message}", file=sys.stderr, flush=True)


def graph(emu: Emulator) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = emu.info["ca_cert"]
    session.headers["Authorization"] = f"Bearer {emu.token()}"
    return session


def write_spec(workdir: Path, emu: Emulator, database_url: str, host: str) -> Path:
    path = workdir / f"lists-{os.getpid()}-{time.monotonic_ns()}.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {emu.info_file}}}\n"
        f"database: {{url: '{database_url}'}}\n"
        f"subscriptions:\n  - name: issues\n    resource: 'sites/{host}:/sites/seeded:/lists/Issues'\n"
        "    mirror:\n      table: bench_issues\n      columns: [fields.Title, fields.Status, fields.ReportedBy, lastModifiedDateTime]\n"
    )
    return path


def timed_pass(spec_path: Path) -> dict[str, Any]:
    spec = load_spec(spec_path).resolve_emulator()
    started = time.perf_counter()
    (result,) = sync_once(spec, ["issues"], page_size=PAGE_SIZE)
    elapsed = time.perf_counter() - started
    if result.outcome != "ok":
        raise RuntimeError(f"pass failed: {result}")
    return {"items": result.items, "pages": result.pages, "seconds": round(elapsed, 2),
            "items_per_s": round(result.items / elapsed) if elapsed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--postgres", default=os.environ.get("SYNCER_TEST_DATABASE_URL"))
    args = parser.parse_args()
    per_user = max(1, args.items // args.users)
    figures: dict[str, Any] = {"bench": "lists", "items": per_user * args.users}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        emu = Emulator(workdir)
        try:
            for kind in ("sqlite", "postgres"):
                url = fresh_database(kind, workdir, args.postgres)
                if url is None:
                    figures[kind] = "skipped: no --postgres"
                    continue
                emu.reset_and_seed(0)
                emu.admin("POST", "seed", json={"users": args.users, "contentUsers": args.users, "listItemsPerUser": per_user})
                session = graph(emu)
                base = emu.info["graph_url"]
                site = next(s for s in session.get(f"{base}/sites").json()["value"] if s["webUrl"].endswith("/sites/seeded"))
                host = site["siteCollection"]["hostname"]
                try:
                    spec_path = write_spec(workdir, emu, url, host)
                    spec = load_spec(spec_path).resolve_emulator()
                    upgrade_core(spec.database_url)
                    mirror.upgrade(spec)
                    log(f"{kind}: first pass over {figures['items']} items")
                    first = timed_pass(spec_path)
                    items = f"{base}/sites/{site['id']}/lists/Issues/items"
                    for n in range(1, args.changes + 1):
                        r = session.patch(f"{items}/{n}/fields", json={"Status": "Closed"})
                        r.raise_for_status()
                    log(f"{kind}: pass over {args.changes} changes")
                    changed = timed_pass(spec_path)
                    engine = database.create_engine(spec.database_url)
                    with engine.connect() as connection:
                        from sqlalchemy import text

                        closed = connection.execute(text("SELECT count(*) FROM bench_issues WHERE fields_status = 'Closed'"))
                        figures[kind] = {"first": first, "incremental": changed, "closed_rows": closed.scalar_one()}
                    engine.dispose()
                finally:
                    drop_database(url)
        finally:
            emu.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
