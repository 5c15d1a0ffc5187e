"""Bulk test data: a tenant's worth of users in one step, and smaller per-mailbox content.

Users are a lazily generated :class:`~syncer.emulator.store.SeedBlock` (1M users cost one log entry;
each user is built from its index when read), so seeding is O(1) and a delta page of seeded users costs
only the JSON it returns. Everything else is created as ordinary items. Seeding sends no change
notifications: it builds the tenant the test starts from.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.resources import CONTACT, EVENT, GROUP, MESSAGE, TODO_TASK

if TYPE_CHECKING:
    from syncer.emulator.resources import ResourceType
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import TenantStore

_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie",
          "Margaret", "Dennis", "Hedy", "Tim", "Katherine", "John", "Shafi", "Niklaus", "Sophie", "Linus")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
         "Lamport", "Hamilton", "Ritchie", "Lamarr", "Berners-Lee", "Johnson", "McCarthy", "Goldwasser",
         "Wirth", "Wilson", "Torvalds", "Backus", "Kay", "Cerf", "Hoare", "Milner", "Floyd", "Rivest")
_TITLES = ("Engineer", "Analyst", "Manager", "Designer", "Accountant", "Consultant", "Director", None)
_DEPTS = ("Engineering", "Finance", "Sales", "Marketing", "Legal", "Operations", "Support")
_CITIES = ("Seattle", "London", "Berlin", "Paris", "Tokyo", "Sydney", "Toronto", "Madrid")


def seed_users(state: EmulatorState, tenant_id: str, count: int) -> dict[str, Any]:
    """Add *count* generated users to *tenant_id*; returns {"count", "firstId", "prefix"}."""
    tenant = state.tenants[tenant_id]
    domain = tenant.domain.lower()
    store = state.store
    col = store.tenant(tenant_id).users()
    created = store.now_iso()
    block_no = store.seed_blocks + 1
    upn_prefix = f"s{block_no}u"
    n_first, n_last = len(_FIRST), len(_LAST)

    # Per-index parts cycle with small periods: precompute them so a user costs one dict literal.
    firsts = _FIRST
    lasts = _LAST
    cities = _CITIES
    depts = _DEPTS
    titles = _TITLES

    def make(user_id: str, i: int) -> dict[str, Any]:
        first = firsts[i % n_first]
        last = lasts[(i // n_first) % n_last]
        nick = f"{upn_prefix}{i}"
        upn = f"{nick}@{domain}"
        return {
            "id": user_id, "accountEnabled": True, "businessPhones": [f"+1 425 555 {i % 10000:04d}"],
            "city": cities[i & 7], "companyName": "Contoso", "country": "US", "createdDateTime": created,
            "deletedDateTime": None, "department": depts[i % 7], "displayName": f"{first} {last} {i}",
            "employeeId": str(i), "givenName": first, "jobTitle": titles[i & 7], "mail": upn,
            "mailNickname": nick, "mobilePhone": None, "officeLocation": f"{i % 40}/{i % 997}",
            "otherMails": [], "postalCode": None, "preferredLanguage": "en-US", "proxyAddresses": [f"SMTP:{upn}"],
            "state": None, "streetAddress": None, "surname": last, "usageLocation": "US",
            "userPrincipalName": upn, "userType": "Member",
        }

    block = store.add_block(col, count=count, make=make, upn_prefix=upn_prefix, upn_domain=domain)
    return {"count": count, "prefix": block.prefix, "firstId": block.item_id(0) if count else None,
            "upnPattern": f"{upn_prefix}{{i}}@{domain}"}


def seed(state: EmulatorState, spec: dict[str, Any]) -> dict[str, Any]:
    """Apply an admin seed request (see admin.py for the fields); returns counts and timings."""

    allowed = {"tenantId", "users", "groups", "membersPerGroup", "messagesPerUser", "eventsPerUser",
               "contactsPerUser", "tasksPerUser", "driveItemsPerUser", "contentUsers"}
    unknown = set(spec) - allowed
    if unknown:
        raise GraphHTTPError(400, "BadRequest", f"Unknown seed field(s): {sorted(unknown)}; expected {sorted(allowed)}.")
    for key in allowed - {"tenantId"}:
        value = spec.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise GraphHTTPError(400, "BadRequest", f"Seed field '{key}' must be a non-negative integer.")
    tenant_id = spec.get("tenantId", state.config.tenant_id)
    if tenant_id not in state.tenants:
        raise GraphHTTPError(404, "ResourceNotFound", f"Unknown tenant '{tenant_id}'.")
    started = time.perf_counter()
    result: dict[str, Any] = {"tenantId": tenant_id}
    ts = state.store.tenant(tenant_id)
    user_ids: list[str] = []
    if spec.get("users"):
        info = seed_users(state, tenant_id, spec["users"])
        result["users"] = info
    users_col = ts.users()
    content_users = spec.get("contentUsers", 10)
    needs_users = any(spec.get(k) for k in ("groups", "messagesPerUser", "eventsPerUser", "contactsPerUser",
                                             "tasksPerUser", "driveItemsPerUser"))
    if needs_users:
        with state.lock:
            emitted, _, _, _ = users_col.walk(since=0, hwm=state.store.seq, pos=None, sub=0,
                                              limit=max(content_users, spec.get("membersPerGroup", 0)),
                                              include_removed=False)
        user_ids = [e.item_id for e in emitted]
    groups = spec.get("groups", 0)
    if groups:
        per = spec.get("membersPerGroup", 0)
        gcol = ts.groups()
        created = state.store.now_iso()
        for g in range(groups):
            gid = state.store.new_guid()
            item: dict[str, Any] = {p: None for p in GROUP.properties}
            item.update({"id": gid, "displayName": f"Group {g}", "mailNickname": f"group{g}", "mailEnabled": False,
                         "securityEnabled": True, "groupTypes": [], "createdDateTime": created, "proxyAddresses": []})
            with state.lock:
                state.store.put(gcol, gid, item, change_type="created", notify=False)
                members = gcol.members.setdefault(gid, {})
                log = gcol.member_log.setdefault(gid, [])
                seq = state.store.next_seq()
                for uid in user_ids[:per]:
                    members[uid] = seq
                    log.append((seq, uid, False))
                state.store.touch(gcol, gid)
        result["groups"] = groups
    writers = (("messagesPerUser", MESSAGE), ("eventsPerUser", EVENT), ("contactsPerUser", CONTACT),
               ("tasksPerUser", TODO_TASK), ("driveItemsPerUser", None))
    for key, rtype in writers:
        per = spec.get(key, 0)
        if not per:
            continue
        for uid in user_ids[:content_users]:
            _seed_content(state, ts, uid, rtype, per)
        result[key] = per
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result


def _seed_content(state: EmulatorState, ts: TenantStore, user_id: str, rtype: ResourceType | None, count: int) -> None:
    """Create *count* items of *rtype* (None = drive files) for one user; the writers live with the views."""
    if rtype is None:
        from syncer.emulator.drive import seed_drive_content

        seed_drive_content(state, ts, user_id, count)
        return
    from syncer.emulator.mailbox import seed_mailbox_content

    seed_mailbox_content(state, ts, user_id, rtype, count)
