"""SharePoint sites: the records, and every way Graph lets a path name one.

A site's canonical id is ``{hostname},{site-collection-guid},{web-guid}`` (https://learn.microsoft.com/graph/api/resources/site);
``/sites/`` also accepts ``root``, the bare hostname, ``{hostname}:/{server-relative-path}``
(https://learn.microsoft.com/graph/api/site-getbypath), the composite id with one or two GUIDs, the site collection
GUID alone, and a multi-geo code (``NAM``, ``EUR``...); ``/groups/{id}/sites/root`` names a group's team site
(https://learn.microsoft.com/graph/api/site-get). GUIDs compare case-insensitively (the documentation's samples differ in
case). Every response carries the composite id, which is also the key of the site's collections here.

Sites cannot be created through Graph with application permissions; tests make them with ``POST /_emulator/sites``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import groups_of
from syncer.emulator.families.drive import new_drive
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

#: Read: https://learn.microsoft.com/graph/api/site-get; list item writes need ReadWrite, list creation Manage.
SITES_READ = frozenset({"Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"})
SITES_WRITE = frozenset({"Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"})
SITES_MANAGE = frozenset({"Sites.Manage.All", "Sites.FullControl.All"})

#: Multi-geo satellite codes ``/sites/{geo}`` accepts (https://learn.microsoft.com/sharepoint/dev/solution-guidance/multigeo-discovery).
GEO_CODES = frozenset({"APC", "AUS", "BRA", "CAN", "CHE", "DEU", "EUR", "FRA", "GBR", "IND", "JPN", "KOR", "NAM",
                       "NOR", "QAT", "ARE", "SWE", "ZAF", "ESP", "POL", "ITA"})

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

SITE = ResourceType(
    name="site",
    odata_type="#microsoft.graph.site",
    notification_type="#Microsoft.Graph.Site",
    collection="sites",
    family="drive",
    read_roles=SITES_READ,
    write_roles=SITES_MANAGE,
    properties=("id", "createdDateTime", "description", "displayName", "lastModifiedDateTime", "name", "root",
                "sharepointIds", "siteCollection", "webUrl"),
    index_by_id=False,
)


def site_not_found() -> GraphHTTPError:
    """SharePoint's 404 for a site (https://learn.microsoft.com/graph/errors)."""
    return GraphHTTPError(404, "itemNotFound", "Requested site could not be found")


def hostname(state: EmulatorState, tenant_id: str) -> str:
    """The tenant's SharePoint host: ``contoso.onmicrosoft.com`` -> ``contoso.sharepoint.com``."""
    domain = state.tenants[tenant_id].domain if tenant_id in state.tenants else state.config.tenant_domain
    return f"{domain.split('.')[0]}.sharepoint.com"


def sites_of(ts: TenantStore) -> Any:
    """The tenant's site collection."""
    return ts.collection(SITE)


def _path_of(site: dict[str, Any]) -> str:
    """The server-relative path ("/" for the root site, "/sites/ops")."""
    url = str(site["webUrl"])
    path = url.split(".sharepoint.com", 1)[1] if ".sharepoint.com" in url else "/"
    return path or "/"


def create_site(state: EmulatorState, ts: TenantStore, *, name: str, display_name: str | None = None,
                root: bool = False, group_id: str | None = None) -> dict[str, Any]:
    """A new site (its default document library made with it); 409 if the path is taken."""
    host = hostname(state, ts.tenant_id)
    path = "/" if root else f"/sites/{name}"
    with state.lock:
        col = sites_of(ts)
        for _, existing in col.iter_live():
            if _path_of(existing).lower() == path.lower():
                raise GraphHTTPError(409, "nameAlreadyExists", f"A site already exists at '{path}'.")
        collection_id, web_id = state.store.new_guid(), state.store.new_guid()
        site_id = f"{host},{collection_id},{web_id}"
        now = state.store.now_iso()
        url = f"https://{host}" + ("" if root else path)
        site: dict[str, Any] = {
            "id": site_id, "name": "" if root else name, "displayName": display_name or ("Communication site" if root else name),
            "description": "", "webUrl": url, "createdDateTime": now, "lastModifiedDateTime": now,
            "siteCollection": {"hostname": host},
            "sharepointIds": {"siteId": collection_id, "webId": web_id, "siteUrl": url},
        }
        if root:
            site["root"] = {}
        state.store.put(col, site_id, site, change_type="created", notify=False)
        drive_id = new_drive(state, ts, library_of=("group", group_id) if group_id else ("site", site_id))
        ts.well_known[(site_id.lower(), "drive")] = drive_id
        if group_id is not None:
            ts.well_known[(group_id.lower(), "site")] = site_id
            ts.well_known[(group_id.lower(), "drive")] = drive_id
    return site


def root_site(state: EmulatorState, ts: TenantStore) -> dict[str, Any]:
    """The tenant's root site (``/sites/root``), made on first use."""
    with state.lock:
        for _, site in sites_of(ts).iter_live():
            if "root" in site:
                return site
        return create_site(state, ts, name="", display_name="Communication site", root=True)


def group_site(state: EmulatorState, ts: TenantStore, group_id: str) -> dict[str, Any]:
    """A group's team site (``/groups/{id}/sites/root``), made on first use; 404 when the group does not exist."""
    with state.lock:
        group = groups_of(ts).get(group_id.lower())
        if group is None:
            raise GraphHTTPError(404, "Request_ResourceNotFound",
                                 f"Resource '{group_id}' does not exist or one of its queried reference-property objects are not present.")
        known = ts.well_known.get((str(group["id"]).lower(), "site"))
        if known is not None:
            site = sites_of(ts).get(known)
            if site is not None:
                return dict(site)
        nickname = str(group.get("mailNickname") or group["id"])
        taken = {_path_of(site).lower() for _, site in sites_of(ts).iter_live()}
        name, n = nickname, 1
        while f"/sites/{name}".lower() in taken:  # SharePoint numbers a URL that is taken
            n += 1
            name = f"{nickname}{n}"
        return create_site(state, ts, name=name, display_name=str(group.get("displayName") or nickname),
                           group_id=str(group["id"]))


def group_drive(state: EmulatorState, ts: TenantStore, group_id: str) -> str:
    """The id of a group's document library (its team site's default drive)."""
    group_site(state, ts, group_id)
    group = groups_of(ts).get(group_id.lower())
    assert group is not None
    return ts.well_known[(str(group["id"]).lower(), "drive")]


def site_drive(ts: TenantStore, site: dict[str, Any]) -> str:
    """The id of a site's default document library."""
    return ts.well_known[(str(site["id"]).lower(), "drive")]


def resolve_site(state: EmulatorState, ts: TenantStore, segs: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The site named by the first segment(s) after ``sites/`` and the segments left over; 404 if none."""
    if not segs:
        raise site_not_found()
    head = segs[0]
    low = head.lower()
    host = hostname(state, ts.tenant_id)
    if low == "root" or low == host or head.upper() in GEO_CODES:
        return root_site(state, ts), segs[1:]
    if head.endswith(":"):
        # {hostname}:/{server-relative-path}[:/rest] (https://learn.microsoft.com/graph/api/site-getbypath)
        if head[:-1].lower() != host:
            raise site_not_found()
        path_parts: list[str] = []
        rest: list[str] = []
        for i, seg in enumerate(segs[1:], start=1):
            if seg.endswith(":"):
                path_parts.append(seg[:-1])
                rest = segs[i + 1:]
                break
            path_parts.append(seg)
        path = "/" + "/".join(p for p in path_parts if p)
        if path == "/":
            return root_site(state, ts), rest
        with state.lock:
            for _, site in sites_of(ts).iter_live():
                if _path_of(site).lower() == path.lower().rstrip("/"):
                    return dict(site), rest
        raise site_not_found()
    parts = [p.strip().lower() for p in head.split(",")]
    if parts[0] != host and _GUID.match(parts[0]):
        parts = [host, *parts]  # the site collection GUID alone, or GUID,GUID
    if parts[0] != host or len(parts) > 3 or not all(_GUID.match(p) for p in parts[1:]) or len(parts) < 2:
        raise site_not_found()
    root_site(state, ts)
    with state.lock:
        for _, site in sites_of(ts).iter_live():
            ids = site["sharepointIds"]
            if ids["siteId"].lower() == parts[1] and (len(parts) == 2 or ids["webId"].lower() == parts[2]):
                return dict(site), segs[1:]
    raise site_not_found()
