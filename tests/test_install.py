"""The production install, as installed: a fresh venv with only ``.[postgres,server]`` (no test
extras, which would bring along what the production extras forget) serves a notification.

It once did not: gunicorn's gevent worker imports ``packaging``, which gunicorn lists only under its
own ``gevent`` extra, and the test extras installed it anyway (through pytest), so the suite was
green while ``syncer serve`` failed on a production machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import notification_builders as nb
import pytest
import requests
from test_receiver import JSON, SUB, add_subscription, inbox_rows, served

from syncer import database, schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)  # a fresh venv installs every dependency: a minute idle, more on a loaded machine
@pytest.mark.postgres
def test_the_production_install_serves_a_notification_with_gevent(postgres_url: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # Not editable: the installed package must hold every module and data file it needs. Built from
    # a clean copy: setuptools reuses an in-tree build/ folder, whose stale files would hide a
    # package missing from pyproject's list.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*.db*"))
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{source}[postgres,server]"],
        capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert install.returncode == 0, install.stderr[-3000:]
    found = subprocess.run([python, "-c", "import pytest"], capture_output=True, cwd=tmp_path)
    assert found.returncode != 0, "the production extras must not bring the test tools along"
    # Every module of the source tree is in the installed package (a subpackage missing from
    # pyproject's list installs silently and fails at its first import), and the data files with it.
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "syncer").rglob("*.py")
        if path.name != "__main__.py"  # (runs the CLI)
    )
    script = (
        "import importlib, importlib.resources as r, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "assert r.files('syncer.ui').joinpath('templates/index.html').is_file()\n"
        "assert r.files('syncer.migrations.versions').joinpath('0001_core_tables.py').is_file()\n"
    )
    imported = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]

    engine = database.create_engine(postgres_url)
    try:
        schema.metadata.create_all(engine)
        add_subscription(engine, SUB)
        # PostgreSQL: gevent workers, the class that needed `packaging`.
        with served(postgres_url, python=python, cwd=tmp_path) as (url, output):
            session = requests.Session()
            session.trust_env = False
            answer = session.post(url + "/notifications", data=nb.body(nb.change_item(SUB)), headers=JSON, timeout=10)
            assert answer.status_code == 202, answer.text
        assert "Using worker: gevent" in output[0]
        assert len(inbox_rows(engine)) == 1
    finally:
        engine.dispose()
