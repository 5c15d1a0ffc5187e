"""SharePoint: sites (:mod:`.sites`), lists and list items (:mod:`.lists`), and the group and site document libraries.

Paths: ``/sites``, ``/sites/{any site form}[/lists/...|/drive/...|/drives]``, ``/groups/{id}/sites/root[/...]``,
``/groups/{id}/drive[/...]`` and ``/groups/{id}/drives``. A library is a drive of the drive family
(:mod:`syncer.emulator.families.drive`): the same items, delta and subscriptions on ``/drives/{id}/root``
(https://learn.microsoft.com/graph/api/drive-get). Whether Graph accepts ``/groups/{id}/drive/root`` or
``/sites/{id}/drive/root`` as a subscription resource is undocumented: refused unless
``EmulatorConfig.library_path_subscriptions`` (the documented way is to resolve the drive id first).

Admin: ``POST /_emulator/sites {"name": "ops", "displayName"?, "tenantId"?}`` makes a site (Graph cannot with
application permissions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state, json_body, json_response, reject_query
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families import drive as drive_family
from syncer.emulator.families.sharepoint import lists as lists_mod
from syncer.emulator.families.sharepoint.sites import (
    SITE,
    SITES_READ,
    create_site,
    group_drive,
    group_site,
    hostname,
    resolve_site,
    root_site,
    site_drive,
    sites_of,
)
from syncer.emulator.identity import require_app
from syncer.emulator.resources import Family
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("sharepoint", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("sharepoint_admin", __name__, url_prefix="/_emulator")

_METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT"]


def _tenant() -> tuple[EmulatorState, TenantStore]:
    state = emulator_state()
    ctx = require_app(family="drive")
    return state, state.store.tenant(ctx.tenant_id)


def _site_json(site: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.context": f"{base_url()}/v1.0/$metadata#sites/$entity", **site}


@bp.get("/sites")
def list_sites() -> Response:
    """GET /sites: every site of the tenant (https://learn.microsoft.com/graph/api/site-list)."""
    require_app(*SITES_READ, family="drive")
    state, ts = _tenant()
    reject_query(SITE, {"$select", "$search", "$filter", "$top"})
    root_site(state, ts)
    with state.lock:
        values = [dict(site) for _, site in sites_of(ts).iter_live()]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#sites", "value": values})


@bp.route("/sites/<path:rest>", methods=_METHODS)
def sites(rest: str) -> Response:
    """Everything under /sites/{site}."""
    state, ts = _tenant()
    site, tail = resolve_site(state, ts, [s for s in rest.split("/") if s])
    return _serve_site(state, ts, site, tail)


@bp.route("/groups/<gid>/sites/<path:rest>", methods=_METHODS)
def group_sites(gid: str, rest: str) -> Response:
    """/groups/{id}/sites/root[/...]: the group's team site."""
    state, ts = _tenant()
    segs = [s for s in rest.split("/") if s]
    if not segs or segs[0].lower() != "root":
        raise GraphHTTPError(400, "invalidRequest", f"Resource not found for the segment '{segs[0] if segs else ''}'.")
    require_app(*SITES_READ, family="drive")
    return _serve_site(state, ts, group_site(state, ts, gid), segs[1:])


def _serve_site(state: EmulatorState, ts: TenantStore, site: dict[str, Any], tail: list[str]) -> Response:
    low = [s.lower() for s in tail]
    if not tail:
        require_app(*SITES_READ, family="drive")
        if request.method != "GET":
            raise GraphHTTPError(405, "invalidRequest", f"The method {request.method} is not supported on this resource.")
        return json_response(_site_json(site))
    if low[0] == "lists":
        return lists_mod.serve_lists(state, ts, site, tail[1:])
    if low[0] == "drive":
        did = site_drive(ts, site)
        return drive_family.dispatch(did, tail[1:], link_base=f"sites/{site['id']}/drive", raw_rest="/".join(tail[1:]))
    if low == ["drives"]:
        require_app(*drive_family.DRIVE_ITEM.read_roles, family="drive")
        return _drives([site_drive(ts, site)])
    if low == ["sites"]:
        require_app(*SITES_READ, family="drive")
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#sites", "value": []})
    raise GraphHTTPError(400, "invalidRequest", f"Resource not found for the segment '{tail[0]}'.")


def _drives(ids: list[str]) -> Response:
    state = emulator_state()
    ts = state.store.tenant(require_app(family="drive").tenant_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives",
                          "value": [drive_family.drive_json(ts, did) for did in ids]})


@bp.route("/groups/<gid>/drive", methods=["GET"])
@bp.route("/groups/<gid>/drive/<path:rest>", methods=_METHODS)
def group_library(gid: str, rest: str = "") -> Response:
    """/groups/{id}/drive: the group's document library (https://learn.microsoft.com/graph/api/drive-get)."""
    state, ts = _tenant()
    require_app(*(drive_family.DRIVE_ITEM.read_roles if request.method == "GET" else drive_family.DRIVE_ITEM.write_roles),
                family="drive")
    did = group_drive(state, ts, gid)
    return drive_family.dispatch(did, [s for s in rest.split("/") if s], link_base=f"groups/{gid}/drive", raw_rest=rest)


@bp.get("/groups/<gid>/drives")
def group_libraries(gid: str) -> Response:
    """/groups/{id}/drives."""
    state, ts = _tenant()
    require_app(*drive_family.DRIVE_ITEM.read_roles, family="drive")
    return _drives([group_drive(state, ts, gid)])


@admin_bp.post("/sites")
def admin_create_site() -> Response:
    """Make a site at /sites/{name} (the test harness's stand-in for the SharePoint admin centre)."""
    state = emulator_state()
    body = json_body()
    name = body.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise GraphHTTPError(400, "BadRequest", "'name' is required (one path segment).")
    ts = state.store.tenant(str(body.get("tenantId") or state.config.tenant_id))
    root_site(state, ts)
    return json_response(create_site(state, ts, name=name, display_name=body.get("displayName")), 201)


def admit_library_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                               body: dict[str, Any]) -> ParsedResource:
    """``/groups/{id}/drive/root`` or ``/sites/{id}/drive/root`` as a resource: undocumented (only ``/drives/{id}/root``
    and ``/users/{id}/drive/root`` are), so refused unless configured; when accepted, the drive's root is meant."""
    resource = str(body.get("resource", ""))
    if not state.config.library_path_subscriptions:
        raise GraphHTTPError(400, "ExtensionError", "Operation: Create; Exception: [Status Code: BadRequest; Reason: "
                             f"The value '{resource}' of parameter 'Resource' is invalid.]")
    kind, key = parsed.key.split("/")[0], parsed.ids[0]
    if kind == "groups":
        did = group_drive(state, ts, key)
    else:
        site, _ = resolve_site(state, ts, [key])
        did = site_drive(ts, site)
    return ParsedResource(spec=parsed.spec, key=f"drives/{did}/root".lower(), ids=(did,), mailbox=None, select=None,
                          query=parsed.query)


def seed_list_items(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* items per user in the list "Issues" (Title, Status) of the site /sites/seeded (no notifications)."""
    root_site(state, ts)
    host_path = [f"{hostname(state, ts.tenant_id)}:", "sites", "seeded"]
    try:
        site, _ = resolve_site(state, ts, host_path)
    except GraphHTTPError:
        site = create_site(state, ts, name="seeded", display_name="Seeded")
    try:
        lst = lists_mod.find_list(state, ts, site, "Issues")
    except GraphHTTPError:
        lst = lists_mod.create_list(state, ts, site, {"displayName": "Issues", "columns": [
            {"name": "Status", "choice": {"choices": ["Open", "Closed"]}}, {"name": "ReportedBy", "text": {}}]})
    for i in range(count):
        lists_mod.create_item(state, ts, site, lst, {"Title": f"Issue {i} of {uid[:8]}",
                                                     "Status": "Open" if i % 2 == 0 else "Closed", "ReportedBy": uid},
                              notify=False)


SUBSCRIBABLE_LIBRARY_ROOT = SubscribableResource(
    resource_type="driveItem",
    shapes=(("groups", "*", "drive", "root"), ("sites", "*", "drive", "root")),
    change_types=drive_family.SUBSCRIBABLE_DRIVE_ROOT.change_types,
    max_minutes=drive_family.SUBSCRIBABLE_DRIVE_ROOT.max_minutes,
    max_minutes_rich=None,
    permissions=drive_family.SUBSCRIBABLE_DRIVE_ROOT.permissions,
    rich_refusal=drive_family.SUBSCRIBABLE_DRIVE_ROOT.rich_refusal,
    quota="none",
    reported_as_updated=drive_family.SUBSCRIBABLE_DRIVE_ROOT.reported_as_updated,
    admit=admit_library_subscription,
)

FAMILY = Family(
    name="sharepoint",
    resource_types=(SITE, lists_mod.LIST, lists_mod.LIST_ITEM),
    blueprints=(bp, admin_bp),
    subscribable=(lists_mod.SUBSCRIBABLE_LIST, SUBSCRIBABLE_LIBRARY_ROOT),
    seeders={"listItemsPerUser": seed_list_items},
)
