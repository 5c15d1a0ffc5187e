"""``syncer ui``: a read-only status page over the database, for people (``syncer status`` is for
terminals and monitoring).

What it shows comes from :func:`syncer.status.collect` (the same data, so the page and ``syncer
status --output json`` agree), :mod:`syncer.ui.history` (the last 24 hours) and the mirror tables
themselves (columns, latest rows, a row's ``_raw``). Server-rendered Flask templates: no JavaScript,
no build step, nothing fetched from the internet. Read-only twice over: it issues only SELECTs,
and its connections are read-only (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite ``query_only``).
"""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, abort, render_template, request
from sqlalchemy.engine import Engine

from syncer.mirror import tables_for
from syncer.spec import Spec
from syncer.status import collect, human, needing_attention, to_json
from syncer.ui import charts, history

LATEST_ROWS = 50
SCOPES_SHOWN = 200


def read_only(engine: Engine) -> Engine:
    """Make every connection of *engine* refuse writes, whatever a bug in a view might try."""
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _query_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

    else:

        @sa.event.listens_for(engine, "begin")
        def _read_only(connection: sa.Connection) -> None:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def create_app(engine: Engine, spec: Spec, *, token: str | None = None) -> Flask:
    """The status page's WSGI app. With *token*, every request must carry it (``Authorization:
    Bearer TOKEN``, or basic auth with TOKEN as the password: what a browser prompts for)."""
    app = Flask(__name__)
    read_only(engine)
    intervals = {sub.name: sub.sync_interval for sub in spec.subscriptions}
    known_tables = {t.name: t for sub in spec.subscriptions for t in tables_for(sub)}

    @app.before_request
    def _authorize() -> Response | None:
        if token is None or request.path == "/healthz":
            return None
        presented = _presented(request.headers.get("Authorization", ""))
        if presented is not None and hmac.compare_digest(presented.encode(), token.encode()):
            return None
        return Response("a token is required\n", 401, {"WWW-Authenticate": 'Basic realm="syncer"'})

    @app.get("/healthz")
    def healthz() -> str:
        return "ok\n"

    @app.get("/")
    def index() -> str:
        found = collect(engine, intervals=intervals)
        with engine.connect() as connection:
            series = history.collect(connection, found.now)
        fresh = history.freshness_histogram(sc.freshness for sc in found.scopes)
        chart_svgs = [
            (s.title, s.name, s.total, charts.bar_chart(s.name, _hour_labels(s.hours), s.values))
            for s in series
        ]
        chart_svgs.append(
            (
                "Scopes by freshness",
                "freshness",
                len(found.scopes),
                charts.bar_chart("freshness", [label for label, _ in fresh], [n for _, n in fresh], color="#3a8f5c"),
            )
        )
        attention = needing_attention(found)
        return render_template(
            "index.html",
            status=found,
            human=human,
            charts=chart_svgs,
            attention=attention[:SCOPES_SHOWN],
            attention_total=len(attention),
            expiring=sorted(found.subscriptions, key=lambda sub: sub.expires_at)[:20],
            tables=sorted(known_tables),
        )

    @app.get("/api/status")
    def api_status() -> Response:
        found = collect(engine, intervals=intervals)
        return Response(json.dumps(to_json(found)), mimetype="application/json")

    @app.get("/tables")
    def tables() -> str:
        existing = set(sa.inspect(engine).get_table_names())
        return render_template("tables.html", tables=[(name, name in existing) for name in sorted(known_tables)])

    @app.get("/tables/<name>")
    def table(name: str) -> str:
        t = _reflect(engine, known_tables, name)
        order = t.c._synced_at.desc() if "_synced_at" in t.c else next(iter(t.primary_key.columns))
        with engine.connect() as connection:
            rows = connection.execute(sa.select(t).order_by(order).limit(LATEST_ROWS)).mappings().all()
            count = connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
        shown = [c.name for c in t.columns if c.name != "_raw"]
        return render_template(
            "table.html", name=name, columns=t.columns, shown=shown, rows=rows, count=count, has_raw="_raw" in t.c,
            keys=[c.name for c in t.primary_key.columns],
        )

    @app.get("/tables/<name>/row")
    def row(name: str) -> str:
        t = _reflect(engine, known_tables, name)
        keys = [c.name for c in t.primary_key.columns]
        if any(k not in request.args for k in keys):
            abort(400, f"give {', '.join(keys)}")
        with engine.connect() as connection:
            found = (
                connection.execute(sa.select(t).where(*(t.c[k] == request.args[k] for k in keys))).mappings().first()
            )
        if found is None:
            abort(404)
        raw = found.get("_raw")
        if isinstance(raw, str):
            raw = json.loads(raw)
        return render_template(
            "row.html", name=name, row=found, raw=json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False)
        )

    @app.context_processor
    def _now() -> dict[str, Any]:
        return {"generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), "spec_path": str(spec.path)}

    return app


def _hour_labels(hours: list[datetime]) -> list[str]:
    """Tooltips name each hour (UTC); the axis ends read "24h ago" and "now"."""
    labels = [h.strftime("%H:00Z") for h in hours]
    if labels:
        labels[0], labels[-1] = f"{len(hours)}h ago ({labels[0]})", f"now ({labels[-1]})"
    return labels


def _presented(header: str) -> str | None:
    """The token an ``Authorization`` header carries (Bearer, or basic auth's password)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def _reflect(engine: Engine, known: dict[str, sa.Table], name: str) -> sa.Table:
    """A mirror table as it is in the database; 404 for a name the spec does not declare (the page
    never reads syncer's own tables, whose secrets, e.g. client states, are not for a browser)."""
    if name not in known:
        abort(404)
    try:
        return sa.Table(name, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError:
        abort(404)
