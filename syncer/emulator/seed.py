"""Bulk test data: a tenant's worth of users in one step, groups, and smaller per-user content.

Users are a lazily generated :class:`~syncer.emulator.store.SeedBlock` (1M users cost one log entry;
each user is built from its index when read), so seeding is O(1) and a delta page of seeded users costs
only the JSON it returns. Everything else is created as ordinary items by the family that owns it
(:data:`~syncer.emulator.families.PER_USER_SEEDERS`). Seeding sends no change notifications: it builds the
tenant the test starts from.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families import PER_USER_SEEDERS
from syncer.emulator.families.directory.groups import seed_groups
from syncer.emulator.families.directory.users import seed_users, users_of

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

_TENANT_FIELDS = ("users", "groups", "membersPerGroup", "contentUsers")


def seed(state: EmulatorState, spec: dict[str, Any]) -> dict[str, Any]:
    """Apply an admin seed request (see admin.py for the fields); returns counts and timings."""

    allowed = {"tenantId", *_TENANT_FIELDS, *PER_USER_SEEDERS}
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
    users_col = users_of(ts)
    content_users = spec.get("contentUsers", 10)
    needs_users = any(spec.get(k) for k in ("groups", *PER_USER_SEEDERS))
    if needs_users:
        with state.lock:
            emitted, _, _, _ = users_col.walk(since=0, hwm=state.store.seq, pos=None, sub=0,
                                              limit=max(content_users, spec.get("membersPerGroup", 0)),
                                              include_removed=False)
        user_ids = [e.item_id for e in emitted]
    groups = spec.get("groups", 0)
    if groups:
        seed_groups(state, ts, groups, user_ids[:spec.get("membersPerGroup", 0)])
        result["groups"] = groups
    for key, seeder in PER_USER_SEEDERS.items():
        per = spec.get(key, 0)
        if not per:
            continue
        for uid in user_ids[:content_users]:
            seeder(state, ts, uid, per)
        result[key] = per
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result
