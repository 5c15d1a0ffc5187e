"""Microsoft To Do: task lists and tasks under /users/{id}/todo/lists.

Exchange stores To Do in the user's mailbox, so the mailbox's path dispatcher (:mod:`.views`) serves these paths and
provisions the default list ("Tasks") with the mailbox; this module says what the types are and what a new list or
task holds (https://learn.microsoft.com/graph/api/resources/todo-overview).
"""

from __future__ import annotations

from syncer.emulator.resources import DeltaSpec, ResourceType

_TASKS_READ = frozenset({"Tasks.Read.All", "Tasks.ReadWrite.All", "Tasks.Read", "Tasks.ReadWrite"})
TODO_LIST = ResourceType(
    name="todoTaskList",
    odata_type="#microsoft.graph.todoTaskList",
    notification_type="#Microsoft.Graph.todoTaskList",
    collection="users/{user}/todo/lists",
    family="todo",
    read_roles=_TASKS_READ,
    write_roles=frozenset({"Tasks.ReadWrite.All", "Tasks.ReadWrite"}),
    delegated_read=frozenset({"Tasks.Read", "Tasks.ReadWrite"}),
    delegated_write=frozenset({"Tasks.ReadWrite"}),
    personal_accounts=True,
    properties=("id", "displayName", "isOwner", "isShared", "wellknownListName"),
    read_only=frozenset({"id", "isOwner", "isShared", "wellknownListName"}),
    required_on_create=("displayName",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/todo/lists/{id}",
    etag=True,
)

TODO_TASK = ResourceType(
    name="todoTask",
    odata_type="#microsoft.graph.todoTask",
    notification_type="#Microsoft.Graph.todoTask",
    collection="users/{user}/todo/lists/{todoTaskList}/tasks",
    family="todo",
    read_roles=_TASKS_READ,
    write_roles=frozenset({"Tasks.ReadWrite.All", "Tasks.ReadWrite"}),
    delegated_read=frozenset({"Tasks.Read", "Tasks.ReadWrite"}),
    delegated_write=frozenset({"Tasks.ReadWrite"}),
    personal_accounts=True,
    properties=(
        "id", "body", "bodyLastModifiedDateTime", "categories", "completedDateTime", "createdDateTime",
        "dueDateTime", "hasAttachments", "importance", "isReminderOn", "lastModifiedDateTime", "recurrence",
        "reminderDateTime", "startDateTime", "status", "title",
    ),
    read_only=frozenset({"id", "createdDateTime", "lastModifiedDateTime", "bodyLastModifiedDateTime", "hasAttachments"}),
    required_on_create=("title",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    # [UNCONFIRMED] Graph's exact casing for To Do notification resources.
    notification_resource="Users/{user}/todo/lists/{todoTaskList}/tasks/{id}",
    etag=True,
)


def new_list(item: dict[str, object]) -> None:
    """Defaults of a new To Do list (before the request's properties apply)."""
    item.update({"isOwner": True, "isShared": False, "wellknownListName": "none"})


def new_task(item: dict[str, object], *, now: str) -> None:
    """Defaults of a new To Do task (before the request's properties apply)."""
    item.update({"status": "notStarted", "importance": "normal", "isReminderOn": False, "categories": [],
                 "body": {"content": "", "contentType": "text"}, "hasAttachments": False,
                 "bodyLastModifiedDateTime": now})
