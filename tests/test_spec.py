"""subscriptions.yaml: the shipped file, the format's defaults, and each kind of bad spec with its exact location."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer import resources
from syncer.errors import ConfigError, SpecError, SpecErrors
from syncer.spec import SecretRef, Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent

# Line numbers below count from this header: subscriptions start on line 9.
HEADER = """\
version: 1
graph: {cloud: global}
tenants:
  - name: contoso
    tenant_id: 84bd8158-6d4d-4958-8b9f-9d6445542f95
    client_id: 5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11
    client_secret: {env: SYNCER_SECRET}
subscriptions:
"""
ENV = {"SYNCER_SECRET": "s3cr3t-value"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, subs: str, *, header: str = HEADER, env: dict[str, str] | None = None) -> Spec:
    return load_spec(write(tmp_path, header + textwrap.dedent(subs)), environ=ENV if env is None else env)


def problems(
    tmp_path: Path, subs: str, *, header: str = HEADER, env: dict[str, str] | None = None
) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, subs, header=header, env=env)
    return caught.value.errors


def problem(tmp_path: Path, subs: str, **kwargs: object) -> SpecError:
    found = problems(tmp_path, subs, **kwargs)  # type: ignore[arg-type]
    assert len(found) == 1, "\n".join(str(e) for e in found)
    return found[0]


def at(error: SpecError, line: int, path: str) -> None:
    assert (error.location.line, error.location.path) == (line, path), str(error)
    assert error.location.file.endswith("subscriptions.yaml")


# --- the shipped file and the defaults ---------------------------------------------------------------


def test_shipped_spec_validates_and_targets_the_emulator() -> None:
    spec = load_spec(ROOT / "subscriptions.yaml", environ={})
    assert spec.graph.cloud == "emulator"
    assert spec.emulator_info == ROOT / ".syncer" / "emulator.json"
    assert {"users", "groups", "inbox"} <= {s.name for s in spec.subscriptions}
    inbox = spec.subscription("inbox")
    assert inbox.resource_type.key == "message"
    assert inbox.fan_out is not None and inbox.fan_out.all_users
    assert inbox.folders == ("inbox",)
    assert inbox.mirror.select == ("id", "subject", "receivedDateTime", "isRead", "from")
    assert spec.database_url == f"sqlite:///{ROOT / 'syncer.db'}"


def test_minimal_spec_gets_documented_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, "  - {name: all-users, resource: /users}\n")
    sub = spec.subscriptions[0]
    assert sub.tenant == "contoso" and sub.line == 9
    assert sub.change_types == ("updated", "deleted")  # all Graph allows for users
    assert sub.lifetime is None and sub.effective_lifetime == timedelta(minutes=41_760)
    assert sub.renew_before == timedelta(hours=1)
    assert sub.sync_interval == timedelta(hours=1)
    assert sub.mirror.table == "all_users" and sub.mirror.delete == "soft" and sub.mirror.columns == ()
    assert spec.graph.graph_url == "https://graph.microsoft.com"
    assert spec.graph.authority_host == "https://login.microsoftonline.com"
    assert spec.receiver.notification_url == "http://127.0.0.1:8080/notifications"
    assert spec.receiver.lifecycle_url == "http://127.0.0.1:8080/lifecycle"
    assert spec.database_url == f"sqlite:///{(tmp_path / 'syncer.db').resolve()}"
    assert spec.tenant("contoso").client_secret == SecretRef(env="SYNCER_SECRET")


def test_columns_types_and_select(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
          - name: mail
            resource: users/alice@contoso.com/messages
            lifetime: PT2H
            renew_before: 30m
            mirror:
              columns:
                - subject
                - receivedDateTime
                - toRecipients
                - {field: from.emailAddress.address, column: sender}
                - {field: importance, type: text}
        """,
    )
    sub = spec.subscriptions[0]
    assert [(c.name, c.type) for c in sub.mirror.columns] == [
        ("subject", "text"),
        ("received_date_time", "datetime"),
        ("to_recipients", "json"),
        ("sender", "text"),
        ("importance", "text"),
    ]
    assert sub.mirror.select == ("id", "subject", "receivedDateTime", "toRecipients", "from", "importance")
    assert sub.lifetime == timedelta(hours=2) and sub.renew_before == timedelta(minutes=30)
    assert sub.folders is None  # the whole mailbox: every folder


def test_rich_outlook_subscription_gets_select_from_the_mirror(tmp_path: Path) -> None:
    (tmp_path / "enc.pem").write_text("cert")
    (tmp_path / "enc.key").write_text("key")
    spec = load(
        tmp_path,
        """\
          - name: rich
            resource: users/{user}/messages
            for_each: {users: [alice@contoso.com, bob@contoso.com]}
            include_resource_data: true
            encryption:
              certificate: enc.pem
              private_key: {file: enc.key}
              id: cert-2026
              previous: {certificate: enc.pem, private_key: {file: enc.key}, id: cert-2025}
            lifetime: max
            mirror: {columns: [subject]}
        """,
    )
    sub = spec.subscriptions[0]
    assert sub.effective_lifetime == timedelta(minutes=1_440)
    assert sub.graph_resource == "users/{user}/messages?$select=id,subject"
    assert sub.encryption is not None and sub.encryption.previous is not None
    assert sub.encryption.private_key.resolve() == "key"
    assert sub.fan_out is not None and sub.fan_out.users == ("alice@contoso.com", "bob@contoso.com")


def test_interpolation_defaults_and_env_secret(tmp_path: Path) -> None:
    header = HEADER.replace("{env: SYNCER_SECRET}", '"${SYNCER_SECRET}"').replace(
        "subscriptions:",
        "database: {url: '${DB_URL:-sqlite:///data/x.db}'}\nreceiver: {port: '${PORT}'}\nsubscriptions:",
    )
    spec = load(tmp_path, "  - {name: u, resource: users}\n", header=header, env={**ENV, "PORT": "9000"})
    assert spec.receiver.port == 9000
    assert spec.database_url.endswith(str(tmp_path.resolve() / "data" / "x.db"))
    secret = spec.tenants[0].client_secret
    assert secret is not None and secret.env == "SYNCER_SECRET"
    assert "s3cr3t" not in repr(spec)


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        """\
          - &base {name: a, resource: users, sync_interval: 15m}
          - <<: *base
            name: b
            resource: users/abc
        """,
    )
    assert [s.sync_interval for s in spec.subscriptions] == [timedelta(minutes=15)] * 2
    assert spec.subscriptions[1].resource == "users/abc"


# --- bad specs: each kind, with its exact location --------------------------------------------------


def test_typo_in_a_key_suggests_the_right_one(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: u\n    resource: users\n    chnage_types: [updated]\n")
    at(error, 11, "subscriptions[0].chnage_types")
    assert error.found == "unknown key 'chnage_types'" and error.hint == "did you mean 'change_types'?"


def test_typo_in_a_top_level_key(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: u, resource: users}\nrecevier: {}\n")
    at(error, 10, "recevier")
    assert "did you mean 'receiver'?" in str(error)


def test_list_where_a_mapping_is_expected(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: u\n    resource: users\n    mirror: [displayName]\n")
    at(error, 11, "subscriptions[0].mirror")
    assert (error.expected, error.found) == ("a mapping", "a list")


def test_mapping_where_a_list_is_expected(tmp_path: Path) -> None:
    error = problem(
        tmp_path, "  - name: u\n    resource: users\n    mirror: {columns: {displayName: text}}\n"
    )
    at(error, 11, "subscriptions[0].mirror.columns")
    assert error.found == "a mapping"


def test_bad_durations(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: a, resource: users, lifetime: 3 days}\n"
        "  - {name: b, resource: groups, sync_interval: 90}\n"
        "  - {name: c, resource: users/x, lifetime: 10m}\n",
    )
    at(errors[0], 9, "subscriptions[0].lifetime")
    assert (
        errors[0].expected.startswith("a duration like 90m, 36h, 2d or PT2H")
        and errors[0].found == "'3 days'"
    )
    at(errors[1], 10, "subscriptions[1].sync_interval")
    assert errors[1].found == "90 (a number without a unit)"
    at(errors[2], 11, "subscriptions[2].lifetime")
    assert errors[2].expected == "at least 45m"


def test_lifetime_over_the_resource_maximum_names_the_maximum(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: m\n    resource: users/a/messages\n    lifetime: 8d\n")
    at(error, 11, "subscriptions[0].lifetime")
    assert error.expected == "at most 7d (10080 minutes), Graph's maximum for message" and error.found == "8d"


def test_lifetime_from_defaults_over_the_maximum_is_reported_on_the_subscription(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: d, resource: drives/b!x/root}\n  - {name: m, resource: users/a/events}\ndefaults: {lifetime: 20d}\n",
    )
    assert len(errors) == 1  # 20d is within the driveItem maximum, over the event one
    at(errors[0], 10, "subscriptions[1].lifetime")
    assert errors[0].hint == "from defaults.lifetime, line 11" and errors[0].found == "20d"


def test_unknown_resource_suggests_a_known_one(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: m, resource: users/abc/mesages}\n")
    at(error, 9, "subscriptions[0].resource")
    assert error.found == "'users/abc/mesages'" and error.hint == "did you mean 'users/{user}/messages'?"


def test_change_type_graph_refuses_for_the_resource(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: u\n    resource: users\n    change_types: [created, updated]\n")
    at(error, 11, "subscriptions[0].change_types[0]")
    assert error.expected == "a change type Graph accepts for user: updated, deleted"
    assert error.found == "'created'" and "soft deletion as updated" in error.hint


def test_misspelt_change_type_in_graphs_comma_form(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: d, resource: drives/b!x/root, change_types: 'updated,craeted'}\n")
    at(error, 9, "subscriptions[0].change_types")
    assert error.found == "'craeted'" and error.hint == "did you mean 'created'?"


def test_literal_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    header = HEADER.replace("{env: SYNCER_SECRET}", "hunter2-literal")
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(error, 7, "tenants[0].client_secret")
    assert error.found == "a literal secret" and error.hint == "use {env: NAME} or {file: PATH}"
    assert "hunter2" not in str(error)


def test_unset_variable_is_named(tmp_path: Path) -> None:
    header = HEADER.replace(
        "subscriptions:", "database:\n  url: postgresql://syncer@${DB_HOST}/syncer\nsubscriptions:"
    )
    errors = problems(tmp_path, "  - {name: u, resource: users}\n", header=header, env={})
    # Two problems: the secret's variable and DB_HOST; both named, each at its line.
    assert [(e.location.line, e.location.path) for e in errors] == [
        (7, "tenants[0].client_secret"),
        (9, "database.url"),
    ]
    assert errors[0].found == "SYNCER_SECRET unset"
    assert (
        errors[1].expected == "environment variable DB_HOST to be set" and errors[1].found == "DB_HOST unset"
    )


def test_duplicate_names_and_tables(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: u, resource: users}\n"
        "  - {name: u, resource: groups}\n"
        "  - {name: g, resource: groups/abc, mirror: {table: u}}\n",
    )
    assert len(errors) == 2  # the repeated name's default table is not reported a second time
    at(errors[0], 10, "subscriptions[1].name")
    assert errors[0].found == "'u' again (first at subscriptions[0])"
    at(errors[1], 11, "subscriptions[2].mirror.table")
    assert (
        errors[1].expected == "a table used by one subscription"
        and errors[1].found == "'u' (also subscriptions[0])"
    )


def test_same_resource_and_change_types_twice_is_a_graph_conflict(tmp_path: Path) -> None:
    errors = problems(tmp_path, "  - {name: a, resource: users}\n  - {name: b, resource: /Users}\n")
    at(errors[0], 10, "subscriptions[1].resource")
    assert "409" in errors[0].hint


def test_bad_urls(tmp_path: Path) -> None:
    header = HEADER.replace(
        "subscriptions:",
        "receiver:\n  notification_url: http://example.com/notify\n  lifecycle_url: ftp://127.0.0.1/x\nsubscriptions:",
    )
    errors = problems(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(errors[0], 9, "receiver.notification_url")
    assert errors[0].expected == "an https:// URL (http:// only on loopback)"
    at(errors[1], 10, "receiver.lifecycle_url")


def test_http_is_accepted_on_loopback_and_sets_the_listening_port(tmp_path: Path) -> None:
    header = HEADER.replace(
        "subscriptions:", "receiver: {notification_url: 'http://localhost:9100/graph/notify'}\nsubscriptions:"
    )
    spec = load(tmp_path, "  - {name: u, resource: users}\n", header=header)
    assert spec.receiver.port == 9100
    assert spec.receiver.lifecycle_url == "http://localhost:9100/graph/lifecycle"


def test_reserved_and_unsafe_sql_names(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        """\
          - name: u
            resource: users
            mirror:
              table: Users-Table
              columns:
                - {field: displayName, column: tenant_id}
                - {field: mail, column: _raw}
                - id
                - {field: jobTitle, type: string}
        """,
    )
    at(errors[0], 12, "subscriptions[0].mirror.table")
    assert errors[0].expected.startswith("a SQL name")
    at(errors[1], 14, "subscriptions[0].mirror.columns[0].column")
    assert errors[1].expected == "a column name syncer does not reserve (tenant_id, id, _*)"
    at(errors[2], 15, "subscriptions[0].mirror.columns[1].column")
    at(errors[3], 16, "subscriptions[0].mirror.columns[2]")
    at(errors[4], 17, "subscriptions[0].mirror.columns[3].type")
    assert errors[4].found == "'string'" and errors[4].expected.startswith("one of text, integer")


def test_a_trailing_newline_is_not_part_of_a_valid_identifier(tmp_path: Path) -> None:
    # Python's "$" matches before a final newline: "users\n" used to pass as a table name.
    errors = problems(
        tmp_path,
        """\
          - name: "u\\n"
            resource: users
            mirror:
              table: "users\\n"
              columns:
                - {field: "mail\\n", column: mail}
                - {field: displayName, column: "name\\n"}
        """,
    )
    assert len(errors) == 4, "\n".join(str(e) for e in errors)
    at(errors[0], 9, "subscriptions[0].name")
    assert errors[0].found == "'u\\n'"
    at(errors[1], 12, "subscriptions[0].mirror.table")
    assert errors[1].expected.startswith("a SQL name") and errors[1].found == "'users\\n'"
    at(errors[2], 14, "subscriptions[0].mirror.columns[0].field")
    at(errors[3], 15, "subscriptions[0].mirror.columns[1].column")


def test_rich_notifications_where_graph_has_none(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: u\n    resource: users\n    include_resource_data: true\n")
    at(error, 11, "subscriptions[0].include_resource_data")
    assert error.expected == "false: Graph has no rich notifications for user"


def test_user_placeholder_needs_for_each_and_the_reverse(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: a, resource: 'users/{user}/events'}\n"
        "  - {name: b, resource: users, for_each: {users: all}}\n"
        "  - {name: c, resource: 'users/{user}/drive/{root}'}\n",
    )
    at(errors[0], 9, "subscriptions[0].resource")
    assert errors[0].found == "{user} without for_each"
    at(errors[1], 10, "subscriptions[1].for_each")
    at(errors[2], 11, "subscriptions[2].resource")
    assert errors[2].found.startswith("{root}")


def test_teams_lifetime_over_an_hour_needs_a_lifecycle_url(tmp_path: Path) -> None:
    header = HEADER.replace("subscriptions:", "receiver: {lifecycle_url: null}\nsubscriptions:")
    error = problem(tmp_path, "  - {name: t, resource: teams/getAllMessages, lifetime: 2h}\n", header=header)
    at(error, 10, "subscriptions[0].lifetime")
    assert error.expected == "at most 1h when receiver.lifecycle_url is null"


def test_delegated_only_resources_and_me_are_refused(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: p, resource: communications/presences/abc}\n  - {name: m, resource: me/messages}\n",
    )
    at(errors[0], 9, "subscriptions[0].resource")
    assert "no application permission" in errors[0].found
    at(errors[1], 10, "subscriptions[1].resource")


def test_renew_before_must_be_shorter_than_the_lifetime(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: u, resource: users, lifetime: 2h, renew_before: 3h}\n")
    at(error, 9, "subscriptions[0].renew_before")
    assert error.expected == "less than the lifetime (2h)"


def test_several_tenants_need_a_tenant_on_each_subscription(tmp_path: Path) -> None:
    header = HEADER.replace(
        "subscriptions:",
        "  - {name: fabrikam, tenant_id: t2, client_id: c2, certificate: {private_key: {env: SYNCER_SECRET}, thumbprint: 'AB:CD'}}\nsubscriptions:",
    )
    errors = problems(
        tmp_path,
        "  - {name: u, resource: users}\n  - {name: g, resource: groups, tenant: fabrikan}\n",
        header=header,
    )
    at(errors[0], 8, "tenants[1].certificate.thumbprint")
    at(errors[1], 10, "subscriptions[0].tenant")
    assert errors[1].found == "nothing (there are 2 tenants)"
    at(errors[2], 11, "subscriptions[1].tenant")
    assert errors[2].hint == "did you mean 'fabrikam'?"


def test_literal_database_password_is_refused(tmp_path: Path) -> None:
    header = HEADER.replace(
        "subscriptions:", "database: {url: 'postgresql://syncer:pa55@db/syncer'}\nsubscriptions:"
    )
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(error, 8, "database.url")
    assert error.found == "a literal password" and "pa55" not in str(error)


def test_cloud_specific_keys(tmp_path: Path) -> None:
    header = HEADER.replace(
        "graph: {cloud: global}", "graph: {cloud: global, graph_url: 'https://graph.example'}"
    )
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(error, 2, "graph.graph_url")
    header = HEADER.replace("graph: {cloud: global}", "graph: {cloud: custom}")
    errors = problems(tmp_path, "  - {name: u, resource: users}\n", header=header)
    assert [e.location.path for e in errors] == ["graph.authority_host", "graph.graph_url"]
    header = HEADER.replace("graph: {cloud: global}", "graph: {cloud: china}")
    error = problem(tmp_path, "  - {name: t, resource: users/a/todo/lists/b/tasks}\n", header=header)
    assert error.found == "'users/a/todo/lists/b/tasks' (todoTask: global cloud only)"


def test_version_is_required_and_checked(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=HEADER.replace("version: 1\n", ""))
    at(error, 1, "version")
    error = problem(
        tmp_path, "  - {name: u, resource: users}\n", header=HEADER.replace("version: 1", "version: 2")
    )
    assert error.expected == "1 (this syncer reads version 1)" and error.found == "2 (a number)"


def test_yaml_syntax_error_and_duplicate_key(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: u, resource: users\n")
    assert error.expected == "valid YAML" and error.location.line == 10
    error = problem(tmp_path, "  - name: u\n    resource: users\n    name: v\n")
    at(error, 11, "subscriptions[0].name")
    assert error.found == "a second 'name'"


def test_all_problems_reported_together_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, "  - {name: a, resource: users, lifetime: 1 year}\n  - {name: b, resource: nope}\n")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "subscriptions.yaml:9: subscriptions[0].lifetime: expected a duration like 90m, 36h, 2d or PT2H, or max, found '1 year'"
    )
    assert (
        ":10: subscriptions[1].resource: expected a resource Graph sends change notifications for" in lines[1]
    )


# --- the emulator connection and secrets ------------------------------------------------------------------


def test_emulator_values_are_read_lazily_from_the_info_file(tmp_path: Path) -> None:
    header = "version: 1\ngraph: {cloud: emulator, emulator_info: run/emu.json}\nsubscriptions:\n"
    spec = load(tmp_path, "  - {name: u, resource: users}\n", header=header, env={})
    assert spec.needs_emulator_info
    with pytest.raises(ConfigError, match="syncer emulator --info-file"):
        spec.resolve_emulator()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "emu.json").write_text(
        json.dumps(
            {
                "graph_url": "https://127.0.0.1:8443/v1.0",
                "authority": "https://127.0.0.1:8443/tid-1",
                "tenant_id": "tid-1",
                "client_id": "cid-1",
                "client_secret": "emu-secret",
                "ca_cert": str(tmp_path / "ca.pem"),
            }
        )
    )
    resolved = spec.resolve_emulator()
    assert resolved.graph.graph_url == "https://127.0.0.1:8443"
    assert resolved.graph.authority_host == "https://127.0.0.1:8443"
    assert resolved.graph.ca_bundle == tmp_path / "ca.pem"
    tenant = resolved.tenant("emulator")
    assert (tenant.tenant_id, tenant.client_id) == ("tid-1", "cid-1")
    assert tenant.client_secret is not None and tenant.client_secret.resolve() == "emu-secret"
    assert not resolved.needs_emulator_info and resolved.resolve_emulator() is resolved


def test_secret_refs_resolve_and_never_show_values(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("file-secret\n")
    assert SecretRef(file=tmp_path / "key").resolve() == "file-secret"
    ref = SecretRef(env="X", environ={"X": "env-secret"})
    assert ref.resolve() == "env-secret" and "env-secret" not in repr(ref)
    with pytest.raises(ConfigError, match="environment variable Y is not set"):
        SecretRef(env="Y", environ={}).resolve()


def test_missing_secret_file_is_reported_unless_secrets_are_not_checked(tmp_path: Path) -> None:
    header = HEADER.replace("{env: SYNCER_SECRET}", "{file: secrets/client}")
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(error, 7, "tenants[0].client_secret")
    assert error.found.startswith("no file at")
    spec = load_spec(
        write(tmp_path, header + "  - {name: u, resource: users}\n"), environ={}, check_secrets=False
    )
    assert spec.tenants[0].client_secret == SecretRef(file=tmp_path.resolve() / "secrets" / "client")


def test_unknown_names_in_lookups() -> None:
    spec = load_spec(ROOT / "subscriptions.yaml", environ={})
    with pytest.raises(ConfigError, match=r"declared: users, groups, inbox\b"):
        spec.subscription("nope")


# --- the resource catalogue ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key", "params"),
    [
        ("/Users", "user", {}),
        ("users/8a1d", "user", {"user": "8a1d"}),
        (
            "users/a@b.com/mailFolders('inbox')/messages?$select=subject",
            "message",
            {"user": "a@b.com", "folder": "inbox"},
        ),
        ("me/events", "event", {"user": "me"}),
        ("teams/getAllMessages", "chatMessage.allChannels", {}),
        ("teams/t1", "team.one", {"team": "t1"}),
        (
            "teams('t1')/channels('19:x@thread.tacv2')/messages",
            "chatMessage.channel",
            {"team": "t1", "channel": "19:x@thread.tacv2"},
        ),
        ("chats/getAllMessages", "chatMessage.allChats", {}),
        ("drives/b!x/root", "driveItem", {"drive": "b!x"}),
        ("security/alerts?$filter=severity eq 'high'", "alert", {}),
    ],
)
def test_match_resource(path: str, key: str, params: dict[str, str]) -> None:
    matched = resources.match_resource(path)
    assert matched is not None
    assert (matched[0].key, matched[1]) == (key, params)


def test_unknown_paths_do_not_match() -> None:
    assert (
        resources.match_resource("users/a/memberOf") is None
    )  # Graph accepts it and never fires
    assert resources.match_resource("") is None


def test_delta_paths() -> None:
    assert resources.delta_path_for("users") == "users/delta"
    assert resources.delta_path_for("users/u1/drive/root") == "users/u1/drive/root/delta"
    assert resources.delta_path_for("users/u1/messages") == "users/u1/mailFolders/{folder}/messages/delta"
    assert resources.delta_path_for("users/u1/events") == "users/u1/calendarView/delta"
    assert resources.delta_path_for("communications/callRecords") is None


def test_catalogue_is_consistent() -> None:
    assert len(resources.BY_KEY) == len(resources.CATALOGUE)
    for rt in resources.CATALOGUE:
        assert rt.change_types <= set(resources.CHANGE_TYPES), rt.key
        assert rt.max_lifetime >= resources.MIN_LIFETIME, rt.key
        assert (rt.sync in (resources.FETCH, resources.CURSOR)) == (not rt.delta_paths), rt.key
        assert not rt.delta_paths or len(rt.delta_paths) == len(rt.patterns), rt.key
        if rt.per_mailbox:
            assert all(p.startswith("users/{user}/") for p in rt.patterns), rt.key


# --- the reference page ---------------------------------------------------------------------------------


def test_reference_example_validates(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(write(tmp_path, example), environ={}, check_secrets=False)
    assert [s.name for s in spec.subscriptions] == ["users", "sales-mail", "fabrikam-calendars"]
    assert spec.database_url == "postgresql+psycopg://syncer@db.internal/syncer"
    events = spec.subscription("fabrikam-calendars")
    assert (events.window_past, events.window_future) == (timedelta(days=7), timedelta(days=90))
    assert spec.subscription("sales-mail").folders == ("inbox", "sentitems")


def test_reference_lists_every_resource_pattern() -> None:
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    missing = [p for rt in resources.CATALOGUE for p in rt.patterns if f"`{p}`" not in text]
    assert not missing, f"docs/spec.md lacks {missing}"


def test_empty_file_and_a_list_at_the_top(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:
        load_spec(write(tmp_path, "# nothing yet\n"), environ={})
    assert str(caught.value).endswith(
        "subscriptions.yaml:1: expected a mapping with version: 1 and subscriptions, found an empty file"
    )
    with pytest.raises(SpecErrors) as caught:
        load_spec(write(tmp_path, "- version: 1\n"), environ={})
    assert caught.value.found == "a list"


def test_repeated_column_and_misplaced_options(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        """\
          - name: u
            resource: users
            window: {past: 1d}
            folders: [inbox]
            mirror: {columns: [displayName, {field: mail, column: display_name}]}
        """,
    )
    assert [(e.location.line, e.location.path) for e in errors] == [
        (11, "subscriptions[0].window"),
        (12, "subscriptions[0].folders"),
        (13, "subscriptions[0].mirror.columns[1]"),
    ]
    assert errors[0].expected == "window only for event resources (calendarView)"
    assert errors[2].found == "'display_name' again (also displayName)"


def test_resource_given_as_a_url_gets_the_relative_path_as_hint(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - {name: u, resource: 'https://graph.microsoft.com/v1.0/users'}\n")
    at(error, 9, "subscriptions[0].resource")
    assert error.hint == "write 'users'"


def test_errors_in_other_fields_are_reported_even_when_the_resource_is_unknown(tmp_path: Path) -> None:
    errors = problems(tmp_path, "  - {name: u, resource: userz, mirror: {table: 'bad table'}}\n")
    assert [e.location.path for e in errors] == ["subscriptions[0].mirror.table", "subscriptions[0].resource"]
    assert errors[1].hint == "did you mean 'users'?"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90m", 90),
        ("36h", 2160),
        ("2d", 2880),
        ("1h30m", 90),
        ("1w", 10080),
        ("PT2H", 120),
        ("P1DT12H", 2160),
        ("pt45m", 45),
    ],
)
def test_durations(tmp_path: Path, text: str, minutes: int) -> None:
    spec = load(tmp_path, f"  - {{name: u, resource: users, lifetime: {text}, renew_before: 1m}}\n")
    assert spec.subscriptions[0].lifetime == timedelta(minutes=minutes)


# --- robustness: any document gives a Spec or located errors, never a crash ------------------------------

_KEYS = [
    "version",
    "graph",
    "cloud",
    "tenants",
    "name",
    "tenant_id",
    "client_id",
    "client_secret",
    "env",
    "file",
    "receiver",
    "notification_url",
    "port",
    "database",
    "url",
    "defaults",
    "lifetime",
    "subscriptions",
    "resource",
    "change_types",
    "include_resource_data",
    "encryption",
    "mirror",
    "table",
    "columns",
    "field",
    "column",
    "type",
    "for_each",
    "users",
    "window",
    "past",
    "folders",
    "renew_before",
    "certificate",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.sampled_from(
        [
            "users",
            "users/{user}/messages",
            "max",
            "2d",
            "90",
            "emulator",
            "global",
            "custom",
            "all",
            "https://x.example/n",
            "http://127.0.0.1:1/n",
            "${X}",
            "${X:-1}",
            "text",
            "created",
            "soft",
            "1",
        ]
    ),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6))
def test_any_document_loads_or_gives_located_errors(tmp_path: Path, document: dict[str, object]) -> None:
    text = yaml.safe_dump({"version": 1, **document})
    try:
        parse_spec(text, path=tmp_path / "s.yaml", environ={}, check_secrets=False)
    except SpecErrors as errors:
        assert all(e.location.file.endswith("s.yaml") and e.expected for e in errors.errors)


_SUB_KEYS = [
    "name",
    "resource",
    "change_types",
    "include_resource_data",
    "encryption",
    "lifetime",
    "renew_before",
    "sync_interval",
    "mirror",
    "for_each",
    "window",
    "folders",
    "tenant",
]
_SUBSCRIPTION = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c d"]),
        "resource": st.sampled_from(
            # every known pattern, placeholders other than {user} filled in
            [re.sub(r"\{(?!user\})\w+\}", "x1", p) for rt in resources.CATALOGUE for p in rt.patterns]
        ),
    },
    optional={key: _VALUES for key in _SUB_KEYS[2:]},
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subs=st.lists(_SUBSCRIPTION, max_size=3))
def test_any_subscription_list_loads_or_gives_located_errors(
    tmp_path: Path, subs: list[dict[str, object]]
) -> None:
    text = HEADER + textwrap.indent(yaml.safe_dump(subs), "  ") if subs else HEADER + "  []\n"
    try:
        spec = parse_spec(text, path=tmp_path / "s.yaml", environ=ENV, check_secrets=False)
    except SpecErrors as errors:
        assert all(
            e.location.line > 0 and e.location.path.startswith("subscriptions") for e in errors.errors
        ), errors
    else:
        assert len(spec.subscriptions) == len(subs)  # none dropped silently
        for sub in spec.subscriptions:
            assert sub.renew_before < sub.effective_lifetime <= sub.max_lifetime
            assert set(sub.change_types) <= sub.resource_type.change_types


def test_custom_cloud(tmp_path: Path) -> None:
    header = HEADER.replace(
        "graph: {cloud: global}",
        "graph: {cloud: custom, graph_url: 'https://graph.example.net/v1.0/', authority_host: 'http://127.0.0.1:9/', ca_bundle: ca.pem}",
    )
    error = problem(tmp_path, "  - {name: u, resource: users}\n", header=header)
    at(error, 2, "graph.authority_host")
    assert error.expected == "an https:// URL" and error.found == "'http://127.0.0.1:9/'"
    spec = load(
        tmp_path,
        "  - {name: u, resource: users}\n",
        header=header.replace("http://127.0.0.1:9/", "https://login.example.net/"),
    )
    assert (spec.graph.graph_url, spec.graph.authority_host) == (
        "https://graph.example.net",
        "https://login.example.net",
    )
    assert spec.graph.ca_bundle == tmp_path.resolve() / "ca.pem"


# --- the shipped spec against a real emulator -----------------------------------------------------------


def test_shipped_spec_resolves_against_a_running_emulator(emulator: Any, tmp_path: Path) -> None:
    """The info file the emulator writes is what resolve_emulator() reads: the resolved URLs, CA and
    credentials get a token and the users mirror's delta query (with its $select) from the emulator."""
    import shutil

    import requests

    shutil.copy(ROOT / "subscriptions.yaml", tmp_path / "subscriptions.yaml")
    (tmp_path / ".syncer").mkdir()
    emulator.write_info(tmp_path / ".syncer" / "emulator.json")
    spec = load_spec(tmp_path / "subscriptions.yaml", environ={}).resolve_emulator()
    tenant = spec.tenants[0]
    assert tenant.client_secret is not None and spec.graph.ca_bundle is not None
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= (requests' trust_env)
    session.verify = str(spec.graph.ca_bundle)
    token = session.post(
        f"{spec.graph.authority_host}/{tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret.resolve(),
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    seeded = session.post(f"{emulator.info['base_url']}/_emulator/seed", json={"users": 3}, timeout=10)
    assert seeded.status_code == 200, seeded.text
    users = spec.subscription("users")
    delta = resources.delta_path_for(users.resource)
    page = session.get(
        f"{spec.graph.graph_url}/v1.0/{delta}?$select={','.join(users.mirror.select)}", timeout=10
    )
    assert page.status_code == 200, page.text
    assert len(page.json()["value"]) == 3
    assert set(page.json()["value"][0]) >= {"id", "displayName", "userPrincipalName"}


def test_empty_values_count_as_missing(tmp_path: Path) -> None:
    errors = problems(tmp_path, "  - name:\n    resource:\n")
    assert [(e.location.line, e.location.path, e.found) for e in errors] == [
        (9, "subscriptions[0].name", "nothing"),
        (9, "subscriptions[0].resource", "nothing"),
    ]


def test_group_members_table_is_claimed_too(tmp_path: Path) -> None:
    error = problem(
        tmp_path,
        "  - {name: g, resource: groups, mirror: {table: teams}}\n"
        "  - {name: u, resource: users, mirror: {table: teams_members}}\n",
    )
    at(error, 10, "subscriptions[1].mirror.table")
    assert error.found == "'teams_members' (also the members table of subscriptions[0])"


def test_unknown_resource_gets_no_suggestion_from_another_collection(tmp_path: Path) -> None:
    # Issue 18: users/{user}/memberOf was offered teams/{team}/members (the placeholders made them alike).
    error = problem(tmp_path, "  - {name: m, resource: users/abc/memberOf}\n")
    at(error, 9, "subscriptions[0].resource")
    assert "teams" not in error.hint
