"""Universal Print: printers, their jobs, task definitions and tasks (https://learn.microsoft.com/graph/api/resources/print).

Read: ``GET /print/printers[/{id}[/jobs[/{id}]]]`` (Printer.Read.All, PrintJob.Read.All and wider),
``GET/POST /print/taskDefinitions``, ``GET /print/taskDefinitions/{id}/tasks[/{id}]`` and ``PATCH`` of a task's
``status`` (PrintTaskDefinition.ReadWrite.All), ``POST /print/printers/{id}/taskTriggers`` (one trigger per printer,
https://learn.microsoft.com/graph/api/printer-post-tasktriggers). Tests register printers with
``POST /_emulator/print/printers {"displayName"}`` and submit jobs with ``POST /_emulator/print/printers/{id}/jobs``.

A submitted job on a printer with a ``jobStarted`` trigger makes a printTask (``created`` on
``print/taskDefinitions/{id}/tasks``) and waits, not fetchable, until the app PATCHes the task ``completed``; without a
trigger, or then, the job becomes fetchable (``updated`` on ``print/printers/{id}/jobs``)
(https://learn.microsoft.com/graph/universal-print-webhook-notifications).

Subscriptions: ``print/printers/{id}/jobs`` with changeType ``updated`` and ``notificationQueryOptions``
``"$filter = isFetchable eq true"`` (required); ``print/taskDefinitions/{id}/tasks`` (the overview's
``print/printtaskdefinition/{id}/tasks`` too) with ``created``; 4,230 minutes; no rich notifications.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state, json_body, json_response
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import require_app
from syncer.emulator.resources import Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import ParsedResource, SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("print", __name__, url_prefix="/v1.0")
admin_bp = Blueprint("print_admin", __name__, url_prefix="/_emulator")

PRINTER_READ = frozenset({"Printer.Read.All", "Printer.ReadWrite.All", "Printer.FullControl.All"})
JOB_READ = frozenset({"PrintJob.Read.All", "PrintJob.ReadBasic.All", "PrintJob.ReadWrite.All",
                      "PrintJob.ReadWriteBasic.All", "PrintJob.Manage.All"})
TASKS = frozenset({"PrintTaskDefinition.ReadWrite.All"})
#: The one notificationQueryOptions a printer-jobs subscription takes (whitespace-insensitive).
FETCHABLE_FILTER = "$filter = isFetchable eq true"

PRINTER = ResourceType(
    name="printer", odata_type="#microsoft.graph.printer", notification_type="#Microsoft.Graph.printer",
    collection="print/printers", family="print", read_roles=PRINTER_READ, write_roles=frozenset(),
    properties=("id", "displayName", "manufacturer", "model", "isShared", "status", "registeredDateTime", "location"),
    index_by_id=False,
)
def _fetchable_only(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    """Only a job that is fetchable now is news to a jobs subscription (its filter is isFetchable eq true)."""
    job = col.get(item_id)
    return [col.key] if job is not None and job.get("isFetchable") else []


PRINT_JOB = ResourceType(
    name="printJob", odata_type="#microsoft.graph.printJob", notification_type="#Microsoft.Graph.printJob",
    collection="print/printers/{printer}/jobs", family="print", read_roles=JOB_READ, write_roles=frozenset(),
    properties=("id", "createdDateTime", "createdBy", "status", "isFetchable", "redirectedFrom", "redirectedTo",
                "documents", "configuration"),
    notification_resource="print/printers/{printer}/jobs/{id}",
    event_collections=_fetchable_only,
    index_by_id=False,
)
TASK_DEFINITION = ResourceType(
    name="printTaskDefinition", odata_type="#microsoft.graph.printTaskDefinition",
    notification_type="#Microsoft.Graph.printTaskDefinition", collection="print/taskDefinitions", family="print",
    read_roles=TASKS, write_roles=TASKS, properties=("id", "displayName", "createdBy"), index_by_id=False,
)
PRINT_TASK = ResourceType(
    name="printTask", odata_type="#microsoft.graph.printTask", notification_type="#Microsoft.Graph.printTask",
    collection="print/taskDefinitions/{definition}/tasks", family="print", read_roles=TASKS, write_roles=TASKS,
    properties=("id", "parentUrl", "status", "triggerId", "definition"),
    notification_resource="print/taskDefinitions/{definition}/tasks/{id}",
    index_by_id=False,
)


def _require(roles: frozenset[str]) -> str:
    ctx = require_app()
    if not ctx.roles & roles:
        raise GraphHTTPError(403, "Forbidden", "Insufficient privileges to complete the operation.")
    return ctx.tenant_id


def _not_found(what: str, key: str) -> GraphHTTPError:
    return GraphHTTPError(404, "NotFound", f"{what} '{key}' was not found.")


def _get(state: EmulatorState, col: Collection, key: str, what: str) -> dict[str, Any]:
    with state.lock:
        item = col.get(key.lower())
    if item is None:
        raise _not_found(what, key)
    return item


def printers_of(ts: TenantStore) -> Collection:
    """The tenant's printers."""
    return ts.collection(PRINTER)


def jobs_of(ts: TenantStore, printer_id: str) -> Collection:
    """A printer's jobs."""
    return ts.collection(PRINT_JOB, {"printer": printer_id})


def definitions_of(ts: TenantStore) -> Collection:
    """The tenant's task definitions."""
    return ts.collection(TASK_DEFINITION)


def tasks_of(ts: TenantStore, definition_id: str) -> Collection:
    """A task definition's tasks."""
    return ts.collection(PRINT_TASK, {"definition": definition_id})


def _list(context: str, col: Collection, state: EmulatorState) -> Response:
    with state.lock:
        values = [dict(v) for _, v in col.iter_live()]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}", "value": values})


def register_printer(state: EmulatorState, ts: TenantStore, body: dict[str, Any]) -> dict[str, Any]:
    """A printer registered with Universal Print."""
    printer_id = state.store.new_guid()
    printer = {"id": printer_id, "displayName": str(body.get("displayName") or "Printer"),
               "manufacturer": body.get("manufacturer", "Contoso"), "model": body.get("model", "LaserJet"),
               "isShared": True, "registeredDateTime": state.store.now_iso(), "location": None,
               "status": {"state": "idle", "details": [], "description": ""}}
    state.store.put(printers_of(ts), printer_id, printer, change_type="created", notify=False)
    return printer


def _job_status(state_name: str, description: str) -> dict[str, Any]:
    return {"state": state_name, "description": description, "details": []}


def _make_fetchable(state: EmulatorState, ts: TenantStore, printer_id: str, job_id: str) -> None:
    col = jobs_of(ts, printer_id)
    with state.lock:
        job = col.get(job_id)
        if job is None:
            return
        updated = {**job, "isFetchable": True, "status": _job_status("pending", "The job is ready to be fetched.")}
    state.store.put(col, job_id, updated, change_type="updated")


def submit_job(state: EmulatorState, ts: TenantStore, printer_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A user printed: the job waits for the printer's task trigger, if any, then becomes fetchable."""
    printer = _get(state, printers_of(ts), printer_id, "Printer")
    job_id = str(state.store.rng.randint(1000, 9_999_999))
    trigger = ts.well_known.get((str(printer["id"]), "print-trigger"))
    job = {"id": job_id, "createdDateTime": state.store.now_iso(),
           "createdBy": {"id": body.get("userId"), "displayName": body.get("userName", "emulator")},
           "status": _job_status("processing", "The job is being processed."), "isFetchable": False,
           "redirectedFrom": None, "redirectedTo": None,
           "documents": [{"id": state.store.new_guid(), "displayName": str(body.get("documentName") or "document.pdf"),
                          "contentType": "application/pdf", "size": int(body.get("size", 1024))}],
           "configuration": {"copies": int(body.get("copies", 1))}}
    state.store.put(jobs_of(ts, str(printer["id"])), job_id, job, change_type="created")
    if trigger is None:
        _make_fetchable(state, ts, str(printer["id"]), job_id)
        return job
    definition_id = trigger.split("|")[1]
    task_id = state.store.new_guid()
    task = {"id": task_id, "parentUrl": f"{base_url()}/v1.0/print/printers/{printer['id']}/jobs/{job_id}",
            "status": {"state": "processing", "description": ""}, "triggerId": trigger.split("|")[0],
            "definition": {"id": definition_id}}
    with state.lock:
        ts.well_known[(task_id, "print-task-job")] = f"{printer['id']}|{job_id}"
    state.store.put(tasks_of(ts, definition_id), task_id, task, change_type="created")
    return job


def seed_print_jobs(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* fetchable jobs per user on the printer "Seeded printer" (no notifications)."""
    with state.lock:
        printer = next((p for _, p in printers_of(ts).iter_live() if p["displayName"] == "Seeded printer"), None)
    if printer is None:
        printer = register_printer(state, ts, {"displayName": "Seeded printer"})
    col = jobs_of(ts, str(printer["id"]))
    for i in range(count):
        job_id = str(state.store.rng.randint(1000, 9_999_999))
        state.store.put(col, job_id, {
            "id": job_id, "createdDateTime": state.store.now_iso(), "createdBy": {"id": uid, "displayName": None},
            "status": _job_status("pending", "The job is ready to be fetched."), "isFetchable": True,
            "redirectedFrom": None, "redirectedTo": None,
            "documents": [{"id": state.store.new_guid(), "displayName": f"document{i}.pdf",
                           "contentType": "application/pdf", "size": 1024}],
            "configuration": {"copies": 1}}, change_type="created", notify=False)


# --- Graph views ----------------------------------------------------------------------------------------------


@bp.get("/print/printers")
def list_printers() -> Response:
    """GET /print/printers."""
    state = emulator_state()
    ts = state.store.tenant(_require(PRINTER_READ))
    return _list("print/printers", printers_of(ts), state)


@bp.get("/print/printers/<printer_id>")
def get_printer(printer_id: str) -> Response:
    """GET /print/printers/{id}."""
    state = emulator_state()
    ts = state.store.tenant(_require(PRINTER_READ))
    return json_response(_get(state, printers_of(ts), printer_id, "Printer"))


@bp.get("/print/printers/<printer_id>/jobs")
def list_jobs(printer_id: str) -> Response:
    """GET /print/printers/{id}/jobs."""
    state = emulator_state()
    ts = state.store.tenant(_require(JOB_READ))
    printer = _get(state, printers_of(ts), printer_id, "Printer")
    return _list(f"print/printers('{printer['id']}')/jobs", jobs_of(ts, str(printer["id"])), state)


@bp.get("/print/printers/<printer_id>/jobs/<job_id>")
def get_job(printer_id: str, job_id: str) -> Response:
    """GET /print/printers/{id}/jobs/{id}."""
    state = emulator_state()
    ts = state.store.tenant(_require(JOB_READ))
    printer = _get(state, printers_of(ts), printer_id, "Printer")
    return json_response(_get(state, jobs_of(ts, str(printer["id"])), job_id, "Print job"))


@bp.post("/print/printers/<printer_id>/taskTriggers")
def add_trigger(printer_id: str) -> Response:
    """POST /print/printers/{id}/taskTriggers {"event": "jobStarted", "definition@odata.bind": ".../taskDefinitions/{id}"}."""
    state = emulator_state()
    ts = state.store.tenant(_require(TASKS | frozenset({"Printer.ReadWrite.All", "Printer.FullControl.All"})))
    printer = _get(state, printers_of(ts), printer_id, "Printer")
    body = json_body()
    if body.get("event") != "jobStarted":
        raise GraphHTTPError(400, "BadRequest", "The only supported trigger event is 'jobStarted'.")
    bind = str(body.get("definition@odata.bind") or "")
    definition_id = bind.rstrip("/").rsplit("/", 1)[-1]
    _get(state, definitions_of(ts), definition_id, "Task definition")
    with state.lock:
        key = (str(printer["id"]), "print-trigger")
        if key in ts.well_known:
            raise GraphHTTPError(409, "Conflict", "The printer already has a task trigger for this event.")
        trigger_id = state.store.new_guid()
        ts.well_known[key] = f"{trigger_id}|{definition_id.lower()}"
    return json_response({"id": trigger_id, "event": "jobStarted", "definition": {"id": definition_id}}, 201)


@bp.get("/print/taskDefinitions")
def list_definitions() -> Response:
    """GET /print/taskDefinitions."""
    state = emulator_state()
    ts = state.store.tenant(_require(TASKS))
    return _list("print/taskDefinitions", definitions_of(ts), state)


@bp.post("/print/taskDefinitions")
def create_definition() -> Response:
    """POST /print/taskDefinitions {"displayName", "createdBy": {"displayName"}}."""
    state = emulator_state()
    ts = state.store.tenant(_require(TASKS))
    body = json_body()
    if not isinstance(body.get("displayName"), str) or not body["displayName"]:
        raise GraphHTTPError(400, "BadRequest", "displayName is required.")
    definition_id = state.store.new_guid()
    definition = {"id": definition_id, "displayName": body["displayName"],
                  "createdBy": body.get("createdBy") or {"displayName": "emulator", "appId": None}}
    state.store.put(definitions_of(ts), definition_id, definition, change_type="created", notify=False)
    return json_response(definition, 201)


@bp.get("/print/taskDefinitions/<definition_id>/tasks")
def list_tasks(definition_id: str) -> Response:
    """GET /print/taskDefinitions/{id}/tasks."""
    state = emulator_state()
    ts = state.store.tenant(_require(TASKS))
    _get(state, definitions_of(ts), definition_id, "Task definition")
    return _list(f"print/taskDefinitions('{definition_id}')/tasks", tasks_of(ts, definition_id.lower()), state)


@bp.route("/print/taskDefinitions/<definition_id>/tasks/<task_id>", methods=["GET", "PATCH"])
def task(definition_id: str, task_id: str) -> Response:
    """GET a task, or PATCH its ``status`` (``completed`` releases the job)."""
    state = emulator_state()
    ts = state.store.tenant(_require(TASKS))
    _get(state, definitions_of(ts), definition_id, "Task definition")
    col = tasks_of(ts, definition_id.lower())
    current = _get(state, col, task_id, "Task")
    if request.method == "GET":
        return json_response(current)
    body = json_body()
    status = body.get("status")
    if set(body) != {"status"} or not isinstance(status, dict) or status.get("state") not in ("processing", "completed", "aborted"):
        raise GraphHTTPError(400, "BadRequest", "Only status.state ('processing', 'completed', 'aborted') can be updated.")
    updated = {**current, "status": {"state": status["state"], "description": status.get("description", "")}}
    state.store.put(col, str(current["id"]), updated, change_type="updated")
    link = ts.well_known.get((str(current["id"]), "print-task-job"))
    if link is not None and status["state"] == "completed":
        printer_id, job_id = link.split("|")
        _make_fetchable(state, ts, printer_id, job_id)
    elif link is not None and status["state"] == "aborted":
        printer_id, job_id = link.split("|")
        jobs = jobs_of(ts, printer_id)
        with state.lock:
            job = jobs.get(job_id)
        if job is not None:
            state.store.put(jobs, job_id, {**job, "status": _job_status("aborted", "Aborted by the print app.")},
                            change_type="updated")
    return json_response(updated)


# --- admin ----------------------------------------------------------------------------------------------------


def _admin_tenant(state: EmulatorState, body: dict[str, Any]) -> TenantStore:
    return state.store.tenant(str(body.pop("tenantId", None) or state.config.tenant_id))


@admin_bp.post("/print/printers")
def admin_register_printer() -> Response:
    """Register a printer."""
    state = emulator_state()
    body = json_body() if request.get_data().strip() else {}
    return json_response(register_printer(state, _admin_tenant(state, body), body), 201)


@admin_bp.post("/print/printers/<printer_id>/jobs")
def admin_submit_job(printer_id: str) -> Response:
    """Submit a print job as a user would: ``{"documentName"?, "userId"?, "copies"?}``."""
    state = emulator_state()
    body = json_body() if request.get_data().strip() else {}
    return json_response(submit_job(state, _admin_tenant(state, body), printer_id, body), 201)


# --- subscriptions --------------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.replace("=", " = ").split()).lower()


def admit_jobs_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                            body: dict[str, Any]) -> ParsedResource:
    """``notificationQueryOptions`` must be the isFetchable filter; the printer must exist."""
    options = body.get("notificationQueryOptions")
    if not isinstance(options, str) or _normalise(options) != _normalise(FETCHABLE_FILTER):
        # Required by https://learn.microsoft.com/graph/universal-print-webhook-notifications; the code is a guess.
        raise GraphHTTPError(400, "InvalidRequest",
                             f"notificationQueryOptions must be \"{FETCHABLE_FILTER}\" for printer job subscriptions.")
    printer = _get(state, printers_of(ts), parsed.ids[0], "Printer")
    return ParsedResource(spec=parsed.spec, key=f"print/printers/{printer['id']}/jobs".lower(), ids=parsed.ids,
                          mailbox=None, select=None, query=parsed.query)


def admit_tasks_subscription(state: EmulatorState, ts: TenantStore, parsed: ParsedResource,
                             body: dict[str, Any]) -> ParsedResource:
    """No notificationQueryOptions [UNCONFIRMED]; the definition must exist; both path spellings mean one key."""
    if body.get("notificationQueryOptions"):
        raise GraphHTTPError(400, "InvalidRequest", "notificationQueryOptions is not supported for this resource.")
    definition = _get(state, definitions_of(ts), parsed.ids[0], "Task definition")
    return ParsedResource(spec=parsed.spec, key=f"print/taskdefinitions/{definition['id']}/tasks".lower(),
                          ids=parsed.ids, mailbox=None, select=None, query=parsed.query)


SUBSCRIBABLE_JOBS = SubscribableResource(
    resource_type="printJob",
    shapes=(("print", "printers", "*", "jobs"),),
    change_types=frozenset({"updated"}),
    max_minutes=4_230,
    max_minutes_rich=None,
    permissions=("Printer.Read.All", "Printer.ReadWrite.All", "Printer.FullControl.All"),
    rich_refusal="Rich notifications are not supported for Universal Print.",
    quota="none",
    admit=admit_jobs_subscription,
)
SUBSCRIBABLE_TASKS = SubscribableResource(
    resource_type="printTask",
    shapes=(("print", "taskdefinitions", "*", "tasks"), ("print", "printtaskdefinition", "*", "tasks")),
    change_types=frozenset({"created"}),
    max_minutes=4_230,
    max_minutes_rich=None,
    permissions=("PrintTaskDefinition.ReadWrite.All",),
    rich_refusal="Rich notifications are not supported for Universal Print.",
    quota="none",
    admit=admit_tasks_subscription,
)

FAMILY = Family(
    name="print",
    resource_types=(PRINTER, PRINT_JOB, TASK_DEFINITION, PRINT_TASK),
    blueprints=(bp, admin_bp),
    subscribable=(SUBSCRIBABLE_JOBS, SUBSCRIBABLE_TASKS),
    seeders={"printJobsPerUser": seed_print_jobs},
)
