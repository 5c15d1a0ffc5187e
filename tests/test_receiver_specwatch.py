"""Issue 18: a receiver started before an edited spec was applied takes its new keys (syncer.receiver.specwatch)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from emulator_fixtures import spec_yaml
from notification_builders import rsa_key

from syncer import database, schema
from syncer.cli import main

SECRET_ENV = "SPECWATCH_TEST_SECRET"


def write_keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A private key and its self-signed certificate (PEM files), as an operator would deploy them."""
    key = rsa_key(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"syncer {name}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )
    key_file, cert_file = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def mail_spec(graph: Any, database_url: str, url: str, user: str, cert_id: str, key: Path, cert: Path) -> str:
    return spec_yaml(graph.info, database_url=database_url, notification_url=f"{url}/notifications",
                     lifecycle_url=f"{url}/lifecycle", secret_env=SECRET_ENV, subscriptions=f"""
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created]
    for_each: {{users: [{user}]}}
    include_resource_data: true
    encryption: {{certificate: "{cert}", private_key: {{file: "{key}"}}, id: {cert_id}}}
    mirror: {{table: mail, columns: [subject]}}
""")


def test_a_running_receiver_takes_the_keys_of_a_newly_applied_spec(graph: Any, database_url: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    user = graph.create_user("rita")["id"]
    spec = tmp_path / "subscriptions.yaml"
    env = {**os.environ, SECRET_ENV: graph.info["client_secret"], "SYNCER_RECEIVER_SPEC_CHECK": "0.3"}
    runner = CliRunner()
    spec.write_text(mail_spec(graph, database_url, url, user, "cert-a", *write_keys(tmp_path, "cert-a")))
    assert runner.invoke(main, ["db", "upgrade", "--spec", str(spec)], env=env).exit_code == 0

    proc = subprocess.Popen([sys.executable, "-m", "syncer", "serve", "--spec", str(spec), "--bind", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    engine = database.create_engine(database_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "syncer serve did not come up"
            time.sleep(0.1)
        # The certificate is rotated: a new key, applied (db upgrade, reconcile) while the receiver runs.
        spec.write_text(mail_spec(graph, database_url, url, user, "cert-b", *write_keys(tmp_path, "cert-b")))
        upgraded = runner.invoke(main, ["db", "upgrade", "--spec", str(spec)], env=env)
        assert upgraded.exit_code == 0, upgraded.output
        time.sleep(1.5)  # a few checks of the applied fingerprint
        reconciled = runner.invoke(main, ["reconcile", "--spec", str(spec)], env=env)
        assert reconciled.exit_code == 0, reconciled.output
        assert graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "after rotation"}).status_code == 201
        deadline = time.monotonic() + 15
        while True:
            with engine.connect() as connection:
                rows = connection.execute(sa.select(schema.inbox.c.payload)).scalars().all()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        engine.dispose()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert [r["decryptedContent"]["subject"] for r in rows] == ["after rotation"], output
    assert "decryption keys and app ids reloaded" in output, output
