"""The tenant itself: ``GET /organization`` (one organization, ``id`` = the tenant id) and ``GET /domains``.

https://learn.microsoft.com/graph/api/organization-list: with only User.Read (delegated) the app sees ``id``,
``displayName`` and ``verifiedDomains`` and every other property null; Organization.Read.All or Directory.Read.All
give the rest. ``verifiedDomains`` (https://learn.microsoft.com/graph/api/resources/verifieddomain) has exactly one
``isInitial`` (the ``*.onmicrosoft.com`` domain) and one ``isDefault``. https://learn.microsoft.com/graph/api/domain-list
needs Domain.Read.All or Directory.Read.All. Personal Microsoft accounts have no organization [DOC: "not supported"
for personal accounts]; they get the directory's 403 [UNCONFIRMED code].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from syncer.emulator.api import base_url, emulator_state, json_response, reject_query
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import AppContext, require_app
from syncer.emulator.resources import ResourceType

if TYPE_CHECKING:
    from syncer.emulator.state import Tenant

bp = Blueprint("directory_organization", __name__, url_prefix="/v1.0")

_ORG_FULL = frozenset({"Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All",
                       "Directory.ReadWrite.All"})
ORGANIZATION = ResourceType(
    name="organization",
    odata_type="#microsoft.graph.organization",
    notification_type="#Microsoft.Graph.Organization",
    collection="organization",
    family="directory",
    read_roles=_ORG_FULL,
    write_roles=frozenset({"Organization.ReadWrite.All", "Directory.ReadWrite.All"}),
    delegated_read=_ORG_FULL | {"User.Read", "User.ReadBasic.All", "User.Read.All"},
    properties=(
        "id", "assignedPlans", "businessPhones", "city", "country", "countryLetterCode", "createdDateTime",
        "defaultUsageLocation", "displayName", "marketingNotificationEmails", "onPremisesSyncEnabled", "postalCode",
        "preferredLanguage", "privacyProfile", "provisionedPlans", "securityComplianceNotificationMails",
        "securityComplianceNotificationPhones", "state", "street", "technicalNotificationMails", "tenantType",
        "verifiedDomains",
    ),
)
_DOMAIN_READ = frozenset({"Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
DOMAIN = ResourceType(
    name="domain",
    odata_type="#microsoft.graph.domain",
    notification_type="#Microsoft.Graph.Domain",
    collection="domains",
    family="directory",
    read_roles=_DOMAIN_READ,
    write_roles=frozenset({"Domain.ReadWrite.All", "Directory.ReadWrite.All"}),
    delegated_read=_DOMAIN_READ,
    properties=(
        "id", "authenticationType", "availabilityStatus", "isAdminManaged", "isDefault", "isInitial", "isRoot",
        "isVerified", "passwordNotificationWindowInDays", "passwordValidityPeriodInDays", "state", "supportedServices",
    ),
)


def _domains(tenant: Tenant) -> list[tuple[str, bool, bool]]:
    """(name, isDefault, isInitial): the initial domain, then custom ones (the first custom one is the default)."""
    custom = list(tenant.custom_domains)
    rows = [(tenant.domain, not custom, True)]
    rows += [(name, i == 0, False) for i, name in enumerate(custom)]
    return rows


def _organization(tenant: Tenant, *, full: bool, created: str) -> dict[str, Any]:
    verified = [{"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": default, "isInitial": initial,
                 "name": name, "type": "Managed"} for name, default, initial in _domains(tenant)]
    org: dict[str, Any] = {p: None for p in ORGANIZATION.properties}
    org.update({"id": tenant.tenant_id, "displayName": tenant.display_name, "verifiedDomains": verified})
    if full:
        org.update({
            "assignedPlans": [], "businessPhones": ["+1 425 555 0100"], "city": "Redmond", "country": None,
            "countryLetterCode": "US", "createdDateTime": created, "defaultUsageLocation": None,
            "marketingNotificationEmails": [], "onPremisesSyncEnabled": None, "postalCode": "98052",
            "preferredLanguage": "en", "privacyProfile": None, "provisionedPlans": [],
            "securityComplianceNotificationMails": [], "securityComplianceNotificationPhones": [], "state": "WA",
            "street": "One Microsoft Way", "technicalNotificationMails": [], "tenantType": "AAD",
        })
    return org


def _tenant(ctx: AppContext) -> Tenant:
    return emulator_state().tenants[ctx.tenant_id]


def _org_access() -> tuple[AppContext, bool]:
    """The caller and whether it sees every property (a User.Read-only user sees three)."""
    ctx = require_app(*ORGANIZATION.read_roles, delegated=ORGANIZATION.delegated_read)
    return ctx, not ctx.delegated or bool(ctx.scopes & _ORG_FULL)


@bp.get("/organization")
def list_organization() -> Response:
    """GET /organization: a collection of exactly one."""
    ctx, full = _org_access()
    reject_query(ORGANIZATION, {"$select"})
    created = emulator_state().store.now_iso()
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#organization",
                          "value": [_organization(_tenant(ctx), full=full, created=created)]})


@bp.get("/organization/<org_id>")
def get_organization(org_id: str) -> Response:
    """GET /organization/{id}."""
    ctx, full = _org_access()
    tenant = _tenant(ctx)
    if org_id.lower() != tenant.tenant_id.lower():
        raise GraphHTTPError(404, "Request_ResourceNotFound", f"Resource '{org_id}' does not exist or one of its "
                             "queried reference-property objects are not present.")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#organization/$entity",
                          **_organization(tenant, full=full, created=emulator_state().store.now_iso())})


def _domain(name: str, default: bool, initial: bool) -> dict[str, Any]:
    return {"id": name, "authenticationType": "Managed", "availabilityStatus": None, "isAdminManaged": True,
            "isDefault": default, "isInitial": initial, "isRoot": True, "isVerified": True,
            "passwordNotificationWindowInDays": 14, "passwordValidityPeriodInDays": 2147483647, "state": None,
            "supportedServices": ["Email", "OfficeCommunicationsOnline"]}


@bp.get("/domains")
def list_domains() -> Response:
    """GET /domains."""
    ctx = require_app(*DOMAIN.read_roles, delegated=DOMAIN.delegated_read)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#domains",
                          "value": [_domain(*row) for row in _domains(_tenant(ctx))]})


@bp.get("/domains/<name>")
def get_domain(name: str) -> Response:
    """GET /domains/{id}."""
    ctx = require_app(*DOMAIN.read_roles, delegated=DOMAIN.delegated_read)
    for row in _domains(_tenant(ctx)):
        if row[0].lower() == name.lower():
            return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#domains/$entity", **_domain(*row)})
    raise GraphHTTPError(404, "Request_ResourceNotFound", f"Resource '{name}' does not exist or one of its queried "
                         "reference-property objects are not present.")
