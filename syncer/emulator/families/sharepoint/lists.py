"""SharePoint lists, their columns and items: read and write API, listItem delta, list subscriptions.

* Lists: ``GET/POST /sites/{site}/lists``, ``GET /sites/{site}/lists/{list}`` (by GUID or display name),
  ``/columns``, ``$expand=columns`` (https://learn.microsoft.com/graph/api/list-create, .../list-get).
* Items: ``GET .../items`` and ``.../items/{id}`` with ``$expand=fields`` (or ``fields($select=A,B)``),
  ``POST .../items {"fields": {...}}``, ``PATCH .../items/{id}/fields``, ``DELETE .../items/{id}``
  (https://learn.microsoft.com/graph/api/listitem-create, .../listitem-update, .../listitem-delete). Fields the list
  has no column for are a 400; empty columns are left out of ``fields`` (as Graph does).
* Delta: ``GET .../items/delta`` (https://learn.microsoft.com/graph/api/listitem-delta): ``token=latest``, links with
  ``?token=``, deletions as the ``deleted`` facet with ``id``, ``parentReference.siteId`` and ``contentType`` only,
  ``$expand=fields`` carried by the links; an expired or reset token is 410 with a Location.
* Subscriptions on ``/sites/{site}/lists/{list}``: ``updated`` only, no rich notifications; each change is a shoulder
  tap (``resourceData`` null, no item id) and may come several times (``EmulatorConfig.list_notification_burst``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from flask import Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, json_body, json_response, no_content, reject_query
from syncer.emulator.changelog import Collection
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.sharepoint.sites import (
    SITES_MANAGE,
    SITES_READ,
    SITES_WRITE,
    group_site,
    resolve_site,
)
from syncer.emulator.identity import require_app
from syncer.emulator.resources import DeltaSpec, ResourceType
from syncer.emulator.store import ChangeEvent, TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource, split_segments

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

LIST = ResourceType(
    name="list",
    odata_type="#microsoft.graph.list",
    notification_type="#Microsoft.Graph.List",
    collection="sites/{site}/lists",
    family="drive",
    read_roles=SITES_READ,
    write_roles=SITES_MANAGE,
    properties=("id", "createdDateTime", "description", "displayName", "eTag", "lastModifiedDateTime", "list",
                "name", "parentReference", "webUrl", "columns"),
    read_only=frozenset({"id", "createdDateTime", "eTag", "lastModifiedDateTime", "name", "parentReference", "webUrl"}),
    required_on_create=("displayName",),
    index_by_id=False,
)


def _list_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    """An item's change is a change of its list (the only path a subscription can name)."""
    return [f"sites/{col.parents['site']}/lists/{col.parents['list']}".lower()]


LIST_ITEM = ResourceType(
    name="listItem",
    odata_type="#microsoft.graph.listItem",
    notification_type="#Microsoft.Graph.ListItem",
    collection="sites/{site}/lists/{list}/items",
    family="drive",
    read_roles=SITES_READ,
    write_roles=SITES_WRITE,
    properties=("id", "contentType", "createdBy", "createdDateTime", "deleted", "eTag", "fields",
                "lastModifiedBy", "lastModifiedDateTime", "parentReference", "sharepointIds", "webUrl"),
    # listItem delta page sizes: undocumented [guess: as driveItem].
    delta=DeltaSpec(default_page=200, max_page=1000),
    list_default_page=200,
    list_max_page=1000,
    notification_resource="sites/{site}/lists/{list}",
    event_collections=_list_collections,
    notification_resource_data=False,
    index_by_id=False,
)

#: Column kinds list-create accepts (https://learn.microsoft.com/graph/api/resources/columndefinition).
COLUMN_KINDS = ("text", "number", "boolean", "dateTime", "choice", "currency", "personOrGroup", "lookup",
                "hyperlinkOrPicture", "calculated")
#: Fields SharePoint maintains itself: never writable.
SYSTEM_FIELDS = frozenset({"id", "ContentType", "Created", "Modified", "AuthorLookupId", "EditorLookupId",
                           "_UIVersionString", "Attachments", "Edit", "LinkTitle", "LinkTitleNoMenu",
                           "ItemChildCount", "FolderChildCount", "DocIcon"})
ITEM_CONTENT_TYPE = {"id": "0x0100D7A6D3C2E0E14F4C8B0C1D2E3F405060", "name": "Item"}


def _bad(message: str) -> GraphHTTPError:
    return GraphHTTPError(400, "invalidRequest", message)


def _list_not_found() -> GraphHTTPError:
    return GraphHTTPError(404, "itemNotFound", "List does not exist.")


def _method() -> GraphHTTPError:
    return GraphHTTPError(405, "invalidRequest", f"The method {request.method} is not supported on this resource.")


def lists_of(ts: TenantStore, site: dict[str, Any]) -> Collection:
    """A site's list collection."""
    return ts.collection(LIST, {"site": str(site["id"])})


def find_list(state: EmulatorState, ts: TenantStore, site: dict[str, Any], key: str) -> dict[str, Any]:
    """A site's list by GUID, display name or name (case-insensitive); 404 if none."""
    wanted = unquote(key).lower()
    with state.lock:
        for _, lst in lists_of(ts, site).iter_live():
            if wanted in (str(lst["id"]).lower(), str(lst["displayName"]).lower(), str(lst["name"]).lower()):
                return lst
    raise _list_not_found()


def items_of(ts: TenantStore, site: dict[str, Any], lst: dict[str, Any]) -> Collection:
    """A list's item collection."""
    return ts.collection(LIST_ITEM, {"site": str(site["id"]), "list": str(lst["id"])})


def _column(state: EmulatorState, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
        raise _bad("A column needs a 'name'.")
    kinds = [k for k in COLUMN_KINDS if k in spec]
    if len(kinds) > 1:
        raise _bad(f"Column '{spec['name']}' has more than one type.")
    kind = kinds[0] if kinds else "text"
    known = {"name", "displayName", "description", "required", "hidden", "indexed", "readOnly", "enforceUniqueValues",
             "columnGroup", *COLUMN_KINDS}
    for name in spec:
        if name not in known:
            raise _bad(f"The property '{name}' does not exist on type 'microsoft.graph.columnDefinition'.")
    return {"id": state.store.new_guid(), "name": spec["name"], "displayName": spec.get("displayName") or spec["name"],
            "description": spec.get("description", ""), "columnGroup": spec.get("columnGroup", "Custom Columns"),
            "required": bool(spec.get("required", False)), "hidden": False, "indexed": bool(spec.get("indexed", False)),
            "readOnly": False, "enforceUniqueValues": False, kind: spec.get(kind) or {}}


def _title_column(state: EmulatorState) -> dict[str, Any]:
    return {"id": "fa564e0f-0c70-4ab9-b863-0177e6ddd247", "name": "Title", "displayName": "Title", "description": "",
            "columnGroup": "Custom Columns", "required": True, "hidden": False, "indexed": False, "readOnly": False,
            "enforceUniqueValues": False, "text": {"allowMultipleLines": False, "maxLength": 255}}


def create_list(state: EmulatorState, ts: TenantStore, site: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A new list with the Title column and *body*'s columns (https://learn.microsoft.com/graph/api/list-create)."""
    columns_spec = body.pop("columns", []) or []
    if not isinstance(columns_spec, list):
        raise _bad("'columns' must be an array.")
    for name in body:
        if name.startswith("@odata.") or name in ("displayName", "description", "list"):
            continue
        if LIST.canonical(name) is None:
            raise _bad(f"The property '{name}' does not exist on type 'microsoft.graph.list'.")
        raise _bad(f"Property '{name}' is read-only and cannot be set.")
    display = body.get("displayName")
    if not isinstance(display, str) or not display.strip():
        raise _bad("Invalid value specified for property 'displayName' of resource 'List'.")
    columns = [_title_column(state)] + [_column(state, c) for c in columns_spec]
    names = [c["name"].lower() for c in columns]
    if len(names) != len(set(names)):
        raise _bad("Column names must be unique.")
    col = lists_of(ts, site)
    with state.lock:
        for _, existing in col.iter_live():
            if str(existing["displayName"]).lower() == display.lower():
                raise GraphHTTPError(409, "nameAlreadyExists", "A list, survey, discussion board, or document library "
                                     "with the specified title already exists in this Web site.")
        list_id = state.store.new_guid()
        now = state.store.now_iso()
        template = (body.get("list") or {}).get("template", "genericList") if isinstance(body.get("list"), dict) else "genericList"
        name = re.sub(r"[^A-Za-z0-9]", "", display) or list_id
        lst = {"id": list_id, "name": name, "displayName": display, "description": body.get("description", ""),
               "createdDateTime": now, "lastModifiedDateTime": now, "eTag": f'"{list_id},0"',
               "webUrl": f"{site['webUrl']}/Lists/{name}",
               "list": {"template": template, "hidden": False, "contentTypesEnabled": False},
               "parentReference": {"siteId": site["id"]}, "columns": columns}
        state.store.put(col, list_id, lst, change_type="created", notify=False)
    return lst


def _list_json(lst: dict[str, Any], *, expand_columns: bool) -> dict[str, Any]:
    out = {k: v for k, v in lst.items() if k != "columns"}
    if expand_columns:
        out["columns"] = lst["columns"]
    return out


# --- field values --------------------------------------------------------------------------------------------


def _check_fields(lst: dict[str, Any], fields: Any) -> dict[str, Any]:
    """Canonical column names for a write; 400 for unknown, system or ill-typed values."""
    if not isinstance(fields, dict):
        raise _bad("'fields' must be an object.")
    by_name = {str(c["name"]).lower(): c for c in lst["columns"]}
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name.startswith("@odata."):
            continue
        if name in SYSTEM_FIELDS:
            raise _bad(f"Field '{name}' is read-only")
        column = by_name.get(name.lower())
        if column is None:
            raise _bad(f"Field '{name}' is not recognized")
        if value is not None:
            if "number" in column or "currency" in column:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif "boolean" in column:
                ok = isinstance(value, bool)
            elif "choice" in column:
                choices = (column["choice"] or {}).get("choices")
                ok = isinstance(value, str) and (not choices or value in choices
                                                 or bool((column["choice"] or {}).get("allowTextEntry")))
            else:
                ok = isinstance(value, (str, int, float, bool))
            if not ok:
                raise _bad(f"Invalid value for field '{column['name']}'.")
        out[str(column["name"])] = value
    return out


def _item_body(state: EmulatorState, site: dict[str, Any], lst: dict[str, Any], item_id: str,
               fields: dict[str, Any], *, created: str, version: int) -> dict[str, Any]:
    now = state.store.now_iso()
    guid = f"{int(item_id):08x}-0000-4000-8000-{str(lst['id'])[-12:]}"
    values = {k: v for k, v in fields.items() if v not in (None, "")}  # empty columns are left out [OBS]
    author = {"user": {"displayName": "emulator"}}
    return {
        "@odata.etag": f'"{guid},{version}"',
        "id": item_id, "eTag": f'"{guid},{version}"', "createdDateTime": created, "lastModifiedDateTime": now,
        "webUrl": f"{lst['webUrl']}/DispForm.aspx?ID={item_id}",
        "createdBy": author, "lastModifiedBy": author,
        "contentType": dict(ITEM_CONTENT_TYPE),
        "parentReference": {"id": str(lst["id"]), "siteId": site["sharepointIds"]["siteId"]},
        "sharepointIds": {"listId": lst["id"], "listItemId": item_id, "listItemUniqueId": guid,
                          "siteId": site["sharepointIds"]["siteId"], "webId": site["sharepointIds"]["webId"]},
        "fields": {"@odata.etag": f'"{guid},{version}"', "id": item_id, "ContentType": "Item", "Created": created,
                   "Modified": now, "_UIVersionString": f"{version}.0", "Attachments": False, **values},
    }


def _user_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item["fields"].items() if k not in SYSTEM_FIELDS and not k.startswith("@")}


def _commit(state: EmulatorState, col: Collection, item_id: str, item: dict[str, Any] | None, *,
            notify: bool = True) -> None:
    """Write (or delete, *item* None) and tell the subscriptions, as many times as SharePoint would."""
    with state.lock:
        if item is None:
            state.store.remove(col, item_id, reason="deleted", notify=False)
        else:
            state.store.put(col, item_id, item, change_type="updated", notify=False)
        event: ChangeEvent = state.store.event_for(col, item_id, "deleted" if item is None else "updated", item)
    if not notify:
        return
    # One action can yield several shoulder taps (https://github.com/microsoftgraph/microsoft-graph-docs/issues/7637).
    state.store.notify([event] * max(1, state.config.list_notification_burst))


def create_item(state: EmulatorState, ts: TenantStore, site: dict[str, Any], lst: dict[str, Any],
                fields: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    """A new list item (ids count up per list, as SharePoint's do)."""
    values = _check_fields(lst, fields)
    for column in lst["columns"]:
        if column.get("required") and values.get(column["name"]) in (None, "") and column["name"] != "Title":
            raise _bad(f"Field '{column['name']}' is required.")
    col = items_of(ts, site, lst)
    with state.lock:
        counter_key = (str(lst["id"]).lower(), "next-item")
        item_id = ts.well_known.get(counter_key, "1")
        ts.well_known[counter_key] = str(int(item_id) + 1)
        item = _item_body(state, site, lst, item_id, values, created=state.store.now_iso(), version=1)
    _commit(state, col, item_id, item, notify=notify)
    return item


def update_item(state: EmulatorState, ts: TenantStore, site: dict[str, Any], lst: dict[str, Any], item_id: str,
                fields: dict[str, Any]) -> dict[str, Any]:
    """PATCH .../items/{id}/fields: merge, new version."""
    values = _check_fields(lst, fields)
    col = items_of(ts, site, lst)
    with state.lock:
        item = col.get(item_id)
        if item is None:
            raise GraphHTTPError(404, "itemNotFound", "The resource could not be found.")
        merged = {**_user_fields(item), **values}
        version = int(str(item["fields"]["_UIVersionString"]).split(".")[0]) + 1
        updated = _item_body(state, site, lst, item_id, merged, created=str(item["createdDateTime"]), version=version)
    _commit(state, col, item_id, updated)
    return updated


def delete_item(state: EmulatorState, ts: TenantStore, site: dict[str, Any], lst: dict[str, Any], item_id: str) -> None:
    """DELETE .../items/{id}."""
    col = items_of(ts, site, lst)
    with state.lock:
        if col.get(item_id) is None:
            raise GraphHTTPError(404, "itemNotFound", "The resource could not be found.")
    _commit(state, col, item_id, None)


# --- rendering ------------------------------------------------------------------------------------------------

_EXPAND_RE = re.compile(r"^\s*fields\s*(?:\(\s*\$select\s*=\s*(?P<select>[^)]*)\))?\s*$", re.IGNORECASE)


def parse_expand(raw: str | None) -> list[str] | None:
    """``$expand=fields`` / ``fields($select=A,B)`` -> ["fields", "A,B"]; None without; 400 for anything else."""
    if raw is None:
        return None
    match = _EXPAND_RE.match(raw)
    if match is None:
        raise _bad(f"Parsing OData Select and Expand failed: Could not find a property named '{raw}' on type "
                   "'microsoft.graph.listItem'.")
    return ["fields", match.group("select") or ""]


def render_item(item: dict[str, Any], expand: list[str] | None, select: list[str] | None = None) -> dict[str, Any]:
    """An item as Graph returns it: ``fields`` only when expanded (and only the selected columns)."""
    if "deleted" in item:
        return {k: item[k] for k in ("id", "parentReference", "contentType", "deleted") if k in item}
    out = {k: v for k, v in item.items() if k != "fields" and (select is None or k in select or k == "id")}
    if expand:
        fields = dict(item.get("fields") or {})
        wanted = [s.strip().lower() for s in expand[1].split(",") if s.strip()] if len(expand) > 1 else []
        if wanted:
            fields = {k: v for k, v in fields.items() if k.lower() in wanted or k in ("id", "@odata.etag")}
        out["fields"] = fields
    return out


def items_delta(state: EmulatorState, col: Collection, link_path: str) -> Response:
    """GET .../items/delta: the shared delta engine, with ``$expand=fields`` carried by the links.

    The expansion travels in the token's option slot (the cursor's ``window``, which calendarView uses for its
    dates), so a client that follows the links gets the columns it asked for at the start of the round.
    """
    reject_query(LIST_ITEM, {"$select", "$top", "$expand", "$skiptoken", "$deltatoken"})
    token = request.args.get("token") or request.args.get("$skiptoken") or request.args.get("$deltatoken") or None
    latest = token is not None and token.lower() == "latest"
    if latest:
        token = None
    expand = parse_expand(request.args.get("$expand"))
    if token is not None:
        cursor = decode_token(state, token)
        if cursor is not None and cursor.key == col.key:
            expand = cursor.window or None
    response = delta_mod.run_delta(state, col, link_path=link_path, token=token, token_kind="drive", latest=latest,
                                   window=expand)
    if response.status_code != 200:
        return response
    body = orjson.loads(response.get_data())
    for index, value in enumerate(body.get("value", [])):
        if "deleted" in value:
            value = {**value, "contentType": value.get("contentType") or dict(ITEM_CONTENT_TYPE)}
        body["value"][index] = render_item(value, expand)
    response.set_data(orjson.dumps(body))
    return response


def _page(state: EmulatorState, values: list[dict[str, Any]], key: str, context: str) -> Response:
    """A plain list with $top paging (offset in a signed skiptoken)."""
    top = request.args.get("$top")
    size = 200
    offset = 0
    skip = request.args.get("$skiptoken")
    if skip is not None:
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != key:
            raise _bad("Invalid skip token.")
        offset, size = cursor.pos or 0, cursor.page
    elif top is not None:
        if not top.isdigit() or not 1 <= int(top) <= 5000:
            raise _bad(f"Invalid value '{top}' for $top query option.")
        size = int(top)
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#{context}", "value": values[offset:offset + size]}
    if offset + size < len(values):
        nxt = Cursor(key, 0, 0, offset + size, 0, state.clock.time(), None, size, None, True, False)
        query = "&".join(f"{k}={v}" for k, v in request.args.items() if k not in ("$skiptoken", "$top"))
        body["@odata.nextLink"] = f"{base_url()}{request.path}?{query + '&' if query else ''}$skiptoken={encode_token(state, nxt)}"
    return json_response(body)


# --- views ----------------------------------------------------------------------------------------------------


def serve_lists(state: EmulatorState, ts: TenantStore, site: dict[str, Any], rest: list[str]) -> Response:
    """Everything below ``/sites/{site}/lists``."""
    method = request.method
    col = lists_of(ts, site)
    if not rest:
        if method == "GET":
            require_app(*SITES_READ, family="drive")
            reject_query(LIST, {"$select", "$top", "$skiptoken", "$expand"})
            expand = (request.args.get("$expand") or "").strip().lower() == "columns"
            with state.lock:
                values = [_list_json(lst, expand_columns=expand) for _, lst in col.iter_live()]
            return _page(state, values, f"lists:{col.key}", f"sites('{site['id']}')/lists")
        if method == "POST":
            require_app(*SITES_MANAGE, family="drive")
            lst = create_list(state, ts, site, json_body())
            return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#sites('{site['id']}')/lists/$entity",
                                  **_list_json(lst, expand_columns=True)}, 201)
        raise _method()
    require_app(*(SITES_READ if method == "GET" else SITES_WRITE), family="drive")
    lst = find_list(state, ts, site, rest[0])
    tail = [s.lower() for s in rest[1:]]
    if not tail:
        if method != "GET":
            raise _method()
        expand = (request.args.get("$expand") or "").strip().lower() == "columns"
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#sites('{site['id']}')/lists/$entity",
                              **_list_json(lst, expand_columns=expand)})
    if tail == ["columns"]:
        if method != "GET":
            raise _method()
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#columns", "value": lst["columns"]})
    if tail[0] != "items":
        raise _bad(f"Resource not found for the segment '{rest[1]}'.")
    items = items_of(ts, site, lst)
    if tail == ["items", "delta"]:
        if method != "GET":
            raise _method()
        return items_delta(state, items, f"sites/{site['id']}/lists/{lst['id']}/items/delta")
    if tail == ["items"]:
        if method == "GET":
            reject_query(LIST_ITEM, {"$select", "$top", "$skiptoken", "$expand"})
            item_expand = parse_expand(request.args.get("$expand"))
            select = delta_mod.parse_select(LIST_ITEM, request.args.get("$select"))
            with state.lock:
                values = [render_item(item, item_expand, select) for _, item in items.iter_live()]
            return _page(state, values, f"items:{items.key}", f"sites('{site['id']}')/lists('{lst['id']}')/items")
        if method == "POST":
            body = json_body()
            unknown = [k for k in body if k != "fields" and not k.startswith("@odata.")]
            if unknown:
                raise _bad(f"The property '{unknown[0]}' does not exist on type 'microsoft.graph.listItem'.")
            item = create_item(state, ts, site, lst, body.get("fields") or {})
            return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#sites('{site['id']}')/lists('{lst['id']}')/items/$entity",
                                  **render_item(item, ["fields", ""])}, 201)
        raise _method()
    item_id = rest[2]
    if tail[2:] == ["fields"] or tail[2:] == []:
        if method == "GET":
            with state.lock:
                found = items.get(item_id)
            if found is None:
                raise GraphHTTPError(404, "itemNotFound", "The resource could not be found.")
            if tail[2:] == ["fields"]:
                return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#fieldValueSet/$entity", **found["fields"]})
            return json_response(render_item(found, parse_expand(request.args.get("$expand")),
                                             delta_mod.parse_select(LIST_ITEM, request.args.get("$select"))))
        if method == "PATCH":
            body = json_body()
            if tail[2:] == ["fields"]:
                item = update_item(state, ts, site, lst, item_id, body)
                return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#fieldValueSet/$entity", **item["fields"]})
            unknown = [k for k in body if k != "fields" and not k.startswith("@odata.")]
            if unknown:
                raise _bad(f"Property '{unknown[0]}' is read-only and cannot be set.")
            item = update_item(state, ts, site, lst, item_id, body.get("fields") or {})
            return json_response(render_item(item, ["fields", ""]))
        if method == "DELETE" and tail[2:] == []:
            delete_item(state, ts, site, lst, item_id)
            return no_content()
        raise _method()
    raise _bad(f"Resource not found for the segment '{rest[3]}'.")


# --- subscriptions --------------------------------------------------------------------------------------------


def admit_list_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                            body: dict[str, Any]) -> ParsedResource:
    """The list must exist (any site form, list by GUID or name); the key becomes its canonical path.

    No ``$filter`` and no ``notificationQueryOptions`` [OBS: https://github.com/microsoftgraph/microsoft-graph-docs/issues/18955;
    the refusal's code is a guess].
    """
    if body.get("notificationQueryOptions") or "$filter" in parsed.query:
        raise GraphHTTPError(400, "InvalidRequest", "Filtering is not supported for list subscriptions.")
    segments, _ = split_segments(str(body.get("resource", "")))
    try:
        if segments[0].lower() == "groups":
            site, rest = group_site(state, ts, segments[1]), segments[4:]
        else:
            site, rest = resolve_site(state, ts, segments[1:])
    except GraphHTTPError:
        raise GraphHTTPError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; "
                             "Reason: The specified site was not found.]") from None
    if len(rest) != 2 or rest[0].lower() != "lists":
        raise GraphHTTPError(400, "ExtensionError",
                             f"Operation: Create; Exception: [Status Code: BadRequest; Reason: The value '{body.get('resource')}' "
                             "of parameter 'Resource' is invalid.]")
    try:
        lst = find_list(state, ts, site, rest[1])
    except GraphHTTPError:
        raise GraphHTTPError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; "
                             "Reason: The specified list was not found.]") from None
    key = f"sites/{site['id']}/lists/{lst['id']}".lower()
    return ParsedResource(spec=parsed.spec, key=key, ids=parsed.ids, mailbox=None, select=None, query=parsed.query)


SUBSCRIBABLE_LIST = SubscribableResource(
    resource_type="listItem",
    shapes=(("sites", "*", "lists", "*"), ("sites", "*", "sites", "*", "lists", "*"), ("sites", "*", "*", "lists", "*"),
            ("groups", "*", "sites", "root", "lists", "*")),
    change_types=frozenset({"updated"}),
    max_minutes=42_300,
    max_minutes_rich=None,
    # https://learn.microsoft.com/graph/api/subscription-post-subscriptions (the 2025 table says Sites.ReadWrite.All
    # while the create page says Sites.Read.All: both are accepted).
    permissions=("Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"),
    rich_refusal="SharePoint list subscriptions do not support rich notifications.",
    quota="none",
    reported_as_updated=frozenset({"created", "deleted", "softDeleted"}),
    admit=admit_list_subscription,
)
