"""The deployment examples in deploy/ parse, and every command they run exists with the flags they pass.

systemd units are read section by section (configparser semantics, repeated keys allowed as systemd
does) and their ExecStart lines split like a shell; the Kubernetes manifest is read with PyYAML.
Each ``syncer ...`` command line is then resolved through the real click command tree, so renaming
a command or an option breaks this test instead of a deployment. The probe paths are served by the
receiver, and `syncer worker` leaves cleanly on the SIGTERM both systemd and Kubernetes send.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
import yaml

from syncer import database, schema
from syncer.cli import main
from syncer.emulator import EmulatorServer
from syncer.migrate import upgrade_core

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def check_syncer_command(argv: list[str]) -> click.Command:
    """Resolve ``syncer ARGS...`` through the CLI; AssertionError naming what does not exist."""
    assert Path(argv[0]).name == "syncer", argv
    command: click.Command = main
    args = argv[1:]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"{argv}: no command {name!r}"
        command = command.commands[name]
    assert not isinstance(command, click.Group), f"{argv}: {command.name} needs a subcommand"
    options = {opt: param for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    position = 0
    while position < len(args):
        token = args[position]
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            assert name in options, f"{argv}: {command.name} has no option {name}"
            param = options[name]
            if isinstance(param, click.Option) and not param.is_flag and "=" not in token:
                position += 1
                assert position < len(args), f"{argv}: {name} needs a value"
        position += 1
    return command


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat); AssertionError on a malformed line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep and key.strip() and key.strip().replace("-", "").isalnum(), f"{path.name}:{number}: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_there_are_examples() -> None:
    names = {p.name for p in UNITS}
    assert {"syncer-receiver.service", "syncer-worker@.service", "syncer-migrate.service"} <= names
    assert MANIFESTS


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit(unit: Path) -> None:
    sections = read_unit(unit)
    assert {"Unit", "Service", "Install"} <= set(sections), sections.keys()
    service = sections["Service"]
    assert service.get("Type", ["simple"])[0] in {"simple", "oneshot", "exec", "notify"}
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].startswith("/"), "systemd needs an absolute path"
    check_syncer_command(argv)
    assert service.get("EnvironmentFile") == ["/etc/syncer/syncer.env"]
    if service.get("Type", ["simple"])[0] != "oneshot":
        assert service.get("Restart") == ["always"]
        assert "syncer-migrate.service" in " ".join(sections["Unit"].get("After", []))
    assert sections["Install"].get("WantedBy") == ["multi-user.target"]


def test_env_example_names_what_the_commands_read() -> None:
    text = (DEPLOY / "systemd" / "syncer.env.example").read_text()
    names = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert {"SYNCER_SPEC", "SYNCER_DATABASE_URL", "SYNCER_CLIENT_SECRET"} <= names


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest(manifest: Path) -> None:
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    assert {"Deployment", "StatefulSet", "Service", "Ingress", "Job", "ConfigMap"} <= set(kinds)
    for document in documents:
        assert document.get("apiVersion") and document.get("metadata", {}).get("name"), document
        for container in containers(document):
            check_syncer_command(container["command"])
    # The spec in the ConfigMap is a valid spec.
    spec_text = kinds["ConfigMap"]["data"]["subscriptions.yaml"]
    from syncer.spec import parse_spec

    parse_spec(spec_text, path=Path("subscriptions.yaml"),
               environ={"SYNCER_DATABASE_URL": "postgresql://x@db/syncer", "SYNCER_CLIENT_SECRET": "s"})
    # The receiver's probes are on the port it binds, on paths it serves.
    receiver = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    bind = receiver["command"][receiver["command"].index("--bind") + 1]
    port = int(bind.rsplit(":", 1)[1])
    assert receiver["ports"][0]["containerPort"] == port
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The Ingress serves the paths the spec's URLs name.
    paths = {p["path"] for rule in kinds["Ingress"]["spec"]["rules"] for p in rule["http"]["paths"]}
    assert {"/notifications", "/lifecycle"} <= paths
    # The edge refuses what the receiver would (issue 12): its body cap, and whole bodies forwarded.
    from syncer.receiver.receive import ReceiverSettings

    annotations = kinds["Ingress"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{ReceiverSettings.max_body_bytes >> 20}m"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    env = {e["name"]: e["value"] for e in receiver["env"] if "value" in e}
    assert int(env["SYNCER_RECEIVER_MAX_BODY"]) == ReceiverSettings.max_body_bytes
    # Workers have stable ids (the pod name), the resumption after a kill depends on it.
    worker = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"][worker["command"].index("--worker-id") + 1] == "$(POD_NAME)"


def test_probe_paths_are_served(sqlite_url: str) -> None:
    from syncer.receiver.app import create_app

    upgrade_core(sqlite_url)
    engine = database.create_engine(sqlite_url)
    app = create_app(engine)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and b"syncer_" in metrics.data
    finally:
        app.extensions["syncer.receiver.app"].close()
        engine.dispose()


def test_worker_stops_cleanly_on_sigterm(tmp_path: Path, emulator: EmulatorServer) -> None:
    info = tmp_path / "emulator.json"
    emulator.write_info(info)
    db = tmp_path / "worker.db"
    env = {**os.environ, "SYNCER_EMULATOR_INFO": str(info), "SYNCER_DATABASE_URL": f"sqlite:///{db}",
           "SYNCER_LOG_LEVEL": "WARNING"}
    spec = str(ROOT / "subscriptions.yaml")
    subprocess.run([sys.executable, "-m", "syncer", "db", "upgrade", "--spec", spec], env=env, check=True,
                   capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "syncer", "worker", "--spec", spec, "--worker-id", "w1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    engine = database.create_engine(f"sqlite:///{db}")
    try:
        deadline = time.monotonic() + 20
        held = False
        while time.monotonic() < deadline and not held and process.poll() is None:
            with engine.connect() as connection:
                held = bool(connection.execute(
                    sa.select(sa.func.count()).select_from(schema.locks).where(schema.locks.c.name == "worker")
                ).scalar_one())
            time.sleep(0.1)
        assert held, "the worker never took its lock"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "Traceback" not in output
        with engine.connect() as connection:
            left = connection.execute(sa.select(sa.func.count()).select_from(schema.locks)).scalar_one()
        assert left == 0, "the SQLite worker lock was not released"
    finally:
        if process.poll() is None:
            process.kill()
        engine.dispose()
