"""``POST /teams`` is asynchronous: a ``teamsAsyncOperation`` goes notStarted -> inProgress -> succeeded, and the team
answers 404 until then (https://learn.microsoft.com/graph/api/team-post,
https://learn.microsoft.com/graph/api/resources/teamsasyncoperation).

Pending creations wait in an internal collection and become teams lazily, the first time a Teams call looks after
``config.teams_create_delay_s`` emulator seconds (how long Graph takes is undocumented [UNCONFIRMED]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncer.emulator.clock import iso_ts
from syncer.emulator.families.teams import model
from syncer.emulator.families.teams.kinds import TEAMS_ASYNC_OPERATION
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

_PENDING = ResourceType(
    name="teamsPendingCreation",
    odata_type="",
    notification_type="",
    collection="teams-pending",
    family="teams",
    read_roles=frozenset(),
    write_roles=frozenset(),
    properties=("id",),
    index_by_id=False,
    notification_resource_data=False,
    event_collections=lambda ts, col, item_id: [],
)


def start(state: EmulatorState, ts: TenantStore, *, display_name: str, description: str | None, visibility: str,
          group_id: str | None, members: list[tuple[str, list[str]]], migration: bool) -> tuple[str, str]:
    """Queue a team creation; returns (operation id, team id)."""
    team_id = group_id or state.store.new_guid()
    op_id = state.store.new_guid()
    now = state.clock.time()
    op = {"id": op_id, "operationType": "createTeam", "status": "notStarted", "createdDateTime": iso_ts(now),
          "lastActionDateTime": iso_ts(now), "attemptsCount": 1, "targetResourceId": team_id,
          "targetResourceLocation": f"/teams('{team_id}')", "error": None}
    state.store.put(ts.collection(TEAMS_ASYNC_OPERATION, {"team": team_id}), op_id, op, change_type="created",
                    notify=False)
    pending = {"id": team_id, "op": op_id, "at": now, "displayName": display_name, "description": description,
               "visibility": visibility, "existingGroup": group_id is not None, "members": members,
               "migration": migration}
    state.store.put(ts.collection(_PENDING), team_id, pending, change_type="created", notify=False)
    return op_id, team_id


def settle(state: EmulatorState, ts: TenantStore) -> None:
    """Create the teams whose operation is due (every Teams view calls this first)."""
    col = ts.collections.get(_PENDING.collection)
    if col is None or not col.items:
        return
    now = state.clock.time()
    due = [p for p in list(col.items.values()) if now - p["at"] >= state.config.teams_create_delay_s]
    for pending in due:
        with state.lock:
            if col.get(pending["id"]) is None:
                continue  # another request settled it
            state.store.remove(col, pending["id"], reason="deleted", notify=False)
        members = [(model.user_or_404(ts, uid), roles) for uid, roles in pending["members"]]
        model.create_team(state, ts, display_name=pending["displayName"], description=pending["description"],
                          visibility=pending["visibility"],
                          group_id=pending["id"] if pending["existingGroup"] else None,
                          members=members, migration=pending["migration"], team_id=pending["id"])
        ops = ts.collection(TEAMS_ASYNC_OPERATION, {"team": pending["id"]})
        op = ops.get(pending["op"])
        if op is not None:
            state.store.put(ops, op["id"], {**op, "status": "succeeded", "lastActionDateTime": iso_ts(now)},
                            change_type="updated", notify=False)


def get(state: EmulatorState, ts: TenantStore, team_id: str, op_id: str) -> dict[str, Any] | None:
    """The operation as Graph shows it now."""
    settle(state, ts)
    col = ts.collections.get(f"teams/{team_id}/operations".lower())
    op = col.get(op_id) if col is not None else None
    if op is None:
        return None
    if op["status"] == "notStarted":
        pending = ts.collection(_PENDING).get(op["targetResourceId"])
        if pending is not None and state.clock.time() > pending["at"]:
            return {**op, "status": "inProgress"}
    return dict(op)
