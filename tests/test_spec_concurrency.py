"""``concurrency`` in subscriptions.yaml: defaults, per tenant, validation with line and field, and the overrides.

One number per tenant: how many Graph requests a process holds in flight for it, sync passes and reconcile
together (docs/spec.md, ``defaults.concurrency``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from emulator_fixtures import spec_yaml
from test_spec import ENV, HEADER, at, load, problem

from syncer.errors import ConfigError
from syncer.graph import limits
from syncer.spec import DEFAULT_CONCURRENCY, load_spec

SUBS = "  - {name: all-users, resource: /users}\n"

TWO_TENANTS = """\
version: 1
graph: {cloud: global}
defaults:
  concurrency: 24
tenants:
  - name: contoso
    tenant_id: 84bd8158-6d4d-4958-8b9f-9d6445542f95
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    client_secret: {env: SYNCER_SECRET}
  - name: fabrikam
    tenant_id: 0a4c2b9e-8d1f-4f6a-9c3e-1b2d3e4f5a6b
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    client_secret: {env: SYNCER_SECRET}
    concurrency: 6
subscriptions:
  - {name: a, tenant: contoso, resource: /users}
  - {name: b, tenant: fabrikam, resource: /groups}
"""


def test_without_a_word_every_tenant_gets_the_documented_default(tmp_path: Path) -> None:
    spec = load(tmp_path, SUBS)
    assert DEFAULT_CONCURRENCY == 16
    assert spec.tenant("contoso").concurrency == 16


def test_defaults_concurrency_applies_to_each_tenant_and_a_tenant_may_set_its_own(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(TWO_TENANTS)
    spec = load_spec(path, environ=ENV)
    assert spec.tenant("contoso").concurrency == 24
    assert spec.tenant("fabrikam").concurrency == 6


def test_defaults_concurrency_reaches_the_emulator_tenant(tmp_path: Path) -> None:
    info = tmp_path / "emulator.json"
    path = tmp_path / "subscriptions.yaml"
    path.write_text(f"version: 1\ngraph: {{cloud: emulator, emulator_info: {info}}}\n"
                    f"defaults: {{concurrency: 40}}\nsubscriptions:\n{SUBS}")
    assert load_spec(path, environ={}).tenants[0].concurrency == 40


@pytest.mark.parametrize("value, found", [("0", "0"), ("1001", "1001"), ("lots", "'lots'"), ("2.5", "2.5 (a number)")])
def test_a_bad_defaults_concurrency_names_its_line_and_field(tmp_path: Path, value: str, found: str) -> None:
    error = problem(tmp_path, SUBS + f"defaults:\n  concurrency: {value}\n")
    at(error, 11, "defaults.concurrency")
    assert error.expected == "an integer from 1 to 1000" and error.found == found


def test_a_bad_tenant_concurrency_names_its_line_and_field(tmp_path: Path) -> None:
    header = HEADER.replace("    client_secret: {env: SYNCER_SECRET}\n",
                            "    client_secret: {env: SYNCER_SECRET}\n    concurrency: -3\n")
    error = problem(tmp_path, SUBS, header=header)
    at(error, 8, "tenants[0].concurrency")


def test_concurrency_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    # Tuning it must not make running workers stop for a spec that declares the same things.
    plain = load(tmp_path, SUBS)
    tuned = load(tmp_path, SUBS + "defaults: {concurrency: 64}\n")
    assert plain.fingerprint == tuned.fingerprint


def test_the_command_line_overrides_every_tenant(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(TWO_TENANTS)
    spec = load_spec(path, environ=ENV).with_concurrency(50)
    assert [t.concurrency for t in spec.tenants] == [50, 50]
    assert load_spec(path, environ=ENV).with_concurrency(None).tenant("fabrikam").concurrency == 6
    with pytest.raises(ConfigError):
        spec.with_concurrency(0)


def test_clients_built_from_the_spec_share_the_tenant_budget(emulator_info: dict[str, Any], tmp_path: Path) -> None:
    """Reconcile's clients (graphs_for) and the worker's (clients_for) of one spec draw on one budget per tenant."""
    from syncer.reconcile import graphs_for
    from syncer.worker.scheduler import clients_for

    text = spec_yaml(emulator_info, database_url=f"sqlite:///{tmp_path / 'x.db'}", secret_env="SECRET",
                     notification_url="https://hooks.example.com/n", lifecycle_url="https://hooks.example.com/l",
                     subscriptions=SUBS) + "defaults: {concurrency: 12}\n"
    path = tmp_path / "subscriptions.yaml"
    path.write_text(text)
    spec = load_spec(path, environ={"SECRET": emulator_info["client_secret"]})
    reconciling = next(iter(graphs_for(spec).values()))
    syncing = next(iter(clients_for(spec).values()))
    assert reconciling.max_in_flight_per_tenant == syncing.max_in_flight_per_tenant == 12
    assert reconciling.budget is syncing.budget is limits.tenant_semaphore(spec.tenants[0].tenant_id, 12)
