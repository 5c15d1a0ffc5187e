"""Security alerts, the legacy ``/security/alerts`` API (https://learn.microsoft.com/graph/api/resources/alert).

Read: ``GET /security/alerts`` (``$filter`` subset: ``eq``/``startswith`` joined by ``and`` or ``or``, ``$top``) and
``GET /security/alerts/{id}`` with SecurityEvents.Read.All; update: ``PATCH /security/alerts/{id}`` with
SecurityEvents.ReadWrite.All, ``vendorInformation`` required in the body (https://learn.microsoft.com/graph/api/alert-update).
Alerts are raised by security products, never by Graph clients: tests raise them with
``POST /_emulator/security/alerts {"title", "severity"?, "category"?, "status"?, "tenantId"?}``.

Subscriptions (https://learn.microsoft.com/graph/api/subscription-post-subscriptions): ``security/alerts/{id}`` or
``security/alerts?$filter=...`` with the filter in the resource; SecurityEvents.ReadWrite.All; at most 43,200 minutes;
no rich notifications. A filtered subscription hears only of alerts matching its filter after the change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    compile_filter,
    emulator_state,
    json_body,
    json_response,
    list_response,
    no_content,
    reject_query,
)
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import require_app
from syncer.emulator.resources import Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("security", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("security_admin", __name__, url_prefix="/_emulator")

READ = frozenset({"SecurityEvents.Read.All", "SecurityEvents.ReadWrite.All"})
WRITE = frozenset({"SecurityEvents.ReadWrite.All"})
#: ``well_known`` tag under which the filters of live subscriptions are remembered (their keys' matching set).
_FILTER_TAG = "alert-subscription-filter"


def _alert_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    """The alert's own path, the unfiltered collection, and every subscribed filter the alert now matches."""
    keys = ["security/alerts", f"security/alerts/{item_id}".lower()]
    item = col.get(item_id) or (col.removed.get(item_id) or ("", {}))[1]
    for (key, tag), text in list(ts.well_known.items()):
        if tag == _FILTER_TAG and item and compile_filter(ALERT, text)(item):
            keys.append(key)
    return keys


ALERT = ResourceType(
    name="alert",
    odata_type="#microsoft.graph.alert",
    notification_type="#Microsoft.Graph.alert",
    collection="security/alerts",
    family="security",
    read_roles=READ,
    write_roles=WRITE,
    properties=("id", "activityGroupName", "assignedTo", "azureSubscriptionId", "azureTenantId", "category",
                "closedDateTime", "comments", "confidence", "createdDateTime", "description", "detectionIds",
                "eventDateTime", "feedback", "lastModifiedDateTime", "recommendedActions", "riskScore", "severity",
                "sourceMaterials", "status", "tags", "title", "userStates", "hostStates", "vendorInformation"),
    read_only=frozenset({"id", "azureTenantId", "createdDateTime", "lastModifiedDateTime", "eventDateTime",
                         "severity", "title", "category", "userStates", "hostStates"}),
    list_default_page=1000,
    list_max_page=1000,
    notification_resource="security/alerts/{id}",
    event_collections=_alert_collections,
    index_by_id=False,
)

SEVERITIES = ("unknown", "informational", "low", "medium", "high")
STATUSES = ("unknown", "newAlert", "inProgress", "resolved")
FEEDBACK = ("unknown", "truePositive", "falsePositive", "benignPositive")


def _forbidden() -> GraphHTTPError:
    return GraphHTTPError(403, "Forbidden", "Insufficient privileges to perform requested operation by the application.")


def _require(roles: frozenset[str]) -> str:
    ctx = require_app()
    if not ctx.roles & roles:
        raise _forbidden()
    return ctx.tenant_id


def alerts_of(ts: TenantStore) -> Collection:
    """The tenant's alerts."""
    return ts.collection(ALERT)


def raise_alert(state: EmulatorState, ts: TenantStore, body: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    """A new alert from a security product (notifies ``created``)."""
    severity = body.get("severity", "medium")
    status = body.get("status", "newAlert")
    if severity not in SEVERITIES or status not in STATUSES:
        raise GraphHTTPError(400, "BadRequest", f"severity must be one of {SEVERITIES}, status one of {STATUSES}.")
    now = state.store.now_iso()
    alert_id = state.store.new_guid().replace("-", "").upper()
    alert: dict[str, Any] = {p: None for p in ALERT.properties}
    alert.update({
        "id": alert_id, "azureTenantId": ts.tenant_id, "title": str(body.get("title") or "Suspicious activity"),
        "description": body.get("description", ""), "category": body.get("category", "SuspiciousActivity"),
        "severity": severity, "status": status, "createdDateTime": now, "eventDateTime": now,
        "lastModifiedDateTime": now, "comments": [], "tags": [], "detectionIds": [], "recommendedActions": [],
        "sourceMaterials": [], "userStates": body.get("userStates", []), "hostStates": [], "feedback": None,
        "vendorInformation": body.get("vendorInformation") or {"provider": "Microsoft Defender for Endpoint",
                                                                "vendor": "Microsoft", "subProvider": None,
                                                                "providerVersion": "2.0"},
    })
    state.store.put(alerts_of(ts), alert_id, alert, change_type="created", notify=notify)
    return alert


def seed_alerts(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* new alerts naming the user in ``userStates`` (no notifications)."""
    for i in range(count):
        raise_alert(state, ts, {"title": f"Suspicious sign-in {i}", "severity": SEVERITIES[1 + i % 4],
                                "userStates": [{"aadUserId": uid, "accountName": None, "userPrincipalName": None}]},
                    notify=False)


@bp.get("/security/alerts")
def list_alerts() -> Response:
    """GET /security/alerts (https://learn.microsoft.com/graph/api/alert-list)."""
    state = emulator_state()
    ts = state.store.tenant(_require(READ))
    return list_response(state, alerts_of(ts), "security/alerts", allow_filter=True)


@bp.get("/security/alerts/<alert_id>")
def get_alert(alert_id: str) -> Response:
    """GET /security/alerts/{id}."""
    state = emulator_state()
    ts = state.store.tenant(_require(READ))
    reject_query(ALERT, {"$select"})
    with state.lock:
        alert = alerts_of(ts).get(alert_id)
    if alert is None:
        raise GraphHTTPError(404, "NotFound", f"Alert '{alert_id}' was not found.")
    select = delta_mod.parse_select(ALERT, request.args.get("$select"))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#security/alerts/$entity",
                          **delta_mod.project(ALERT, alert, select)})


@bp.patch("/security/alerts/<alert_id>")
def update_alert(alert_id: str) -> Response:
    """PATCH /security/alerts/{id}: status, assignedTo, comments, feedback, tags, closedDateTime; needs
    vendorInformation (provider and vendor) to route the update; 204, or 200 with ``Prefer: return=representation``."""
    state = emulator_state()
    ts = state.store.tenant(_require(WRITE))
    body = json_body()
    vendor = body.pop("vendorInformation", None)
    if not isinstance(vendor, dict) or not vendor.get("provider") or not vendor.get("vendor"):
        raise GraphHTTPError(400, "BadRequest", "vendorInformation with provider and vendor is required.")
    allowed = {"assignedTo", "closedDateTime", "comments", "feedback", "status", "tags"}
    for name in body:
        if ALERT.canonical(name) is None:
            raise GraphHTTPError(400, "BadRequest", f"The property '{name}' does not exist on type 'microsoft.graph.alert'.")
        if ALERT.canonical(name) not in allowed:
            raise GraphHTTPError(400, "BadRequest", f"Property '{name}' is read-only and cannot be set.")
    if "status" in body and body["status"] not in STATUSES:
        raise GraphHTTPError(400, "BadRequest", f"Invalid value '{body['status']}' for property 'status'.")
    if "feedback" in body and body["feedback"] not in FEEDBACK:
        raise GraphHTTPError(400, "BadRequest", f"Invalid value '{body['feedback']}' for property 'feedback'.")
    col = alerts_of(ts)
    with state.lock:
        alert = col.get(alert_id)
        if alert is None:
            raise GraphHTTPError(404, "NotFound", f"Alert '{alert_id}' was not found.")
        if (vendor["provider"], vendor["vendor"]) != (alert["vendorInformation"]["provider"], alert["vendorInformation"]["vendor"]):
            raise GraphHTTPError(400, "BadRequest", "vendorInformation does not match the alert's provider.")
        updated = {**alert, **{ALERT.canonical(k) or k: v for k, v in body.items()},
                   "lastModifiedDateTime": state.store.now_iso()}
    state.store.put(col, alert_id, updated, change_type="updated")
    if "return=representation" in request.headers.get("Prefer", ""):
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#security/alerts/$entity", **updated})
    return no_content()


@admin_bp.post("/security/alerts")
def admin_raise_alert() -> Response:
    """Raise an alert, as a security product would."""
    state = emulator_state()
    body = json_body()
    ts = state.store.tenant(str(body.pop("tenantId", None) or state.config.tenant_id))
    return json_response(raise_alert(state, ts, body), 201)


def admit_alert_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                             body: dict[str, Any]) -> ParsedResource:
    """The filter in the resource must be one the emulator can evaluate; each filter is its own matching key."""
    if body.get("notificationQueryOptions"):
        raise GraphHTTPError(400, "InvalidRequest", "notificationQueryOptions is not supported for this resource.")
    if parsed.ids:
        with state.lock:
            if alerts_of(ts).get(parsed.ids[0]) is None:
                raise GraphHTTPError(404, "ExtensionError", "Operation: Create; Exception: [Status Code: NotFound; "
                                     f"Reason: Alert '{parsed.ids[0]}' was not found.]")
        return ParsedResource(spec=parsed.spec, key=f"security/alerts/{parsed.ids[0]}".lower(), ids=parsed.ids,
                              mailbox=None, select=None, query=parsed.query)
    text = parsed.query.get("$filter")
    if text is None:
        return parsed
    compile_filter(ALERT, text)  # 400 for what the emulator cannot evaluate
    key = f"security/alerts?$filter={' '.join(text.split()).lower()}"
    with state.lock:
        ts.well_known[(key, _FILTER_TAG)] = text
    return ParsedResource(spec=parsed.spec, key=key, ids=parsed.ids, mailbox=None, select=None, query=parsed.query)


SUBSCRIBABLE_ALERTS = SubscribableResource(
    resource_type="alert",
    shapes=(("security", "alerts"),),
    item_shapes=(("security", "alerts", "*"),),
    # created and updated [UNCONFIRMED: the overview names the resource, not its change types].
    change_types=frozenset({"created", "updated"}),
    max_minutes=43_200,
    max_minutes_rich=None,
    permissions=("SecurityEvents.ReadWrite.All",),
    rich_refusal="Rich notifications are not supported for security alerts.",
    quota="none",
    admit=admit_alert_subscription,
)

FAMILY = Family(
    name="security",
    resource_types=(ALERT,),
    blueprints=(bp, admin_bp),
    subscribable=(SUBSCRIBABLE_ALERTS,),
    seeders={"alertsPerUser": seed_alerts},
)
