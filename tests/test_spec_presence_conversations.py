"""Presence and group conversations in subscriptions.yaml: declarable with a signed-in work account only, presence
with at most 650 users and one declaration per account, conversations one per group (docs/spec.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_spec_delegated import ENV, HEADER  # the same three tenants: an app, a work and a personal account

from syncer.errors import SpecError, SpecErrors
from syncer.spec import load_spec

IDS = ["0b9bb3e0-1a48-4f44-a3b6-5c6f7f1d2e3a", "1c8aa2d1-2b37-4e33-b2a5-4d5e6e0c1f29"]


def sub(name: str, tenant: str, resource: str) -> str:
    return f"""\
- name: {name}
  tenant: {tenant}
  resource: "{resource}"
  mirror: {{table: {name}}}
"""


def load(tmp_path: Path, subs: str) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(HEADER + textwrap.dedent(subs), encoding="utf-8")
    load_spec(path, environ=ENV)


def problems(tmp_path: Path, subs: str) -> list[SpecError]:
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, subs)
    return caught.value.errors


def _in(ids: list[str]) -> str:
    return "communications/presences?$filter=id in (" + ",".join(f"'{i}'" for i in ids) + ")"


def test_a_signed_in_work_account_may_declare_both(tmp_path: Path) -> None:
    load(tmp_path, sub("p", "adele", _in(IDS)) + sub("c", "adele", "groups/02bd9fd6-8f93-4758-87c3-1fb73740a315/conversations"))
    load(tmp_path, sub("one", "adele", f"communications/presences/{IDS[0]}"))


@pytest.mark.parametrize("resource", [_in(IDS), "groups/02bd9fd6-8f93-4758-87c3-1fb73740a315/conversations"])
def test_app_only_and_personal_accounts_are_refused(tmp_path: Path, resource: str) -> None:
    (app,) = problems(tmp_path, sub("x", "contoso", resource))
    assert app.location.path == "subscriptions[0].resource" and "auth: delegated" in app.expected, str(app)
    assert "no application permission" in app.found
    (personal,) = problems(tmp_path, sub("x", "pat", resource))
    assert "personal Microsoft account" in personal.expected, str(personal)


def test_presence_names_at_most_650_users(tmp_path: Path) -> None:
    many = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(651)]
    (error,) = problems(tmp_path, sub("p", "adele", _in(many)))
    assert error.expected == "at most 650 user ids per presence subscription" and error.found == "651 ids"
    load(tmp_path, sub("p", "adele", _in(many[:650])))
    (bare,) = problems(tmp_path, sub("p", "adele", "communications/presences"))
    assert "$filter=id in" in bare.expected, str(bare)
    (empty,) = problems(tmp_path, sub("p", "adele", "communications/presences?$filter=id in ()"))
    assert "at least one user id" in empty.expected, str(empty)


def test_one_presence_per_account_and_one_conversation_subscription_per_group(tmp_path: Path) -> None:
    (presence,) = problems(tmp_path, sub("a", "adele", _in(IDS[:1])) + sub("b", "adele", _in(IDS[1:])))
    assert presence.location.path == "subscriptions[1].resource" and "one presence declaration" in presence.expected
    group = "groups/02bd9fd6-8f93-4758-87c3-1fb73740a315/conversations"
    other_changes = sub("b", "adele", group.replace("02bd9fd6", "02BD9FD6")) + "  change_types: [created]\n"
    (conversation,) = problems(tmp_path, sub("a", "adele", group) + other_changes)
    assert "one conversation subscription per group" in conversation.expected, str(conversation)
