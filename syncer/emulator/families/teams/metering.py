"""Teams' legacy metering: without ``model=A|B`` an app runs in evaluation mode, 500 messages (or member events) a month
per app and tenant, notifications and export GETs counted together; then notifications silently stop and the export
GETs answer 402 (https://learn.microsoft.com/graph/teams-licenses). Teams APIs are no longer metered since 2025-08-25
[DOC], so this is off unless ``config.teams_evaluation_cap`` is set [UNCONFIRMED whether Graph still does it].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.resources import ResourceType

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

_USAGE = ResourceType(
    name="teamsEvaluationUsage", odata_type="", notification_type="", collection="teams-evaluation-usage",
    family="teams", read_roles=frozenset(), write_roles=frozenset(), properties=("id", "count"), index_by_id=False,
    notification_resource_data=False, event_collections=lambda ts, col, item_id: [],
)

EXHAUSTED = "The evaluation capacity for the month has exceeded. Use a billing model ('model=A' or 'model=B')."


def use(state: EmulatorState, tenant_id: str, application_id: str, count: int) -> bool:
    """Spend *count* units of the app's monthly evaluation capacity; False (nothing spent) when it is exhausted."""
    cap = state.config.teams_evaluation_cap
    if cap is None:
        return True
    month = state.clock.now().strftime("%Y-%m")
    ts = state.store.tenant(tenant_id)
    col = ts.collection(_USAGE)
    key = f"{application_id}|{month}"
    with state.lock:
        used = int((col.get(key) or {}).get("count", 0))
        if used >= cap:
            return False
        state.store.put(col, key, {"id": key, "count": used + count}, change_type="updated", notify=False)
    return True


def check_model(value: str | None) -> None:
    """The ``model`` of an export GET: A, B or none (evaluation mode)."""
    if value is not None and value not in ("A", "B"):
        raise GraphHTTPError(400, "BadRequest", f"Invalid model '{value}': use 'A' or 'B'.")


def payment_required() -> GraphHTTPError:
    return GraphHTTPError(402, "PaymentRequired", EXHAUSTED)
