"""Every knob of the Graph emulator in one frozen value.

Where Graph's behaviour is documented the default follows the documentation ([DOC]); where it is not
(UNCONFIRMED, docs/emulator-core.md and docs/emulator-subscriptions-delivery.md list each point) the default is the
observed behaviour and the alternative is a field here, so a test can pin either reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from syncer.emulator.delivery_policy import RetryRules, ThrottleRules
from syncer.emulator.subscription_model import QuotaLimits

#: Stable defaults so that a developer's `syncer emulator` always shows the same credentials.
DEFAULT_TENANT_ID = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
DEFAULT_CLIENT_ID = "5f1c3c2a-9d55-4e3b-8a2f-3f0b6f1e2d11"
DEFAULT_CLIENT_SECRET = "emulator-secret-~8Q~not-a-real-secret"
DEFAULT_DOMAIN = "contoso.onmicrosoft.com"


@dataclass(frozen=True)
class EmulatorConfig:
    """Configuration of one emulator instance (every field has a documented default)."""

    host: str = "127.0.0.1"
    #: 0 = pick a free port at start.
    port: int = 0
    #: Seeds every random choice (ids, faults): the same seed gives the same run.
    seed: int = 0
    tenant_id: str = DEFAULT_TENANT_ID
    tenant_domain: str = DEFAULT_DOMAIN
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    #: Access-token lifetime. Graph issues ~1 h tokens; MSAL treats <= 300 s as already expired.
    token_lifetime_s: int = 3599

    # --- delegated sign-in (docs/emulator-identity.md) ---
    #: Serve the personal-Microsoft-account tenant (9188040d-6c67-4c5b-b112-36a304b66dad) and the consumers authority.
    personal_accounts: bool = True
    #: Who may sign in to the default app (signInAudience); it is also a public client with http://localhost.
    default_app_audience: str = "AzureADandPersonalMicrosoftAccount"
    #: UPN (or id) signed in without a page: /authorize redirects at once, device codes are approved when issued.
    sign_in_as: str | None = None
    #: Personal Microsoft accounts created at start (UPNs), each with a few messages, events, contacts, To Do tasks
    #: and OneDrive files (`personal_user_items` of each).
    personal_users: tuple[str, ...] = ()
    personal_user_items: int = 3
    #: Accounts listed per tenant on the sign-in page (others are typed by UPN).
    sign_in_page_users: int = 50
    #: Authorization codes live ~10 minutes [DOC].
    auth_code_lifetime_s: float = 600.0
    #: Device codes: expires_in 900 s and poll interval 5 s [DOC].
    device_code_lifetime_s: float = 900.0
    device_code_interval_s: int = 5
    #: Answer polls faster than `interval` with RFC 8628's slow_down (not in Microsoft's table) [UNCONFIRMED].
    device_code_slow_down: bool = False
    #: Refresh tokens live 90 days [DOC].
    refresh_token_lifetime_s: float = 90 * 24 * 3600.0
    #: After rotation the old refresh token stays valid (None: until it expires, as the docs say the old one is not
    #: revoked); a number = valid only this many seconds after its first use; 0 = single use [UNCONFIRMED].
    refresh_token_reuse_grace_s: float | None = None
    #: `prompt=none` with no signed-in session: OpenID Connect's `login_required` (AADSTS50058) [UNCONFIRMED; some
    #: write interaction_required].
    prompt_none_error: str = "login_required"

    # --- delta (https://learn.microsoft.com/graph/delta-query-overview) ---
    #: Directory (user, group) delta tokens are valid for 7 days [DOC].
    directory_delta_token_lifetime_s: float | None = 7 * 24 * 3600
    #: Outlook/To Do tokens have no fixed limit [DOC] (evicted oldest-first; use the admin API to evict).
    outlook_delta_token_lifetime_s: float | None = None
    #: Outlook keeps sync states in a cache and evicts the oldest [DOC]; with N set, each Outlook/To Do
    #: collection keeps its N newest deltaLinks valid and older ones answer 410. None = no eviction.
    outlook_delta_token_cache_size: int | None = None
    #: OneDrive tokens: undocumented lifetime [UNCONFIRMED]; None = never expire by age.
    drive_delta_token_lifetime_s: float | None = None
    #: nextLinks of a running round can expire too [OBS]; None = they live as long as delta tokens.
    skiptoken_lifetime_s: float | None = None
    #: Expired token -> 410 SyncStateNotFound; with this set the 410 also carries a Location header
    #: (Graph sends Location only on a tenant "reset" [DOC]; expiry without it is what users observed).
    delta_expiry_sends_location: bool = False
    #: driveItem 410 code spelling: https://learn.microsoft.com/graph/api/driveitem-delta and https://learn.microsoft.com/graph/errors disagree.
    drive_resync_code: str = "resyncChangesApplyDifferences"
    #: Large groups' members@delta is split: the group repeats with at most this many links each
    #: (https://learn.microsoft.com/graph/delta-query-groups says large groups are split; the size is a guess). None = never split.
    group_members_delta_chunk: int | None = 100
    #: Honour `Prefer: odata.maxpagesize` on the users/groups delta (Graph does; set False to ignore it).
    directory_honours_maxpagesize: bool = True

    # --- SharePoint, group owners, security, call records, print (docs/emulator-core.md, the guesses table) ---
    #: Notifications per list item change: SharePoint sends bursts (tens for one rename) [OBS
    #: https://github.com/microsoftgraph/microsoft-graph-docs/issues/7637]; the count is a guess.
    list_notification_burst: int = 2
    #: Accept `/groups/{id}/drive/root` and `/sites/{id}/drive/root` as subscription resources [UNCONFIRMED: only
    #: `/drives/{id}/root` and `/users/{id}/drive/root` are documented]; False = 400 like an unknown resource.
    library_path_subscriptions: bool = False
    #: `/groups` notifications carry the changed links as `members@delta` in resourceData [OBS
    #: https://github.com/microsoftgraph/microsoft-graph-docs/issues/9915].
    group_notification_members_delta: bool = True
    #: A new call record is notified as `created` and also `updated` [DOC:
    #: https://learn.microsoft.com/graph/changenotifications-for-callrecords]; False = `created` only.
    call_record_created_also_updated: bool = True
    #: Call records older than this are 404 and leave the list [DOC: 30 days].
    call_record_retention_days: int = 30
    #: callRecord subscriptions per organisation, all apps together [DOC: 100]; the 101st is 403.
    call_record_subscriptions_per_organization: int = 100
    #: Presence of a user nobody has set: Graph's enum member for "no information" [UNCONFIRMED which one Graph
    #: reports for a user who never signed in to Teams].
    presence_default: tuple[str, str] = ("PresenceUnknown", "PresenceUnknown")
    #: Presence subscriptions need includeResourceData [OLD-DOC: older pages; the current
    #: https://learn.microsoft.com/graph/changenotifications-for-presence shows basic notifications too].
    presence_rich_required: bool = False
    #: A second presence subscription of one app for one signed-in user (another id list) is refused [DOC: "one
    #: subscription per app per delegated user"]; the status is UNCONFIRMED (403 ExtensionError here).
    presence_subscription_per_user_status: int = 403
    #: Group conversations: the list's page (and `$top`'s ceiling) [UNCONFIRMED: the docs show no paging].
    conversation_page_size: int = 10
    conversation_max_page_size: int = 100
    #: A second subscription on one group's conversations (any app) is refused with this status [DOC: "one
    #: subscription per group"; status UNCONFIRMED].
    conversation_subscription_per_group_status: int = 403

    # --- limits / faults ---
    #: Outlook allows 4 concurrent requests per app+mailbox (https://learn.microsoft.com/graph/throttling-limits, second-hand); None = unlimited.
    mailbox_concurrency_limit: int | None = 4
    #: Retry-After (seconds) sent with a mailbox-concurrency 429.
    mailbox_concurrency_retry_after_s: int = 1
    #: How many requests the admin request log keeps.
    request_log_size: int = 10_000

    # --- subscriptions (https://learn.microsoft.com/graph/api/resources/subscription) ---
    #: The validation handshake must be answered within 10 s [DOC].
    handshake_timeout_s: float = 10.0
    #: Graph needs https notification URLs; the emulator also takes http on loopback so a local receiver
    #: needs no certificate. False = https only, as Graph.
    allow_http_loopback: bool = True
    #: `verify=` for handshake and notification POSTs to https receivers (a CA bundle path, or False).
    notification_tls_verify: bool | str = True
    #: Expirations closer than this are raised to it [DOC: 45 minutes].
    subscription_min_minutes: float = 45.0
    #: Per-type maximum lifetime overrides in minutes, e.g. {"message": 4230, "message:rich": 60}.
    subscription_max_minutes: dict[str, int] = field(default_factory=dict)
    #: Expiration beyond the maximum: "reject" = observed 400 ExtensionError; "clamp" = shorten silently
    #: (also observed, 2025) [UNCONFIRMED which one Graph does today].
    subscription_expiry_overflow: str = "reject"
    #: Active-subscription quotas (https://learn.microsoft.com/graph/api/subscription-post-subscriptions); small values make them testable.
    subscription_quotas: QuotaLimits = field(default_factory=QuotaLimits)
    #: Page size of GET /subscriptions [UNCONFIRMED: Graph pages, size undocumented].
    subscription_page_size: int = 100
    #: Re-run the handshake when PATCH changes notificationUrl [UNCONFIRMED; default: validate].
    revalidate_on_patch: bool = True
    #: A notificationUrl with a query string gets `&validationToken=...` appended, query kept [UNCONFIRMED];
    #: False = the handshake goes to the URL without its query (`?validationToken=...` only).
    handshake_keeps_query: bool = True

    # --- delivery (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks) ---
    #: 3-s budget, 10-s retry timeout, 4-h window [DOC]; backoff schedule [UNCONFIRMED].
    retry: RetryRules = field(default_factory=RetryRules)
    #: Slow/drop endpoint rules [DOC, thresholds differ across revisions].
    throttle: ThrottleRules = field(default_factory=ThrottleRules)
    #: Most notifications in one POST [UNCONFIRMED: Graph batches, size undocumented].
    notification_batch_max: int = 100
    #: Concurrent POSTs per notification URL, and worker threads for all URLs.
    delivery_max_in_flight: int = 2
    delivery_workers: int = 8
    #: How often (real seconds) the dispatcher wakes to look for due notifications and retries, and how often
    #: it sweeps for expiry and reauthorizationRequired (API calls also expire lazily); a sweep pops what is due
    #: from the registry's heaps, so its cost does not grow with the number of subscriptions.
    delivery_tick_s: float = 0.02
    delivery_sweep_s: float = 0.25
    #: POSTs (and drops) remembered by GET /_emulator/delivery.
    delivery_log_size: int = 10_000
    #: ... and at most this many notification items in the bodies it keeps (memory bound under load).
    delivery_log_items: int = 50_000
    #: reauthorizationRequired: sent while the subscription expires within `lead`, every `interval`
    #: (emulator seconds) [UNCONFIRMED cadence; docs sketch 15 min under an hour].
    reauthorization_lead_s: float = 3600.0
    reauthorization_interval_s: float = 900.0
    #: At most one `missed` per subscription in this many seconds (one per drop window) [UNCONFIRMED].
    missed_min_interval_s: float = 600.0
    #: Graph sends subscriptionRemoved/missed only for Outlook types (and Teams) [DOC]; True = every type.
    lifecycle_events_all_types: bool = False
    #: Lifetime of validationTokens JWTs [UNCONFIRMED: ~1 h like other identity-platform tokens].
    validation_token_lifetime_s: float = 3600.0
    #: validationTokens' `aud`: the subscribing app id; True = the subscription's notificationUrlAppId when it
    #: has one [UNCONFIRMED: the docs only say that app id "can be used to generate the validation token"].
    notification_url_app_id_as_audience: bool = False

    # --- Microsoft Teams (docs/emulator-core.md lists these guesses) ---
    #: Which changeType a message's softDelete raises: "deleted" (rich payload with deletedDateTime) or "updated"
    #: [UNCONFIRMED: https://learn.microsoft.com/graph/api/chatmessage-softdelete does not say]; undo is "updated".
    teams_soft_delete_change_type: str = "deleted"
    #: A new reply also puts its root in the next channel delta round [UNCONFIRMED]; False = only the reply changes.
    teams_reply_resurfaces_root: bool = False
    #: Emulator seconds a `POST /teams` operation takes before the team exists [UNCONFIRMED: undocumented].
    teams_create_delay_s: float = 1.0
    #: Status of a second oneOnOne `POST /chats` for the same pair, which returns the existing chat [UNCONFIRMED].
    teams_existing_chat_status: int = 201
    #: Status when an app token posts a message outside migration mode [UNCONFIRMED: status not stated].
    teams_app_send_status: int = 403
    #: Teams subscriptions per tenant, all Teams types together [DOC: 10,000]; then 403.
    teams_subscription_pool: int = 10_000
    #: Subscriptions per user on /users/{id}/chats and /users/{id}/chats/getAllMessages [DOC: 10]; then 403.
    teams_subscriptions_per_user: int = 10
    #: A second subscription of one app on one chat/channel/team path: 403 or 409 [UNCONFIRMED which]. (The same
    #: resource with the same change types is the shared duplicate rule, 409.)
    teams_per_resource_status: int = 403
    #: Expirations further away than this need a lifecycleNotificationUrl [DOC: 1 hour] ...
    teams_lifecycle_url_after_minutes: float = 60.0
    #: ... or the create/renew fails with this status [UNCONFIRMED: 400].
    teams_lifecycle_url_status: int = 400
    #: Legacy evaluation mode (no `model`): this many messages or member events a month per app and tenant, then
    #: notifications stop and export GETs answer 402 [DOC before 2025-08-25: 500]. None = unmetered, as Teams is now.
    teams_evaluation_cap: int | None = None
    #: Post a systemEventMessage when members are added to or removed from a team (General channel) or chat, a chat is
    #: renamed or a channel added, through Graph's API (not seeding) [DOC: which events do is partly UNCONFIRMED].
    teams_system_messages: bool = True
    #: Replies a root carries inline under `$expand=replies` (list, get and channel delta) before
    #: `replies@odata.nextLink` [DOC: 1,000]; smaller values let tests page replies without posting a thousand.
    teams_inline_replies: int = 1000
    #: Status when a signed-in user reads or subscribes to a team, channel or chat they are not a member of
    #: [UNCONFIRMED: 403 assumed; the per-API pages only say delegated permissions reach what the user can].
    teams_not_member_status: int = 403

    def with_changes(self, **changes: object) -> EmulatorConfig:
        """A copy with *changes* applied (the config itself is immutable)."""
        return replace(self, **changes)  # type: ignore[arg-type]
