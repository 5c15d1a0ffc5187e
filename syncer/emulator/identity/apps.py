"""App registrations: credentials, application permissions, and what delegated sign-in needs.

An app registration says who may sign in through it (``signInAudience``,
https://learn.microsoft.com/entra/identity-platform/supported-accounts-validation), where the identity platform may
send an authorization code (its redirect URIs), whether it is a public client (a CLI or desktop app that holds no
secret: https://learn.microsoft.com/entra/identity-platform/msal-client-applications) and which delegated
permissions it asks for by ``.default``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Who may sign in to an app (the manifest's signInAudience values).
SINGLE_TENANT = "AzureADMyOrg"
MULTI_TENANT = "AzureADMultipleOrgs"
WORK_AND_PERSONAL = "AzureADandPersonalMicrosoftAccount"
PERSONAL_ONLY = "PersonalMicrosoftAccount"
AUDIENCES = frozenset({SINGLE_TENANT, MULTI_TENANT, WORK_AND_PERSONAL, PERSONAL_ONLY})

#: Redirect URI of a CLI that runs a loopback listener (MSAL's acquire_token_interactive).
LOOPBACK_REDIRECT = "http://localhost"


@dataclass
class AppRegistration:
    """An app registered in a tenant: its credentials, granted permissions and sign-in settings."""

    client_id: str
    tenant_id: str
    display_name: str = "app"
    secrets: set[str] = field(default_factory=set)
    #: SHA-1 thumbprint (upper hex) -> certificate PEM.
    certificates: dict[str, bytes] = field(default_factory=dict)
    #: Application permissions (app-only tokens' `roles`).
    roles: set[str] = field(default_factory=set)
    #: Object id of the app's service principal (Graph's `creatorId` for app-only subscriptions).
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sign_in_audience: str = SINGLE_TENANT
    redirect_uris: list[str] = field(default_factory=lambda: [LOOPBACK_REDIRECT])
    #: "Allow public client flows": device code and code redemption without a secret.
    public_client: bool = True
    #: Delegated permissions configured on the app: what a `.default` scope stands for.
    delegated_scopes: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """The admin API's view (no secrets)."""
        return {
            "clientId": self.client_id, "tenantId": self.tenant_id, "displayName": self.display_name,
            "roles": sorted(self.roles), "certificateThumbprints": sorted(self.certificates),
            "hasSecret": bool(self.secrets), "servicePrincipalId": self.service_principal_id,
            "signInAudience": self.sign_in_audience, "redirectUris": list(self.redirect_uris),
            "publicClient": self.public_client, "delegatedScopes": sorted(self.delegated_scopes),
        }

    @property
    def signs_in_work_accounts_of_other_tenants(self) -> bool:
        """Multi-tenant: work or school accounts of any directory."""
        return self.sign_in_audience in (MULTI_TENANT, WORK_AND_PERSONAL)

    @property
    def signs_in_personal_accounts(self) -> bool:
        """Personal Microsoft accounts may sign in."""
        return self.sign_in_audience in (WORK_AND_PERSONAL, PERSONAL_ONLY)

    def accepts_redirect(self, uri: str) -> bool:
        """Whether *uri* is registered; on http loopback the port is ignored, as the identity platform does
        (https://learn.microsoft.com/entra/identity-platform/reply-url#localhost-exceptions)."""
        if uri in self.redirect_uris:
            return True
        asked = urlsplit(uri)
        if asked.scheme != "http" or asked.hostname not in ("localhost", "127.0.0.1", "::1"):
            return False
        for registered in self.redirect_uris:
            known = urlsplit(registered)
            if (known.scheme == "http" and known.hostname == asked.hostname
                    and (known.path or "/") == (asked.path or "/")):
                return True
        return False
