"""`syncer doctor` against the emulator: every check passing, and each one failing with its fix."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from emulator_fixtures import EmulatorClient, spec_yaml
from webhook_receiver import Receiver

from syncer.cli import main
from syncer.doctor import FAIL, OK, Check, check_reachable_from_graph, run_checks, satisfies
from syncer.migrate import upgrade_core

SECRET_ENV = "DOCTOR_TEST_SECRET"


DOCTOR_SUBSCRIPTIONS = """  - name: people
    resource: users
    change_types: [updated]
  - name: mail
    resource: users/{user}/messages
    change_types: [created]
    for_each: {users: [someone]}
"""


def spec_text(
    graph: EmulatorClient, receiver: Receiver, database_url: str, *, client_id: str | None = None
) -> str:
    return spec_yaml(
        graph.info, database_url=database_url, notification_url=receiver.url("notifications"),
        lifecycle_url=receiver.url("lifecycle"), subscriptions=DOCTOR_SUBSCRIPTIONS, secret_env=SECRET_ENV,
        client_id=client_id,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(text)
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_everything_passes_on_a_ready_setup(
    graph: EmulatorClient, receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    upgrade_core(database_url)
    path = write(tmp_path, spec_text(graph, receiver, database_url))
    checks = run_checks(path, environ={SECRET_ENV: graph.info["client_secret"]})
    assert [c.status for c in checks] == [OK] * len(checks), [c.line() for c in checks]
    names = [c.name for c in checks]
    assert names == [
        "spec",
        "database",
        "token (main)",
        "permissions (main)",
        "clock (main)",
        "notification URL address",
        "notification URL echo",
        "lifecycle URL address",
        "lifecycle URL echo",
    ]
    assert "echoed in" in by_name(checks)["notification URL echo"].detail
    assert "Mail.Read" in by_name(checks)["permissions (main)"].detail
    # The echo is exactly Graph's handshake: the receiver saw a validationToken, decoded it and answered.
    assert len(receiver.validations) == 2 and receiver.validations[0].token.startswith("doctor ")

    result = CliRunner().invoke(
        main, ["doctor", "--spec", str(path)], env={SECRET_ENV: graph.info["client_secret"]}
    )
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output


def test_each_failure_says_how_to_fix_it(
    graph: EmulatorClient, receiver: Receiver, sqlite_url: str, tmp_path: Path
) -> None:
    # An app that may read users but not mail, a receiver that echoes wrongly, a database never migrated.
    r = graph.admin("POST", "apps", json={"roles": ["User.Read.All"], "secret": "limited-secret"})
    assert r.status_code == 201, r.text
    receiver.handshake = "json"
    path = write(tmp_path, spec_text(graph, receiver, sqlite_url, client_id=r.json()["clientId"]))
    checks = by_name(run_checks(path, environ={SECRET_ENV: "limited-secret"}))

    assert checks["database"].status == FAIL and "syncer db upgrade" in checks["database"].fix
    assert checks["token (main)"].status == OK
    permissions = checks["permissions (main)"]
    assert permissions.status == FAIL and "Mail.Read (for mail)" in permissions.detail
    assert "admin consent" in permissions.fix
    echo = checks["notification URL echo"]
    assert echo.status == FAIL and "text/plain" in echo.detail and "echo" in echo.fix

    result = CliRunner().invoke(main, ["doctor", "--spec", str(path)], env={SECRET_ENV: "limited-secret"})
    assert result.exit_code == 1
    assert "fix: run `syncer db upgrade`" in result.output


def test_a_wrong_secret_and_a_silent_receiver(
    graph: EmulatorClient, receiver: Receiver, sqlite_url: str, tmp_path: Path
) -> None:
    upgrade_core(sqlite_url)
    receiver.handshake, receiver.handshake_delay_s = "slow", 1.5
    path = write(tmp_path, spec_text(graph, receiver, sqlite_url))
    checks = by_name(run_checks(path, environ={SECRET_ENV: "not-the-secret"}, timeout=0.5))
    assert checks["token (main)"].status == FAIL and "secret or certificate" in checks["token (main)"].fix
    assert "permissions (main)" not in checks  # nothing to inspect without a token
    echo = checks["notification URL echo"]
    assert echo.status == FAIL and "no answer within 0.5s" in echo.detail and "receiver running" in echo.fix


def test_a_url_where_nothing_listens_is_not_called_reachable(graph: EmulatorClient, sqlite_url: str, tmp_path: Path) -> None:
    upgrade_core(sqlite_url)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    path = write(tmp_path, spec_yaml(
        graph.info, database_url=sqlite_url, notification_url=f"{dead}/notifications", lifecycle_url=f"{dead}/lifecycle",
        subscriptions=DOCTOR_SUBSCRIPTIONS, secret_env=SECRET_ENV,
    ))
    checks = run_checks(path, environ={SECRET_ENV: graph.info["client_secret"]})
    lines = [c.line() for c in checks]
    assert not any("reachable" in c.name and c.status == OK for c in checks), lines
    echo = by_name(checks)["notification URL echo"]
    assert echo.status == FAIL and f"nothing listens at 127.0.0.1:{port}" in echo.detail, lines
    assert "receiver running" in echo.fix


def test_an_invalid_spec_stops_the_doctor(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nsubscriptions: []\n")
    checks = run_checks(path, environ={})
    assert len(checks) == 1 and checks[0].status == FAIL and "syncer validate" in checks[0].fix


def test_graph_must_be_able_to_reach_the_url() -> None:
    assert check_reachable_from_graph("n", "https://hooks.example.com/n", cloud="global").status == OK
    private = check_reachable_from_graph("n", "https://10.1.2.3/n", cloud="global")
    assert private.status == FAIL and "tunnel" in private.fix
    assert check_reachable_from_graph("n", "http://127.0.0.1:8080/n", cloud="global").status == FAIL
    assert check_reachable_from_graph("n", "http://127.0.0.1:8080/n", cloud="emulator").status == OK


def test_read_write_roles_cover_read() -> None:
    assert satisfies({"Mail.ReadWrite"}, "Mail.Read")
    assert satisfies({"User.ReadWrite.All"}, "User.Read.All")
    assert not satisfies({"User.Read.All"}, "Mail.Read")


def test_an_unreachable_authority_is_not_blamed_on_the_credentials(
    graph: EmulatorClient, receiver: Receiver, sqlite_url: str, tmp_path: Path
) -> None:
    upgrade_core(sqlite_url)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"https://127.0.0.1:{port}"
    info = dict(graph.info, base_url=dead)
    path = write(tmp_path, spec_yaml(
        info, database_url=sqlite_url, notification_url=receiver.url("notifications"),
        lifecycle_url=receiver.url("lifecycle"), subscriptions=DOCTOR_SUBSCRIPTIONS, secret_env=SECRET_ENV,
    ))
    token = by_name(run_checks(path, environ={SECRET_ENV: graph.info["client_secret"]}, timeout=2))["token (main)"]
    assert token.status == FAIL and "cannot be reached" in token.detail, token.line()
    assert dead in token.fix and "secret" not in token.fix, token.line()
