"""The mailbox: Outlook mail, calendar and contacts, and Microsoft To Do, which Exchange keeps in the same mailbox.

Two families share one path dispatcher (:mod:`.views`) and one provisioning (:mod:`.items`): ``outlook``
(:mod:`.kinds`) and ``todo`` (:mod:`.todo`). They differ in token lifetimes, permissions, subscription lifetimes and
lifecycle events, which their records below carry.
"""

from __future__ import annotations

from syncer.emulator.families.mailbox import items, kinds, sendmail, todo, views
from syncer.emulator.resources import Family
from syncer.emulator.subscription_model import ALL_CHANGE_TYPES, OUTLOOK_RICH_REFUSAL, SubscribableResource

#: Outlook resources also get subscriptionRemoved and missed
#: (https://learn.microsoft.com/graph/change-notifications-lifecycle-events).
_OUTLOOK_LIFECYCLE = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


def _outlook(resource_type: str, shapes: tuple[tuple[str, ...], ...], permissions: tuple[str, ...]) -> SubscribableResource:
    """An Outlook subscription entry: every change type, 3 days (1 with resource data), quota per mailbox."""
    return SubscribableResource(
        resource_type=resource_type,
        shapes=shapes,
        change_types=ALL_CHANGE_TYPES,
        max_minutes=10_080,
        max_minutes_rich=1_440,
        permissions=permissions,
        rich_refusal=OUTLOOK_RICH_REFUSAL,
        quota="mailbox",
        lifecycle_events=_OUTLOOK_LIFECYCLE,
        notification_id=True,
        mailbox_path=True,
        provision=items.ensure_mailbox,
    )


OUTLOOK = Family(
    name="outlook",
    resource_types=(kinds.MAIL_FOLDER, kinds.MESSAGE, kinds.EVENT, kinds.CONTACT_FOLDER, kinds.CONTACT),
    blueprints=(sendmail.bp, views.bp),
    subscribable=(
        _outlook("message", (("users", "*", "messages"), ("users", "*", "mailfolders", "*", "messages")),
                 ("Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All", "Mail.ReadBasic")),
        _outlook("event", (("users", "*", "events"), ("users", "*", "calendar", "events")),
                 ("Calendars.Read", "Calendars.ReadWrite")),
        _outlook("contact", (("users", "*", "contacts"), ("users", "*", "contactfolders", "*", "contacts")),
                 ("Contacts.Read", "Contacts.ReadWrite")),
    ),
    seeders={"messagesPerUser": items.seed_messages, "eventsPerUser": items.seed_events,
             "contactsPerUser": items.seed_contacts},
    mailbox_segments=frozenset({"messages", "mailfolders", "events", "calendar", "calendarview", "calendars",
                                "contacts", "contactfolders", "sendmail"}),
    extra_roles=sendmail.SEND_ROLES,
)

TODO = Family(
    name="todo",
    resource_types=(todo.TODO_LIST, todo.TODO_TASK),
    blueprints=(),  # served by the mailbox dispatcher, registered with OUTLOOK
    subscribable=(
        SubscribableResource(
            resource_type="todoTask",
            shapes=(("users", "*", "todo", "lists", "*", "tasks"),),
            change_types=ALL_CHANGE_TYPES,
            max_minutes=4_230,
            max_minutes_rich=None,
            permissions=("Tasks.ReadWrite.All", "Tasks.Read.All"),
            # A signed-in user subscribes with Tasks.ReadWrite, work or personal account; Tasks.Read reads the
            # tasks but is not enough to subscribe (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions).
            delegated_permissions=frozenset({"Tasks.ReadWrite"}),
            rich_refusal="Rich notifications are not supported for this resource type.",
            quota="none",
            mailbox_path=True,
            provision=items.ensure_mailbox,
        ),
    ),
    seeders={"tasksPerUser": items.seed_tasks},
    mailbox_segments=frozenset({"todo"}),
)
