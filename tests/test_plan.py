"""The reconcile planner as a pure function: every action kind, idempotency, fan-out, quotas, ownership."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncer.graph.subscriptions import LiveSubscription
from syncer.reconcile.actions import Kind, Plan
from syncer.reconcile.desired import SKEW_MARGIN, Desired, Expansion, desired_from_spec, effective_lifetime
from syncer.reconcile.plan import Recorded, plan
from syncer.reconcile.quotas import QuotaProblem
from syncer.resources import BY_KEY, MIN_LIFETIME
from syncer.spec import load_spec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://hooks.example.com/notifications"
LIFECYCLE = "https://hooks.example.com/lifecycle"
TENANT = "t1"
APP = "app1"

SPEC = f"""
version: 1
graph: {{cloud: custom, graph_url: "https://127.0.0.1:9/v1.0", authority_host: "https://127.0.0.1:9"}}
tenants:
  - {{name: main, tenant_id: {TENANT}, client_id: {APP}, client_secret: {{env: SECRET}}}}
receiver: {{notification_url: "{URL}"}}
subscriptions:
  - name: users
    resource: users
    change_types: [updated, deleted]
    renew_before: 1h
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created, updated]
    lifetime: 2d
    for_each: {{group: g1}}
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(SPEC)
    return path


def desired(spec_path: Path, users: tuple[str, ...] = ("u1", "u2")) -> list[Desired]:
    spec = load_spec(spec_path, environ={"SECRET": "x"})
    return desired_from_spec(spec, {"mail": Expansion("mail", TENANT, "group g1", users)})


def live_for(d: Desired, sub_id: str, *, expires: datetime, **changes: object) -> LiveSubscription:
    """The live subscription Graph would hold after creating *d*."""
    base = LiveSubscription(
        id=sub_id,
        resource=d.resource,
        change_types=d.change_types,
        notification_url=d.notification_url,
        expiration=expires,
        lifecycle_notification_url=d.lifecycle_url,
        application_id=APP,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def row_for(d: Desired, sub_id: str, *, expires: datetime, name: str | None = None) -> Recorded:
    return Recorded(
        subscription_id=sub_id,
        tenant_id=d.tenant_id,
        name=name or d.name,
        scope_key=d.scope_key,
        resource=d.resource,
        change_types=d.change_types,
        notification_url=d.notification_url,
        lifecycle_url=d.lifecycle_url,
        expires_at=expires,
    )


def applied(
    ds: list[Desired], *, expires: datetime
) -> tuple[dict[str, list[LiveSubscription]], list[Recorded]]:
    """Live subscriptions and rows as if every desired subscription had been created."""
    live = [live_for(d, f"s{i}", expires=expires) for i, d in enumerate(ds)]
    rows = [row_for(d, f"s{i}", expires=expires) for i, d in enumerate(ds)]
    return {TENANT: live}, rows


def kinds(p: Plan) -> list[str]:
    return [str(a.kind) for a in p.actions]


def test_everything_is_created_on_an_empty_tenant(spec_path: Path) -> None:
    ds = desired(spec_path)
    p = plan(ds, {TENANT: []}, [], NOW)
    assert kinds(p) == ["create"] * 3
    assert {a.resource for a in p.actions} == {"users", "users/u1/messages", "users/u2/messages"}
    users = next(a for a in p.actions if a.resource == "users")
    # No lifetime declared: the maximum (29 days for users) minus the skew margin.
    assert users.new_expires_at == NOW + timedelta(days=29) - SKEW_MARGIN
    mail = next(a for a in p.actions if a.resource == "users/u1/messages")
    assert mail.new_expires_at == NOW + timedelta(days=2)
    assert p.has_changes
    assert p.counts()["create"] == 3


def test_a_second_plan_after_apply_is_only_keep(spec_path: Path) -> None:
    ds = desired(spec_path)
    live, rows = applied(ds, expires=NOW + timedelta(days=2))
    p = plan(ds, live, rows, NOW)
    assert kinds(p) == ["keep"] * 3
    assert not p.has_changes
    assert p.orphans == () and p.problems == ()


def test_renew_only_within_renew_before_and_capped_at_the_maximum(spec_path: Path) -> None:
    ds = desired(spec_path)
    live, rows = applied(ds, expires=NOW + timedelta(minutes=59))
    p = plan(ds, live, rows, NOW)
    assert kinds(p) == ["renew"] * 3
    by_resource = {a.resource: a for a in p.actions}
    assert by_resource["users"].new_expires_at == NOW + timedelta(days=29) - SKEW_MARGIN
    assert by_resource["users/u1/messages"].new_expires_at == NOW + timedelta(days=2)
    assert by_resource["users"].changes == ("expirationDateTime",)

    # One minute outside renew_before (1 hour): nothing to do.
    live, rows = applied(ds, expires=NOW + timedelta(minutes=61))
    assert kinds(plan(ds, live, rows, NOW)) == ["keep"] * 3


def test_a_new_notification_url_is_an_update(spec_path: Path) -> None:
    ds = desired(spec_path)[:1]
    live, rows = applied(ds, expires=NOW + timedelta(days=3))
    moved = [replace(d, notification_url="https://new.example.com/n") for d in ds]
    p = plan(moved, live, rows, NOW)
    assert kinds(p) == ["update"]
    assert p.actions[0].changes == ("notificationUrl",)
    assert p.actions[0].new_expires_at is None  # not due: the PATCH only moves the URL

    live, rows = applied(ds, expires=NOW + timedelta(minutes=10))
    due = plan(moved, live, rows, NOW).actions[0]
    assert due.kind == Kind.UPDATE and due.changes == ("notificationUrl", "expirationDateTime")
    assert due.new_expires_at is not None


@pytest.mark.parametrize(
    ("field", "value", "changed"),
    [
        ("change_types", ("created",), "changeType"),
        ("lifecycle_url", None, "lifecycleNotificationUrl"),
    ],
)
def test_fields_graph_cannot_patch_mean_replace(
    spec_path: Path, field: str, value: object, changed: str
) -> None:
    ds = desired(spec_path)[1:2]  # mail for u1
    live, rows = applied(ds, expires=NOW + timedelta(days=3))
    p = plan([replace(ds[0], **{field: value})], live, rows, NOW)  # type: ignore[arg-type]
    assert kinds(p) == ["replace"]
    assert p.actions[0].changes == (changed,)
    assert p.actions[0].subscription_id == "s0"


def test_adopt_a_live_subscription_recorded_under_another_name(spec_path: Path) -> None:
    ds = desired(spec_path)[:1]
    live, _rows = applied(ds, expires=NOW + timedelta(days=3))
    rows = [row_for(ds[0], "s0", expires=NOW + timedelta(days=3), name="old-name")]
    p = plan(ds, live, rows, NOW)
    assert kinds(p) == ["adopt"]
    assert p.actions[0].subscription_id == "s0" and p.actions[0].new_expires_at is None
    assert not p.actions[0].writes_graph  # only our row changes
    # When it is due too, adopting renews it.
    live, _rows = applied(ds, expires=NOW + timedelta(minutes=5))
    adopt = plan(ds, live, rows, NOW).actions[0]
    assert adopt.kind == Kind.ADOPT and adopt.new_expires_at is not None and adopt.writes_graph


def test_a_live_match_without_our_record_is_replaced_because_its_client_state_is_unknown(
    spec_path: Path,
) -> None:
    ds = desired(spec_path)[:1]
    live, _rows = applied(ds, expires=NOW + timedelta(days=3))
    p = plan(ds, live, [], NOW)
    assert kinds(p) == ["replace"]
    assert p.actions[0].changes == ("clientState",)
    assert "clientState" in p.actions[0].reason


def test_our_app_on_the_same_resource_with_another_url_is_replaced_not_duplicated(spec_path: Path) -> None:
    ds = desired(spec_path)[:1]
    live = {
        TENANT: [
            live_for(ds[0], "old", expires=NOW + timedelta(days=3), notification_url="https://old.example/n")
        ]
    }
    p = plan(ds, live, [], NOW, app_ids={TENANT: APP})
    assert kinds(p) == ["replace"] and p.actions[0].subscription_id == "old"
    # Another app's subscription is not ours to delete: create (Graph scopes the 409 per app).
    foreign = {
        TENANT: [
            live_for(
                ds[0],
                "x",
                expires=NOW + timedelta(days=3),
                notification_url="https://o/n",
                application_id="other",
            )
        ]
    }
    p = plan(ds, foreign, [], NOW, app_ids={TENANT: APP})
    assert kinds(p) == ["create"] and p.ignored == 1


def test_prune_only_with_prune_and_only_what_is_provably_ours(spec_path: Path) -> None:
    ds = desired(spec_path)
    live, rows = applied(ds, expires=NOW + timedelta(days=3))
    keep_only_users = ds[:1]
    extra = [
        # ours by app id and URL, but not in our table
        LiveSubscription("mine", "groups", ("updated",), URL, NOW + timedelta(days=1), application_id=APP),
        # our app, someone else's URL: not provably ours
        LiveSubscription(
            "elsewhere", "groups/g9", ("updated",), "https://x/n", NOW + timedelta(days=1), application_id=APP
        ),
        # another app entirely
        LiveSubscription(
            "other", "groups/g8", ("updated",), URL, NOW + timedelta(days=1), application_id="other"
        ),
    ]
    all_live = {TENANT: [*live[TENANT], *extra]}

    without = plan(keep_only_users, all_live, rows, NOW, app_ids={TENANT: APP})
    assert kinds(without) == ["keep"]
    assert sorted(a.subscription_id or "" for a in without.orphans) == ["mine", "s1", "s2"]
    assert without.ignored == 2
    assert not without.has_changes

    with_prune = plan(keep_only_users, all_live, rows, NOW, prune=True, app_ids={TENANT: APP})
    assert kinds(with_prune) == ["prune", "prune", "prune", "keep"]
    pruned = {a.subscription_id: a for a in with_prune.of_kind(Kind.PRUNE)}
    assert set(pruned) == {"mine", "s1", "s2"}
    assert pruned["s1"].changes == ("recorded in syncer's table",)
    assert pruned["mine"].changes == ("created by this app for one of our notification URLs",)


def test_rows_whose_subscription_is_gone_are_forgotten_and_recreated(spec_path: Path) -> None:
    ds = desired(spec_path)[:1]
    _live, rows = applied(ds, expires=NOW + timedelta(days=3))
    p = plan(ds, {TENANT: []}, rows, NOW)
    assert kinds(p) == ["create", "forget"]
    # An expired subscription Graph still lists counts as gone too.
    expired, rows = applied(ds, expires=NOW - timedelta(seconds=1))
    assert kinds(plan(ds, expired, rows, NOW)) == ["create", "forget"]


def test_fan_out_follows_membership_changes(spec_path: Path) -> None:
    before = desired(spec_path, ("u1", "u2"))
    live, rows = applied(before, expires=NOW + timedelta(days=2))
    after = desired(spec_path, ("u1", "u3"))
    p = plan(after, live, rows, NOW, expansions=[Expansion("mail", TENANT, "group g1", ("u1", "u3"))])
    assert [(str(a.kind), a.resource) for a in p.actions] == [
        ("create", "users/u3/messages"),
        ("keep", "users/u1/messages"),  # actions sort by kind, then declaration name (mail < users)
        ("keep", "users"),
    ]
    assert [a.resource for a in p.orphans] == ["users/u2/messages"]
    assert p.to_json()["expansions"] == [
        {"name": "mail", "tenant_id": TENANT, "source": "group g1", "users": ["u1", "u3"]}
    ]
    pruned = plan(after, live, rows, NOW, prune=True)
    assert [a.resource for a in pruned.of_kind(Kind.PRUNE)] == ["users/u2/messages"]


def test_a_plan_over_a_quota_carries_the_numbers(spec_path: Path) -> None:
    base = desired(spec_path)[0]
    many = [replace(base, name=f"u{i}", resource=f"users/u{i}") for i in range(101)]
    p = plan(many, {TENANT: []}, [], NOW)
    assert len(p.problems) == 1
    problem = p.problems[0]
    assert isinstance(problem, QuotaProblem)
    assert (problem.limit, problem.planned, problem.existing) == (100, 101, 0)
    assert "101 directory subscriptions of this app in tenant t1" in str(problem) and "allows 100" in str(
        problem
    )
    # Users and groups share Graph's directory quota.
    mixed = many[:60] + [
        replace(base, name=f"g{i}", resource=f"groups/g{i}", resource_type=BY_KEY["group"]) for i in range(41)
    ]
    assert [
        p.planned for p in plan(mixed, {TENANT: []}, [], NOW).problems if isinstance(p, QuotaProblem)
    ] == [101]
    # Pruning makes room: 100 declared + 1 pruned is within the quota.
    live, rows = applied(many[:100], expires=NOW + timedelta(days=2))
    stray = LiveSubscription(
        "stray", "users/zz", ("updated", "deleted"), URL, NOW + timedelta(days=2), application_id=APP
    )
    crowded = {TENANT: [*live[TENANT], stray]}
    assert plan(many[:100], crowded, rows, NOW, app_ids={TENANT: APP}).problems  # the orphan still counts
    assert not plan(many[:100], crowded, rows, NOW, prune=True, app_ids={TENANT: APP}).problems


def test_two_declarations_for_one_graph_identity_are_a_problem(spec_path: Path) -> None:
    d = desired(spec_path)[0]
    p = plan([d, replace(d, name="again")], {TENANT: []}, [], NOW)
    assert any("409" in str(problem) for problem in p.problems)


def test_lifetimes_are_capped_and_floored() -> None:
    message = BY_KEY["message"]
    assert effective_lifetime(message, declared=None, rich=False) == timedelta(minutes=10_080) - SKEW_MARGIN
    assert effective_lifetime(message, declared=None, rich=True) == timedelta(minutes=1_440) - SKEW_MARGIN
    assert (
        effective_lifetime(message, declared=timedelta(days=30), rich=False)
        == timedelta(minutes=10_080) - SKEW_MARGIN
    )
    assert effective_lifetime(message, declared=timedelta(minutes=1), rich=False) == MIN_LIFETIME
    presence = BY_KEY["presence"]
    assert effective_lifetime(presence, declared=None, rich=True) == timedelta(minutes=55)


def test_the_plan_serialises_without_secrets(spec_path: Path) -> None:
    ds = desired(spec_path)
    p = plan(ds, {TENANT: []}, [], NOW)
    doc = json.loads(json.dumps(p.to_json()))
    assert doc["counts"]["create"] == 3 and doc["has_changes"] is True
    assert "clientState" not in json.dumps(doc) and "client_state" not in json.dumps(doc)
    assert doc["actions"][0]["new_expires_at"].endswith("Z")
