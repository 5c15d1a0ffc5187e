"""``syncer ui``: the read-only status page, through Flask's test client and in a real browser.

The browser test drives Debian's chromium through chromium-driver (selenium) against a running
worker and the emulator, compares the page's figures with ``syncer status --output json`` and
looks at the screenshot it takes. It is skipped, saying why, where no browser is installed
(`.ci/run` installs one).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, SyncEnv, make_env
from test_worker import GROUPS_SPEC, record_subscription
from werkzeug.serving import make_server

from syncer import database, status
from syncer.cli import main
from syncer.ui import create_app
from syncer.worker import sync
from syncer.worker.scheduler import Schedule, run_worker

TOKEN = "s3cret-token"


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft") + GROUPS_SPEC)


def _mirrored(env: SyncEnv, users: int = 6) -> None:
    env.graph.admin("POST", "seed", json={"users": users})
    record_subscription(env, "sub-users", "users", "users")
    assert sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1").outcome == "ok"
    env.graph.admin("POST", "faults", json={"type": "status", "status": 429, "path": "/groups/delta", "retryAfter": 900, "count": 10})
    assert sync.sync_scope(env.engine, env.client, env.scope("groups"), worker="w1").outcome == "throttled"
    env.graph.admin("DELETE", "faults")


def test_the_page_shows_what_status_knows_and_browses_the_mirror(env: SyncEnv) -> None:
    _mirrored(env)
    engine = database.create_engine(env.spec.database_url)
    client = create_app(engine, env.spec).test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="scopes-total" data-value="2"' in page and 'id="attention-total" data-value="1"' in page
    assert 'data-declaration="users"' in page and 'data-series="rows" data-total="6"' in page
    assert 'data-series="throttled" data-total="1"' in page and "429" in page  # the throttled scope's error
    api = client.get("/api/status").get_json()
    assert {d["name"] for d in api["declarations"]} == {"users", "groups"}

    listing = client.get("/tables/users").get_data(as_text=True)
    assert 'id="row-count" data-value="6"' in listing and "displayName" not in listing.split("Columns:")[0]
    user_id, user = next(iter(env.rows("users").items()))
    row = client.get("/tables/users/row", query_string={"tenant_id": env.tenant_id, "id": user_id})
    assert row.status_code == 200 and user["raw"]["displayName"] in row.get_data(as_text=True)
    # Only the spec's mirror tables: syncer's own (client states are secrets) are not browsable.
    assert client.get("/tables/syncer_subscriptions").status_code == 404
    assert client.get("/tables/users/row", query_string={"id": "x"}).status_code == 400
    engine.dispose()


def test_the_page_is_read_only_and_asks_for_its_token(env: SyncEnv) -> None:
    _mirrored(env, users=2)
    engine = database.create_engine(env.spec.database_url)
    client = create_app(engine, env.spec, token=TOKEN).test_client()
    assert client.get("/").status_code == 401 and "Basic" in client.get("/").headers["WWW-Authenticate"]
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert client.get("/tables", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as connection:  # its connections refuse writes
        connection.execute(sa.text("DELETE FROM users"))
    assert len(env.rows("users")) == 2
    engine.dispose()
    refused = CliRunner().invoke(main, ["ui", "--spec", str(env.spec.path), "--host", "0.0.0.0"], env={"SYNCER_UI_TOKEN": ""})
    assert refused.exit_code == 2 and "not loopback: give a token" in refused.stderr


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no browser: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.mark.timeout(120)
def test_a_browser_shows_the_figures_of_syncer_status_and_a_chart(env: SyncEnv, tmp_path: Path) -> None:
    chromium, driver_path = _browser()
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    env.graph.admin("POST", "seed", json={"users": 12})
    running = run_worker(env.spec, schedule=Schedule(drain=0.2, safety_net=1.0, reconcile=3600), blocking=False,
                         worker_id="ui-worker")
    engine = database.create_engine(env.spec.database_url)
    server = make_server("127.0.0.1", 0, create_app(engine, env.spec), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # both scopes mirrored once
            scopes = status.collect(env.engine, count_rows=False).scopes
            if len(env.rows("users")) == 12 and len(scopes) == 2 and all(sc.last_success for sc in scopes):
                break
            time.sleep(0.2)
        running.stop()  # a quiet database: the page and the command must see the same figures
        expected = json.loads(
            CliRunner().invoke(main, ["status", "--spec", str(env.spec.path), "--output", "json"]).stdout
        )
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        assert browser.title == "syncer status"

        def figure(element_id: str) -> int:
            return int(browser.find_element(By.ID, element_id).get_attribute("data-value") or -1)

        assert figure("scopes-total") == len(expected["scopes"]) == 2
        assert figure("subscriptions-total") == len(expected["subscriptions"])
        assert figure("inbox-waiting") == expected["inbox_waiting"]
        for declared in expected["declarations"]:
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-declaration="{declared["name"]}"]')
            for field in ("scopes", "healthy", "stale", "failing", "new", "rows"):
                cell = row.find_element(By.CSS_SELECTOR, f'td[data-field="{field}"]').text
                assert cell == str(declared[field]), (declared["name"], field, cell)
        rows_chart = browser.find_element(By.ID, "chart-rows")
        heights = [float(bar.get_attribute("height") or 0) for bar in rows_chart.find_elements(By.CSS_SELECTOR, "rect.bar")]
        assert len(heights) == 24 and max(heights) > 0

        shot = tmp_path / "status.png"
        rows_chart.screenshot(str(shot))
        with Image.open(shot) as image:
            data = image.convert("RGB").tobytes()
        bar_pixels = sum(
            1 for i in range(0, len(data), 3)
            if abs(data[i] - 0x2F) < 24 and abs(data[i + 1] - 0x6F) < 24 and abs(data[i + 2] - 0xB0) < 24
        )
        assert bar_pixels > 50, f"the chart drew no bar ({bar_pixels} bar-coloured pixels in {shot})"
        browser.save_screenshot(str(tmp_path / "page.png"))
        if (keep := os.environ.get("SYNCER_UI_SCREENSHOT")) and "sqlite" in env.spec.database_url:
            shutil.copy(tmp_path / "page.png", keep)  # how docs/status-page.png is made

        # The mirror browser: a table, then one row's _raw as Graph sent it.
        browser.find_element(By.LINK_TEXT, "users").click()
        assert browser.find_element(By.ID, "row-count").get_attribute("data-value") == "12"
        browser.find_elements(By.CSS_SELECTOR, "a.raw")[0].click()
        raw = json.loads(browser.find_element(By.ID, "raw").text)
        assert raw["id"] and "displayName" in raw
    finally:
        browser.quit()
        running.stop()
        server.shutdown()
        engine.dispose()
