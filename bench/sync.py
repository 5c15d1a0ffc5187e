"""Benchmark of the sync engine: initial mirror of N users from the emulator, SQLite and PostgreSQL.

Measures, in one run and against one emulator (its own process, so it does not share our GIL):

- ``ceiling``: paging the same users delta with plain requests + orjson, storing nothing;
- ``syncer_sqlite`` / ``syncer_postgres``: :func:`syncer.worker.sync.sync_scope` writing a fresh mirror,
  ``--repeat`` times, each pass right after a ceiling measurement (``of_ceiling`` is the median of
  those pairs: the machine is shared and its load moves between minutes, not within one pair);
- ``dlt_sqlite`` / ``dlt_postgres``: dlt's REST API source loading the same pages the way a competent
  user would (JSON-link paginator on ``@odata.nextLink``, data selector ``value``, primary key ``id``,
  merge, ``max_table_nesting=0``), when dlt is installed (``pip install dlt[postgres,sqlalchemy]``);
- ``incremental``: the time of a pass applying 1,000 changes (PATCHed through Graph's API);
- ``rss``: peak RSS of a syncer pass over N users and over ``--large`` users, each in a fresh process;
- ``--history``: instead, the same initial and incremental passes with and without ``history: true``
  (issue 20), paired per round, with their ratios and the history table's size per version; each round's
  incremental figure is the median of ``--incremental-repeat`` passes of 1,000 changes into its database (one
  such pass lasts 50-100 ms, shorter than the load swings of a shared machine).

Usage: ``python bench/sync.py [--users 100000] [--large 1000000] [--postgres URL] [--skip-dlt] [--repeat 3]``.
Prints progress on stderr and one JSON line of figures at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncer import database, mirror  # noqa: E402
from syncer.migrate import upgrade_core  # noqa: E402
from syncer.spec import load_spec  # noqa: E402
from syncer.worker.scheduler import sync_once  # noqa: E402

PAGE_SIZE = 999
COLUMNS = [
    "displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle", "department",
    "officeLocation", "city", "country", "companyName", "employeeId", "mailNickname", "preferredLanguage",
    "usageLocation", "userType", "accountEnabled",
    "{field: businessPhones, column: business_phones, type: json}",
    "{field: proxyAddresses, column: proxy_addresses, type: json}",
    "{field: createdDateTime, column: created_at, type: datetime}",
]


def log(message: str) -> None:
    print(f"[bench/sync] {message}", file=sys.stderr, flush=True)


# --- the emulator in its own process ---------------------------------------------------------------


class Emulator:
    def __init__(self, workdir: Path) -> None:
        self.info_file = workdir / "emulator.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncer", "emulator", "--info-file", str(self.info_file), "--workdir", str(workdir / "emu")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self.info_file.exists() or not self.info_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.1)
        time.sleep(0.2)
        self.info: dict[str, Any] = json.loads(self.info_file.read_text())
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = self.info["ca_cert"]

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.info['base_url']}/_emulator/{path}", timeout=600, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def token(self) -> str:
        return str(self.admin("POST", "token", json={})["access_token"])

    def reset_and_seed(self, users: int) -> None:
        self.admin("POST", "reset", json={})
        self.admin("POST", "seed", json={"users": users})

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- the measured things ---------------------------------------------------------------------------


def write_spec(workdir: Path, info_file: Path, database_url: str, *, history: bool = False) -> Path:
    path = workdir / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    columns = "\n".join(f"        - {c}" for c in COLUMNS)
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {info_file}}}\n"
        f"database: {{url: '{database_url}'}}\n"
        "subscriptions:\n  - name: users\n    resource: users\n    change_types: [updated, deleted]\n"
        + ("    history: true\n" if history else "")
        +         f"    mirror:\n      table: bench_users\n      columns:\n{columns}\n"
    )
    return path


def ceiling(emu: Emulator, url: str) -> dict[str, Any]:
    """Fetch + parse, nothing stored: the most any pass over this delta can reach."""
    headers = {"Authorization": f"Bearer {emu.token()}", "Prefer": f"odata.maxpagesize={PAGE_SIZE}"}
    session = requests.Session()
    session.trust_env = False
    n = pages = 0
    started = time.perf_counter()
    next_url: str | None = f"{emu.info['graph_url']}/{url}"
    while next_url:
        r = session.get(next_url, headers=headers, verify=emu.info["ca_cert"], timeout=60)
        doc = orjson.loads(r.content)
        n += len(doc["value"])
        pages += 1
        next_url = doc.get("@odata.nextLink")
    elapsed = time.perf_counter() - started
    return {"items": n, "pages": pages, "seconds": round(elapsed, 2), "items_per_s": round(n / elapsed)}


def fresh_database(kind: str, workdir: Path, postgres: str | None) -> str | None:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    if postgres is None:
        return None
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database.normalize_url(postgres))
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    admin.dispose()
    return sa.make_url(database.normalize_url(postgres)).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    name = parsed.query["options"].split("=", 1)[1]  # type: ignore[union-attr]
    admin = sa.create_engine(parsed.difference_update_query(["options"]))
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def syncer_pass(spec_path: Path, *, full: bool = False) -> dict[str, Any]:
    """Exactly what `syncer sync` runs (scheduler.sync_once), timed from the call to its return."""
    spec = load_spec(spec_path).resolve_emulator()
    # The garbage of what came before (an initial pass's 100,000 rows) collected now, not inside a 50 ms pass.
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    (result,) = sync_once(spec, full=full, page_size=PAGE_SIZE)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.outcome != "ok":
        raise RuntimeError(f"pass failed: {result}")
    # cpu_s: this process's CPU time (all its threads; SQLite's work included, PostgreSQL's server not), which
    # the load of a shared machine moves much less than the elapsed time.
    return {"items": result.items, "pages": result.pages, "seconds": round(elapsed, 3), "cpu_s": round(cpu, 4),
            "items_per_s": round(result.items / elapsed) if elapsed else None}


def prepare(spec_path: Path) -> None:
    spec = load_spec(spec_path).resolve_emulator()
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)


def dlt_load(emu: Emulator, url: str, database_url: str, kind: str, workdir: Path) -> dict[str, Any]:
    """dlt's REST API source into the same database, set up as the issue describes."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    os.environ["REQUESTS_CA_BUNDLE"] = emu.info["ca_cert"]  # dlt's session trusts the emulator through it
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    source = rest_api_source(
        {
            "client": {
                "base_url": f"{emu.info['graph_url']}/",
                "auth": {"type": "bearer", "token": emu.token()},
                "headers": {"Prefer": f"odata.maxpagesize={PAGE_SIZE}"},
                "paginator": {"type": "json_link", "next_url_path": "['@odata.nextLink']"},
            },
            "resource_defaults": {"primary_key": "id", "write_disposition": "merge", "max_table_nesting": 0},
            "resources": [{"name": "dlt_users", "endpoint": {"path": url, "data_selector": "value"}}],
        },
        max_table_nesting=0,
    )
    if kind == "sqlite":
        # Primary keys on SQLite: without an index on the key dlt's merge takes minutes (issue 7).
        destination = dlt.destinations.sqlalchemy(credentials=database_url, create_primary_keys=True)
    else:
        parsed = sa.make_url(database_url)
        schema_name = parsed.query["options"].split("=", 1)[1]  # type: ignore[union-attr]
        destination = dlt.destinations.postgres(
            # dlt insists on a password; trust authentication ignores it.
            credentials=parsed.difference_update_query(["options"])
            .set(drivername="postgresql", password=parsed.password or "unused")
            .render_as_string(hide_password=False)
        )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{uuid.uuid4().hex[:6]}", destination=destination,
        dataset_name="main" if kind == "sqlite" else schema_name, pipelines_dir=str(workdir / "dlt"),
    )
    started = time.perf_counter()
    info = pipeline.run(source)
    elapsed = time.perf_counter() - started
    count = pipeline.last_trace.last_normalize_info.row_counts.get("dlt_users", 0) if pipeline.last_trace else 0
    del info
    return {"items": count, "seconds": round(elapsed, 2), "items_per_s": round(count / elapsed) if elapsed else None}


def user_ids(emu: Emulator, count: int) -> list[str]:
    """The ids of the first *count* users Graph lists."""
    headers = {"Authorization": f"Bearer {emu.token()}"}
    listing = emu.session.get(f"{emu.info['graph_url']}/users?$select=id&$top=999", headers=headers, timeout=60).json()
    ids = [u["id"] for u in listing["value"]]
    while len(ids) < count and listing.get("@odata.nextLink"):
        listing = emu.session.get(listing["@odata.nextLink"], headers=headers, timeout=60).json()
        ids += [u["id"] for u in listing["value"]]
    return ids[:count]


def incremental(emu: Emulator, spec_path: Path, changes: int, tag: str = "", ids: list[str] | None = None) -> dict[str, Any]:
    """PATCH *changes* users (*ids*, else the first listed) through Graph's API, then time the pass that applies them."""
    headers = {"Authorization": f"Bearer {emu.token()}"}
    for i, user_id in enumerate(ids or user_ids(emu, changes)):
        r = emu.session.patch(f"{emu.info['graph_url']}/users/{user_id}", headers=headers,
                              json={"jobTitle": f"Changed {i}{tag}"}, timeout=60)
        r.raise_for_status()
    figures = syncer_pass(spec_path)
    return {"changes": changes, **figures}


def peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child would report its (large) parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_child(spec_path: str) -> None:
    """Run in a fresh process: one full pass, then print the peak RSS in KiB."""
    figures = syncer_pass(Path(spec_path))
    figures["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(figures))


def rss(emu: Emulator, workdir: Path, users: int) -> dict[str, Any]:
    emu.reset_and_seed(users)
    database_url = fresh_database("sqlite", workdir, None)
    assert database_url is not None
    spec_path = write_spec(workdir, emu.info_file, database_url)
    prepare(spec_path)
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(spec_path)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def history_size(database_url: str) -> dict[str, Any]:
    """Versions in ``bench_users_versions`` and the bytes each takes (table and indexes)."""
    engine = sa.create_engine(database.normalize_url(database_url))
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT count(*) FROM bench_users_versions")).scalar_one()
        if engine.dialect.name == "postgresql":
            size = connection.execute(sa.text("SELECT pg_total_relation_size('bench_users_versions')")).scalar_one()
        else:
            size = connection.execute(sa.text(
                "SELECT sum(pgsize) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'bench_users_versions')"
            )).scalar_one()
    engine.dispose()
    return {"versions": versions, "bytes": size, "bytes_per_version": round(size / versions) if versions else None}


def history_compare(emu: Emulator, workdir: Path, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Initial and incremental passes without and with history, each round into two fresh databases side by side,
    the passes into them alternating (a load swing of the shared machine then hits both alike)."""
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for rep in range(args.repeat):
        order = (False, True) if rep % 2 == 0 else (True, False)
        urls = {with_history: fresh_database(kind, workdir, args.postgres) for with_history in order}
        try:
            specs = {}
            for with_history, database_url in urls.items():
                assert database_url is not None
                specs[with_history] = write_spec(workdir, emu.info_file, database_url, history=with_history)
                prepare(specs[with_history])
            one: dict[bool, dict[str, Any]] = {}
            for with_history in order:
                log(f"{kind} round {rep + 1}: initial pass, history={with_history}")
                one[with_history] = syncer_pass(specs[with_history])
            passes: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            # The same users each time: both databases follow one Graph, so each pass then reads the same 1,000.
            ids = user_ids(emu, args.changes)
            for i in range(args.incremental_repeat):
                for with_history in order if i % 2 == 0 else order[::-1]:
                    log(f"{kind} round {rep + 1}: {args.changes} changes, history={with_history}")
                    done = incremental(emu, specs[with_history], args.changes, tag=f" {uuid.uuid4().hex[:6]}", ids=ids)
                    if done["items"] != args.changes:
                        raise RuntimeError(f"an incremental pass read {done['items']} items, not {args.changes}")
                    passes[with_history].append(done)
            for with_history, each in passes.items():
                one[with_history]["incremental"] = {
                    **each[0], "seconds": median(p["seconds"] for p in each), "cpu_s": median(p["cpu_s"] for p in each),
                    "items_per_s": median(p["items_per_s"] for p in each),
                }
                runs[with_history].append(one[with_history])
            one[True]["history"] = history_size(str(urls[True]))
        finally:
            for database_url in urls.values():
                drop_database(str(database_url))

    def rate(with_history: bool, key: str | None = None) -> float:
        return float(median([(r[key] if key else r)["items_per_s"] for r in runs[with_history]]))

    def cpu(with_history: bool, key: str | None = None) -> float:
        return float(median([(r[key] if key else r)["cpu_s"] for r in runs[with_history]]))
    return {
        "initial_items_per_s": {"without": rate(False), "with": rate(True)},
        "initial_ratio": round(rate(True) / rate(False), 2),
        "incremental_items_per_s": {"without": rate(False, "incremental"), "with": rate(True, "incremental")},
        "incremental_ratio": round(rate(True, "incremental") / rate(False, "incremental"), 2),
        # The same ratios from this process's CPU time (medians): steadier on a loaded machine; on PostgreSQL
        # they leave the server's own work out.
        "initial_cpu_ratio": round(cpu(False) / cpu(True), 2),
        "incremental_cpu_ratio": round(cpu(False, "incremental") / cpu(True, "incremental"), 2),
        "history_table": runs[True][-1]["history"],
        "runs": runs[True] + runs[False],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="users for the RSS comparison (0: skip)")
    parser.add_argument("--postgres", default=os.environ.get("SYNCER_TEST_DATABASE_URL"))
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="measure one database only")
    parser.add_argument("--repeat", type=int, default=3, help="initial passes per database, each after its own ceiling")
    parser.add_argument("--rss-child")
    parser.add_argument("--history", action="store_true", help="compare passes with and without history: true")
    parser.add_argument("--incremental-repeat", type=int, default=5, help="with --history: incremental passes per round")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    emu = Emulator(workdir)
    figures: dict[str, Any] = {"users": args.users, "page_size": PAGE_SIZE}
    try:
        emu.reset_and_seed(args.users)
        if args.history:
            for kind in ("sqlite", "postgres"):
                if (args.only and kind != args.only) or (kind == "postgres" and args.postgres is None):
                    continue
                figures[f"history_{kind}"] = history_compare(emu, workdir, args, kind)
            print(json.dumps(figures))
            return
        select = ",".join(["id", *[c if not c.startswith("{") else c.split("field: ")[1].split(",")[0] for c in COLUMNS]])
        url = f"users/delta?$select={select}"
        ceilings: list[dict[str, Any]] = []
        for kind in ("sqlite", "postgres"):
            if args.only and kind != args.only:
                continue
            if args.postgres is None and kind == "postgres":
                figures[f"syncer_{kind}"] = "skipped: no --postgres / SYNCER_TEST_DATABASE_URL"
                continue
            # On a shared, noisy machine a ratio only means something between neighbours: each pass
            # is paired with a ceiling measured just before it, and medians are reported.
            passes: list[dict[str, Any]] = []
            for rep in range(args.repeat):
                log(f"ceiling (fetch + parse), {kind} round {rep + 1}/{args.repeat}")
                ceilings.append(ceiling(emu, url))
                database_url = fresh_database(kind, workdir, args.postgres)
                assert database_url is not None
                try:
                    spec_path = write_spec(workdir, emu.info_file, database_url)
                    prepare(spec_path)
                    log(f"syncer initial pass into {kind}")
                    one = syncer_pass(spec_path)
                    one["of_ceiling"] = round(one["items_per_s"] / ceilings[-1]["items_per_s"], 2)
                    passes.append(one)
                    if rep == 0:
                        log(f"syncer incremental pass ({args.changes} changes) into {kind}")
                        figures[f"incremental_{kind}"] = incremental(emu, spec_path, args.changes)
                finally:
                    drop_database(database_url)
            figures[f"syncer_{kind}"] = {
                **passes[0],
                "items_per_s": median([p["items_per_s"] for p in passes]),
                "seconds": median([p["seconds"] for p in passes]),
                "of_ceiling": median([p["of_ceiling"] for p in passes]),
                "runs_items_per_s": [p["items_per_s"] for p in passes],
                "runs_of_ceiling": [p["of_ceiling"] for p in passes],
            }
            if not args.skip_dlt:
                database_url = fresh_database(kind, workdir, args.postgres)
                assert database_url is not None
                try:
                    log(f"dlt into {kind}")
                    figures[f"dlt_{kind}"] = dlt_load(emu, url, database_url, kind, workdir)
                except ImportError as error:
                    figures[f"dlt_{kind}"] = f"skipped: {error}"
                finally:
                    drop_database(database_url)
        if ceilings:
            figures["ceiling"] = {
                **ceilings[0], "items_per_s": median([c["items_per_s"] for c in ceilings]),
                "runs_items_per_s": [c["items_per_s"] for c in ceilings],
            }
        for kind in ("sqlite", "postgres"):
            ours = figures.get(f"syncer_{kind}")
            if isinstance(ours, dict):
                theirs = figures.get(f"dlt_{kind}")
                if isinstance(theirs, dict) and theirs.get("items_per_s"):
                    ours["vs_dlt"] = round(ours["items_per_s"] / theirs["items_per_s"], 1)
        if args.large:
            log(f"peak RSS: {args.users} users")
            small = rss(emu, workdir, args.users)
            log(f"peak RSS: {args.large} users")
            large = rss(emu, workdir, args.large)
            figures["rss"] = {
                "small": small, "large": large,
                "large_over_small": round(large["peak_rss_kib"] / small["peak_rss_kib"], 2),
            }
    finally:
        emu.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
