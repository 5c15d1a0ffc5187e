"""Basic notifications naming one message or contact of a whole mailbox: read by id, not by a delta per folder.

A declaration over a whole mailbox (``users/{id}/messages``, ``users/{id}/contacts``) is one subscription but one
delta scope per folder: Graph's message and contact delta work per folder only
(https://learn.microsoft.com/en-us/graph/api/message-delta, https://learn.microsoft.com/en-us/graph/api/contact-delta).
A basic notification names the item (``resource`` ``Users/{id}/Messages/{mid}``, ``resourceData.id``:
https://learn.microsoft.com/en-us/graph/outlook-change-notifications-overview) but not its folder, so marking the
subscription's scopes dirty costs one delta pass (a request, a transaction) per folder: ~8 for one change.

Instead the item is read by id, with the mirror's ``$select`` plus ``parentFolderId``, and written into its folder's
scope exactly as an undecrypted rich notification is (:func:`syncer.worker.rich.write_notified`: under the scope's
lease, never older over newer by ``lastModifiedDateTime``, a 404 a removal). One read per notification, up to 20
of them to a request when a drain has many (:mod:`syncer.worker.batched`). Where the placement is uncertain the
scopes are marked dirty as before, and delta stays the truth:

* the folder has no scope yet (a new folder: the container's pass finds it), or the item is gone (404) and no row
  says where it was;
* the item's row is owned by another folder's scope (a move that kept the id): that folder's pass, which may be
  writing the older row, and the new folder's both run;
* the read or the write failed;
* more notified items of one mailbox wait in one drain than it has folder scopes: one pass per folder is then
  fewer requests than one read per item.

Only containers take this path. A notification of a scope that is one collection (a single folder, a
calendarView) already costs one pass, which is one request and coalesces every notification waiting for it; a read
by id would save nothing. Events stay with calendarView for the reasons :mod:`syncer.worker.rich` gives.
"""

from __future__ import annotations

import re

from syncer.inbox import InboxItem
from syncer.worker.rich import Change
from syncer.worker.scopes import Scope

__all__ = ["FAMILIES", "change_of", "fetched"]

#: The resource types whose whole-mailbox notifications are read by id: the item's ``parentFolderId`` names its scope.
FAMILIES = frozenset({"message", "contact"})
#: The item a notification's resource names: ``Users/{u}/Messages/{id}`` or ``users('u')/messages('id')``.
_ITEM = re.compile(r"/(messages|contacts)(?:/|\(')([^/'()]+)'?\)?$", re.IGNORECASE)
#: ``resourceData``'s ``@odata.type`` per family (Graph writes ``#Microsoft.Graph.Message``).
_TYPES = {"message": "#microsoft.graph.message", "contact": "#microsoft.graph.contact"}


def fetched(target: Scope) -> bool:
    """Whether basic notifications of *target* are read by id (a whole mailbox's messages or contacts)."""
    family = target.strategy.key.split(".", 1)[0]
    return target.container and target.mirror is not None and family in FAMILIES


def change_of(item: InboxItem, target: Scope) -> Change | None:
    """The read-by-id change of basic notification *item* of container *target*, or None when it names no item of
    the target's type (a notification on the collection itself: the scopes are marked dirty)."""
    if not item.resource or not fetched(target):
        return None
    family = target.strategy.key.split(".", 1)[0]
    named = _ITEM.search(item.resource.strip().partition("?")[0])
    if named is None or named.group(1).lower() != f"{family}s":
        return None
    data = item.payload.get("resourceData")
    odata_type = data.get("@odata.type") if isinstance(data, dict) else None
    if isinstance(odata_type, str) and odata_type.lower() != _TYPES[family]:
        return None
    item_id = item.resource_id or named.group(2)
    # A deleted item is read too: a 404 is its removal, and the read costs what a delete's pass would.
    return Change(item.id, item.event.lower(), str(item_id), item.resource, None, undecrypted=True)

