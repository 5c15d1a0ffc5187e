"""SharePoint lists, group and site libraries and group owners in subscriptions.yaml (issue 16): the paths syncer
accepts, what validation refuses as Graph would (each refusal names its line and field), the columns the mirror
gets, and the reconcile side of resolving a declaration to its canonical path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_spec import at, load, problem

from syncer import mirror, resources
from syncer.reconcile.desired import Expansion, desired_from_spec
from syncer.resolve import needs_resolution, resolve
from syncer.worker import scopes

SITE = "contoso.sharepoint.com,2c712604-1370-44e7-a1f5-426573fda80a,2d2244c3-251a-49ea-93a8-39e1c3a060fe"
LIST = "22e03ef3-6ef4-424d-a1d3-92a337807c30"


def test_every_site_form_is_a_list_resource() -> None:
    for path in (f"sites/{SITE}/lists/{LIST}", "sites/root/lists/Issues", "sites/contoso.sharepoint.com/lists/Issues",
                 "sites/contoso.sharepoint.com:/sites/ops:/lists/Issues", "/Sites/contoso.sharepoint.com:/teams/a/b:/Lists/x",
                 "groups/g1/sites/root/lists/Issues"):
        matched = resources.match_resource(path)
        assert matched is not None and matched[0].key == "list", path
    assert resources.match_resource("sites/contoso.sharepoint.com:/sites/ops:/lists/Issues")[1] == {  # type: ignore[index]
        "site": "contoso.sharepoint.com:/sites/ops:", "list": "Issues"}
    for path in ("sites/x/lists/y/items", "sites/x/lists", "sites/x/drives", "sites/x/lists/y/items/1"):
        assert resources.match_resource(path) is None, path
    assert resources.match_resource("groups/g1/owners")[0].key == "group.owners"  # type: ignore[index]
    assert resources.match_resource("groups/g1/members")[0].key == "group"  # type: ignore[index]


def test_a_list_mirrors_its_fields_with_site_and_list_columns(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        - name: issues
          resource: 'sites/contoso.sharepoint.com:/sites/ops:/lists/Issues'
          mirror: {columns: [fields.Title, fields.Status, {field: fields.Count, type: float}]}
        """)
    sub = spec.subscription("issues")
    assert needs_resolution(sub)
    assert [(c.name, c.type) for c in sub.mirror.columns] == [
        ("fields_title", "text"), ("fields_status", "text"), ("fields_count", "float")]
    assert sub.mirror.owners == ("site_id", "list_id") == sub.mirror.indexed  # from the scope (syncer.owners)
    assert sub.mirror.select == ("id", "fields")  # the owner columns are not asked of Graph
    table = mirror.build_table(sub.mirror)
    assert {ix.name for ix in table.indexes} >= {"ix_issues_site_id", "ix_issues_list_id"}


class FakeGraph:
    """Answers the GETs that resolve a declaration, recording them."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, list[str]()

    def get_json(self, url_or_path: str) -> Any:
        self.asked.append(url_or_path)
        return {"id": self.answers[url_or_path]}


def test_resolving_names_the_canonical_path_and_the_owners(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        - name: issues
          resource: 'sites/contoso.sharepoint.com:/sites/ops:/lists/Open issues'
        - name: team-files
          resource: groups/g1/drive/root
        - name: site-files
          resource: sites/root/drive/root
        - name: my-files
          resource: users/u1/drive/root
        - name: owners
          resource: groups/g1/owners
        """)
    graph = FakeGraph({
        "sites/contoso.sharepoint.com:/sites/ops?$select=id": SITE,
        f"sites/{SITE}/lists/Open%20issues?$select=id": LIST,
        "groups/g1/drive?$select=id": "b!group",
        "sites/root?$select=id": SITE,
        f"sites/{SITE}/drive?$select=id": "b!site",
    })
    found = resolve(spec.subscription("issues"), graph)
    assert found.resource == f"sites/{SITE}/lists/{LIST}" and dict(found.owners) == {"site": SITE, "list": LIST}
    assert resolve(spec.subscription("team-files"), graph).resource == "drives/b!group/root"
    assert dict(resolve(spec.subscription("site-files"), graph).owners) == {"drive": "b!site", "site": SITE}
    assert not needs_resolution(spec.subscription("my-files")) and not needs_resolution(spec.subscription("owners"))
    # Reconcile subscribes the canonical path; the worker keys the scope by it and fills the owner columns.
    tenant = spec.tenants[0].tenant_id
    expansions = {"issues": Expansion("issues", tenant, "resolved", (found.resource,), noun="paths",
                                      resources=(found.resource,))}
    issues = [d for d in desired_from_spec(spec, expansions) if d.name == "issues"]
    assert [d.resource for d in issues] == [found.resource]
    (scope,) = scopes.expand_subscription(spec.subscription("issues"), tenant, resolved=found)
    assert scope.key == scope.parent_key == found.resource
    assert scope.initial_url == f"sites/{SITE}/lists/{LIST}/items/delta?$expand=fields"
    assert dict(scope.owners)["site"] == SITE
    (owners,) = scopes.expand_subscription(spec.subscription("owners"), tenant)
    assert owners.initial_url == "groups/g1/owners" and dict(owners.owners) == {"group": "g1"}
    assert not scopes.fetched_by_id(owners.strategy, "Groups/g1")  # a notification names the group: list again
    assert mirror.tables_for(spec.subscription("owners"))[0].c.group_id is not None
    assert len(mirror.tables_for(spec.subscription("owners"))) == 1  # no <table>_members: its rows are owners


@pytest.mark.parametrize(
    ("subs", "line", "path", "expected"),
    [
        # Graph: list subscriptions take changeType "updated" only, no rich notifications, no $filter.
        ("  - name: l\n    resource: sites/root/lists/Issues\n    change_types: [created, updated]\n",
         11, "subscriptions[0].change_types[0]", "a change type Graph accepts for list: updated"),
        ("  - name: l\n    resource: sites/root/lists/Issues\n    include_resource_data: true\n",
         11, "subscriptions[0].include_resource_data", "list"),
        ("  - name: l\n    resource: \"sites/root/lists/Issues?$filter=fields/Status eq 'Open'\"\n",
         10, "subscriptions[0].resource", "no query string on a list resource"),
        # Items are not a subscription resource: the list is.
        ("  - name: l\n    resource: sites/root/lists/Issues/items\n",
         10, "subscriptions[0].resource", "a resource Graph sends change notifications for"),
        ("  - name: l\n    resource: 'sites/contoso.sharepoint.com:/sites/ops/lists/Issues'\n",
         10, "subscriptions[0].resource", "a resource Graph sends change notifications for"),
        ("  - name: l\n    resource: 'sites/{site}/lists/Issues'\n",
         10, "subscriptions[0].resource", "no placeholder but {user}"),
        # Libraries: driveItem rules (updated only, no rich); a query would be lost in resolving.
        ("  - name: d\n    resource: groups/g1/drive/root\n    change_types: [deleted]\n",
         11, "subscriptions[0].change_types[0]", "a change type Graph accepts for driveItem: updated"),
        ("  - name: d\n    resource: sites/root/drive/root\n    include_resource_data: true\n",
         11, "subscriptions[0].include_resource_data", "driveItem"),
        ("  - name: d\n    resource: groups/g1/drive/root?$select=name\n",
         10, "subscriptions[0].resource", "no query string on a driveItem resource"),
        # Owners: directory change types.
        ("  - name: o\n    resource: groups/g1/owners\n    change_types: [created]\n",
         11, "subscriptions[0].change_types[0]", "a change type Graph accepts for group: updated, deleted"),
    ],
)
def test_what_graph_refuses_is_refused_with_line_and_field(
    tmp_path: Path, subs: str, line: int, path: str, expected: str
) -> None:
    error = problem(tmp_path, subs)
    at(error, line, path)
    assert expected in str(error), str(error)


def test_a_site_path_without_its_colon_gets_a_hint(tmp_path: Path) -> None:
    error = problem(tmp_path, "  - name: l\n    resource: 'sites/contoso.sharepoint.com:/sites/ops/lists/Issues'\n")
    assert "ends with ':' before the rest" in str(error), str(error)


def test_every_library_of_a_site_is_not_a_resource(tmp_path: Path) -> None:
    """Graph has no subscription on /sites/{id}/drives (nor /groups/{id}/drives): each library is its own."""
    for resource in ("sites/root/drives", "groups/g1/drives"):
        error = problem(tmp_path, f"  - name: d\n    resource: {resource}\n")
        at(error, 10, "subscriptions[0].resource")
        assert "one library at a time" in str(error), str(error)


def test_a_declared_column_named_like_an_owner_column_wins(tmp_path: Path) -> None:
    spec = load(tmp_path, """\
        - name: issues
          resource: sites/root/lists/Issues
          mirror: {columns: [{field: parentReference.siteId, column: site_id}]}
        """)
    declared = spec.subscription("issues").mirror
    assert [(c.field, c.name) for c in declared.columns] == [("parentReference.siteId", "site_id")]
    assert declared.owners == ("list_id",)
    assert mirror.row_values(declared, {"parentReference": {"siteId": "g"}}) == {"site_id": "g"}
    assert isinstance(mirror.build_table(declared).c.site_id.type, sa.Text)
