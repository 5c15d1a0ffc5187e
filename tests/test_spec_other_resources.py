"""What subscriptions.yaml refuses for alerts, call records, Universal Print and To Do lists, as Graph would
(https://learn.microsoft.com/en-us/graph/changenotifications-for-callrecords,
https://learn.microsoft.com/en-us/graph/universal-print-webhook-notifications): each error names the line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_spec_delegated import HEADER, load, problems

from syncer.doctor import permissions_needed
from syncer.reconcile.desired import Expansion, desired_from_spec
from syncer.worker import scopes

FIRST = HEADER.count("\n") + 1  # the line of the first subscription's "- name:"


def _sub(resource: str, extra: str = "", tenant: str = "contoso") -> str:
    return textwrap.dedent(f"""\
        - name: it
          tenant: {tenant}
          resource: "{resource}"
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


@pytest.mark.parametrize(
    ("resource", "extra", "field", "line", "words"),
    [
        # callRecord: created and updated only, basic notifications only.
        ("communications/callRecords", "change_types: [created, deleted]\n", "change_types[1]", 3,
         "a change type Graph accepts for callRecord: created, updated"),
        ("communications/callRecords", "include_resource_data: true\n", "include_resource_data", 3, "callRecord"),
        # printer jobs: updated only (with the isFetchable filter syncer sends); task definitions: created only.
        ("print/printers/p1/jobs", "change_types: [created]\n", "change_types[0]", 3,
         "a change type Graph accepts for printer: updated"),
        ("print/taskDefinitions/d1/tasks", "change_types: [updated]\n", "change_types[0]", 3,
         "a change type Graph accepts for printTaskDefinition: created"),
        # alerts: raised and updated, never deleted.
        ("security/alerts?$filter=status eq 'newAlert'", "change_types: [deleted]\n", "change_types[0]", 3,
         "a change type Graph accepts for alert: created, updated"),
        # {list} is each user's To Do lists, nothing else.
        ("sites/s1/lists/{list}", "", "resource", 2, "{list} only in users/{user}/todo/lists/{list}/tasks"),
    ],
)
def test_what_graph_refuses_is_refused_with_line_and_field(
    tmp_path: Path, resource: str, extra: str, field: str, line: int, words: str
) -> None:
    errors = problems(tmp_path, _sub(resource, extra))
    mine = [e for e in errors if e.location.path == f"subscriptions[0].{field}"]
    assert mine, "\n".join(str(e) for e in errors)
    assert mine[0].location.line == FIRST + line, str(mine[0])
    assert words in str(mine[0]), str(mine[0])


@pytest.mark.parametrize(
    "resource", ["communications/callRecords", "print/printers/p1/jobs", "print/taskDefinitions/d1/tasks"]
)
def test_application_only_resources_are_refused_for_a_signed_in_user(tmp_path: Path, resource: str) -> None:
    errors = problems(tmp_path, _sub(resource, tenant="adele"))
    (error,) = [e for e in errors if e.location.path == "subscriptions[0].resource"]
    assert error.location.line == FIRST + 2
    assert "application permissions only" in str(error)


def test_the_printer_subscription_carries_graphs_required_query_options(tmp_path: Path) -> None:
    spec = load(tmp_path, _sub("print/printers/p1/jobs") + "  mirror: {table: jobs}\n")
    (desired,) = desired_from_spec(spec)
    assert desired.change_types == ("updated",)
    assert desired.query_options == "$filter = isFetchable eq true"
    (tasks,) = desired_from_spec(load(tmp_path, _sub("print/taskDefinitions/d1/tasks")))
    assert tasks.query_options is None and tasks.change_types == ("created",)


def test_an_alerts_filter_stays_in_the_resource(tmp_path: Path) -> None:
    spec = load(tmp_path, _sub("security/alerts?$filter=status eq 'newAlert'"))
    (desired,) = desired_from_spec(spec)
    assert desired.resource == "security/alerts?$filter=status eq 'newAlert'"
    assert desired.change_types == ("created", "updated")


def test_one_users_todo_lists_without_for_each(tmp_path: Path) -> None:
    """``{list}`` with a fixed user needs no for_each: reconcile binds each list, the worker follows the lists."""
    spec = load(tmp_path, _sub("users/ada@contoso.com/todo/lists/{list}/tasks") + "  mirror: {table: tasks}\n")
    (scope,) = scopes.declared_scopes(spec)
    assert scope.container and scope.key == scope.parent_key == "users/ada@contoso.com/todo/lists"
    assert scope.initial_url.startswith("users/ada@contoso.com/todo/lists/delta?")
    bound = Expansion("it", spec.tenants[0].tenant_id, "declared", ("ada@contoso.com/L1",), ((("list", "L1"),),))
    (desired,) = desired_from_spec(spec, {"it": bound})
    assert desired.resource == "users/ada@contoso.com/todo/lists/L1/tasks"
    assert scopes.child_scope(scope, "L1").key == desired.scope_key  # a notification's subscription names the list


def test_two_alert_declarations_of_one_tenant_are_refused(tmp_path: Path) -> None:
    """Their filters differ only in the query: both would follow the one scope security/alerts."""
    second = _sub("security/alerts?$filter=severity eq 'high'", "change_types: [updated]\n").replace("name: it", "name: two")
    errors = problems(tmp_path, _sub("security/alerts?$filter=status eq 'newAlert'", "mirror: {table: a}\n") + second)
    (error,) = [e for e in errors if e.location.path == "subscriptions[1].resource"]
    assert error.location.line == FIRST + 6
    assert "one declaration of security/alerts per tenant" in str(error) and "subscriptions[0]" in str(error)
    calls = _sub("communications/callRecords", "change_types: [created]\n").replace("name: it", "name: one")
    calls += _sub("communications/callRecords", "change_types: [updated]\n")
    (error,) = [e for e in problems(tmp_path, calls) if e.location.path == "subscriptions[1].resource"]
    assert "one declaration of communications/callrecords per tenant" in str(error)


def test_doctor_asks_for_what_reading_a_printers_jobs_needs(tmp_path: Path) -> None:
    """Subscribing takes Printer.Read.All, listing and GETting the jobs PrintJob.Read.All: doctor checks both."""
    spec = load(tmp_path, _sub("print/printers/p1/jobs"))
    assert permissions_needed(spec, "contoso") == {"Printer.Read.All": "it", "PrintJob.Read.All": "it"}
