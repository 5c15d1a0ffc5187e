"""One worker, an app-only tenant and a personal account: the account's sessions are revoked and only its work
pauses (named in `syncer status` and `/metrics`, the token endpoint left alone); `syncer login` again and the worker
resumes by itself, recovers the gap by delta and answers the held reauthorizationRequired with the new sign-in.
On SQLite and PostgreSQL, against the emulator over real HTTPS."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from emulator_fixtures import EmulatorClient
from test_delegated_e2e import mirror_matches

from syncer import database, schema, ui
from syncer.cli import main
from syncer.cli.options import EXIT_SIGN_IN_REQUIRED
from syncer.emulator import EmulatorConfig
from syncer.run import Runner
from syncer.spec import Spec, load_spec
from syncer.worker.scheduler import Schedule

PAT = "pat@outlook.com"
CONSUMERS = "9188040d-6c67-4c5b-b112-36a304b66dad"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=1717, personal_users=(PAT,))


@pytest.fixture
def port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_spec(tmp_path: Path, info: dict[str, Any], database_url: str, port: int) -> Path:
    info_file = tmp_path / "emulator.json"
    info_file.write_text(json.dumps(info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(f"""
version: 1
graph: {{cloud: emulator, emulator_info: {info_file}}}
tenants:
  - name: org
  - name: pat
    auth: delegated
    authority: consumers
    account: {PAT}
    token_cache: {tmp_path}/config/pat.json
receiver:
  notification_url: "http://127.0.0.1:{port}/notifications"
database: {{url: "{database_url}"}}
subscriptions:
  - {{name: people, tenant: org, resource: users, change_types: [updated, deleted], mirror: {{table: people, columns: [displayName]}}}}
  - {{name: pat-mail, tenant: pat, resource: me/mailFolders/inbox/messages, mirror: {{table: pat_mail, columns: [subject]}}}}
""")
    return path


def until(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def rows(spec: Spec, table: str, *, live: bool = True) -> int:
    engine = database.create_engine(spec.database_url)
    try:
        with engine.connect() as connection:
            where = " WHERE _deleted_at IS NULL" if live else ""
            return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}{where}")).scalar_one())
    finally:
        engine.dispose()


def test_a_signed_out_account_pauses_alone_and_resumes_after_login(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, port: int
) -> None:
    assert graph.admin("POST", "seed", json={"users": 3}).status_code == 200
    assert graph.admin("POST", "sign-in-as", json={"user": PAT}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, port)
    spec = load_spec(path).resolve_emulator()
    assert (r := cli("login", "pat", "--spec", str(path))).exit_code == 0, r.output

    def add_pat_mail(subject: str) -> None:
        """Pat writes to their own inbox, signed in on another device (sign-in-as approves the device code)."""
        where = f"{emulator_info['base_url']}/consumers/oauth2/v2.0"
        start = graph.session.post(f"{where}/devicecode", data={"client_id": emulator_info["client_id"],
                                                                 "scope": "Mail.ReadWrite"}, timeout=10).json()
        token = graph.session.post(f"{where}/token", data={
            "client_id": emulator_info["client_id"], "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start["device_code"]}, timeout=10).json()["access_token"]
        made = graph.post("me/mailFolders/inbox/messages", json={"subject": subject},
                          headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text

    # `syncer run`: the receiver (notifications into the inbox, /metrics) and one worker for both tenants.
    runner = Runner(spec, port=port, schedule=Schedule(drain=0.2, safety_net=1.0, reconcile=3600),
                    worker_id="two-accounts", echo=lambda _line: None).start()
    worker = runner.worker
    assert worker is not None and runner.app is not None
    metrics = runner.app.test_client()
    engine = database.create_engine(spec.database_url)
    try:
        assert until(lambda: mirror_matches(spec) == []), mirror_matches(spec)
        people, mail = rows(spec, "people"), rows(spec, "pat_mail")
        assert people >= 3 and mail >= 3

        # Pat's sessions are revoked; the issued tokens expire with the clock (docs/emulator-identity.md).
        assert graph.admin("POST", f"users/{PAT}/revoke-sessions", json={"tenantId": CONSUMERS}).status_code == 200
        add_pat_mail("while signed out")
        assert graph.admin("POST", "clock", json={"advance": 2 * 3600}).status_code == 200
        graph._token = None
        pat_tenant = spec.tenant("pat").tenant_id
        assert worker.accounts is not None
        # The safety net's passes refresh pat's token: refused, pat is paused.
        assert until(lambda: pat_tenant in worker.accounts.paused), "pat was not paused"  # type: ignore[union-attr]

        # The app tenant goes on: a new user is mirrored while pat is paused.
        graph.create_user("newcomer")
        assert until(lambda: rows(spec, "people") == people + 1), "the other tenant stopped too"
        assert rows(spec, "pat_mail") == mail, "pat's scope ran while signed out"

        # Named in status (exit 4) and /metrics; no retry storm at the token endpoint.
        status = cli("status", "--spec", str(path), "--no-rows")
        assert status.exit_code == EXIT_SIGN_IN_REQUIRED, status.output
        assert status.output.startswith(f"sign-in required: {PAT}, run `syncer login pat`"), status.output
        detail = cli("status", "pat-mail", "--spec", str(path), "--no-rows")
        assert "paused: sign-in required" in detail.output, detail.output
        assert f'syncer_sign_in_required{{account="{PAT}",tenant="pat"}} 1' in metrics.get("/metrics").text
        seq = graph.admin("GET", "requests").json()["requests"][-1]["seq"]
        time.sleep(3.0)  # 15 drains, 3 safety nets
        later = graph.admin("GET", "requests", params={"since": seq}).json()["requests"]
        assert [r for r in later if r["path"].endswith("/token")] == [], "a paused account's token was asked for again"

        # A new sign-in: the worker notices the token cache changed, resumes pat and catches up by delta.
        assert (r := cli("login", "pat", "--spec", str(path))).exit_code == 0, r.output
        assert until(lambda: not worker.accounts.paused), "pat did not resume"  # type: ignore[union-attr]
        assert until(lambda: mirror_matches(spec) == []), mirror_matches(spec)
        assert rows(spec, "pat_mail") == mail + 1
        assert cli("status", "--spec", str(path), "--no-rows").exit_code == 0
        assert f'syncer_sign_in_required{{account="{PAT}",tenant="pat"}} 0' in metrics.get("/metrics").text

        # The reauthorizationRequired Graph sent meanwhile waited in the inbox; answered with pat's new sign-in,
        # delivery of pat's changes resumes.
        subs, inbox = schema.subscriptions, schema.inbox
        with engine.connect() as connection:
            sub_id = connection.execute(sa.select(subs.c.subscription_id).where(subs.c.tenant_id == pat_tenant)).scalar_one()

        def processed(kind: str) -> int:
            with engine.connect() as connection:
                return int(connection.execute(sa.select(sa.func.count()).where(
                    inbox.c.subscription_id == sub_id, inbox.c.kind == kind, inbox.c.processed_at.is_not(None))).scalar_one())

        assert until(lambda: processed("lifecycle") >= 1), "the held reauthorizationRequired was not answered"
        add_pat_mail("signed in again")
        assert until(lambda: processed("change") >= 1), "no notification for pat after reauthorize"
        assert until(lambda: mirror_matches(spec) == []), mirror_matches(spec)
        assert rows(spec, "pat_mail") == mail + 2
    finally:
        runner.stop()
        engine.dispose()


def test_an_account_never_signed_in_waits_while_the_rest_runs(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, port: int
) -> None:
    """`syncer run` with a delegated account not signed in yet: the app tenant is reconciled and mirrored, the
    account is named; its `syncer login` later brings its subscription and its mirror without a restart."""
    assert graph.admin("POST", "seed", json={"users": 2}).status_code == 200
    assert graph.admin("POST", "sign-in-as", json={"user": PAT}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, port)
    spec = load_spec(path).resolve_emulator()
    lines: list[str] = []
    runner = Runner(spec, port=port, schedule=Schedule(drain=0.2, safety_net=1.0, reconcile=3600),
                    worker_id="one-signed-out", echo=lines.append).start()
    worker = runner.worker
    assert worker is not None and worker.accounts is not None
    try:
        assert any(f"account {PAT}" in line and "syncer login pat" in line for line in lines), lines
        assert until(lambda: rows(spec, "people") >= 2), "the app tenant was not mirrored"
        pat_tenant = spec.tenant("pat").tenant_id
        assert pat_tenant in worker.accounts.paused and pat_tenant in worker.accounts.unresolved
        status = cli("status", "--spec", str(path), "--no-rows", "--output", "json")
        assert status.exit_code == EXIT_SIGN_IN_REQUIRED and "syncer login pat" in status.stderr, status.output
        assert [s["account"] for s in json.loads(status.stdout)["sign_ins"] if s["required_since"]] == [PAT]
        ui_engine = database.create_engine(spec.database_url)
        try:
            page = ui.create_app(ui_engine, spec).test_client().get("/").text
        finally:
            ui_engine.dispose()
        assert f"sign-in required: {PAT}, run `syncer login pat`</strong>: its scopes are paused" in page
        # `syncer sync` syncs what it can and names the account (exit 4).
        synced = cli("sync", "--spec", str(path))
        assert synced.exit_code == EXIT_SIGN_IN_REQUIRED and "syncer login pat" in synced.output, synced.output
        assert "\nusers: " in "\n" + synced.output, synced.output

        assert (r := cli("login", "pat", "--spec", str(path))).exit_code == 0, r.output
        assert until(lambda: rows(spec, "pat_mail") >= 3), "pat's mail was not mirrored after login"
        assert until(lambda: mirror_matches(spec) == []), mirror_matches(spec)
        assert until(lambda: rows(spec, f"syncer_subscriptions WHERE tenant_id = '{pat_tenant}'", live=False) == 1), \
            "pat's subscription was not created"
    finally:
        runner.stop()
