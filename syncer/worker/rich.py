"""Rich notifications write the mirror: the row from the decrypted payload, no Graph read.

A rich notification (``includeResourceData``) carries the changed resource itself, encrypted; the receiver
decrypts it into the inbox row's ``decryptedContent``. For the types whose payload *is* the resource (Outlook
message, event and contact with the subscription's ``$select``; Teams chatMessage, chat, channel, team,
conversationMember: https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#supported-resources)
the worker writes the row from it straight away, through the same :func:`~syncer.worker.writer.apply_items` as a
delta page (same typed columns, same ``_raw``), instead of marking the scope dirty and reading Graph.

The rules, each tested:

* **Under the scope's lease.** A batch of payloads of one scope is written in one transaction that takes the
  scope's lease first, like a fetch by id (:mod:`syncer.worker.fetch`): a pass holds the lease for its whole
  round, so a payload is never written between two pages of a round (where the round's older page would then
  overwrite it, or its sweep remove it). While a pass holds it the notifications wait in the inbox.
* **Never older over newer.** A payload older than the row (``lastModifiedDateTime``, or a chat's
  ``lastUpdatedDateTime``) is skipped; one equal to the row is a duplicate (Graph redelivers) and writes
  nothing. Types with no such property (channel, team, member) take the last notification received.
* **Removed stays removed**, unless the type can be restored in Graph (a Teams message's soft delete is undone:
  https://learn.microsoft.com/en-us/graph/api/chatmessage-undosoftdelete) and the payload is newer than the
  row. An Outlook item that Graph deleted never comes back under its id; a late payload cannot revive it.
* **Not decryptable, then fetched.** A rich item the receiver could not decrypt (certificate rotated out,
  signature mismatch) is stored without content; here its resource is read by id (with the mirror's
  ``$select``) and written the same way. A 404 is a removal. Nothing is lost. A basic notification of one item
  of a whole mailbox takes the same path (:mod:`syncer.worker.notified`), asking ``parentFolderId`` as well.
* **Placed, or left to delta.** An item goes to the folder scope its ``parentFolderId`` names, or its row's; a
  folder no scope follows yet, a row another folder's scope holds (a move that kept the id), or more reads than
  the mailbox has folders mark the mailbox's scopes dirty instead.
* **Delta stays the truth.** Safety-net passes run as before and find nothing to change after payloads
  (``tests/test_rich_rows.py``); a payload that cannot be placed (a message in a folder no scope follows yet)
  marks its scope dirty instead.

What is written from where is counted in ``syncer_rows_written_total{source="payload"|"fetch"|"delta"}``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import mirror
from syncer.errors import NotFoundError
from syncer.inbox import InboxItem
from syncer.metrics import Metrics
from syncer.worker import scopestate
from syncer.worker.scopes import Scope, ScopeIndex, child_scope
from syncer.worker.scopestate import LEASE_TTL, Clock, ScopeStore, utcnow
from syncer.worker.sync import PageSource, PassResult, take_scope
from syncer.worker.tablesql import table_of
from syncer.worker.writer import RowWriter, apply_items

__all__ = ["Change", "Read", "Reading", "Written", "as_read", "change_of", "finish_notified", "plan_notified",
           "read_notified", "read_path", "read_planned", "reads_of", "route", "stale", "to_item", "writable",
           "write_changes", "write_notified"]

log = logging.getLogger("syncer.worker.rich")

#: Resource types (the strategy key's family) whose rich payload is the resource as a GET returns it.
WRITABLE = frozenset({"message", "event", "contact", "chatMessage", "chat", "channel", "team", "conversationMember",
                      "presence"})
#: Outlook events: the payload holds the subscription's ``$select`` only, while calendarView delta gives every
#: property; the payload's properties are merged into the row's item instead of replacing it. Only rows that exist
#: are updated so: whether a new event belongs to the mirror (inside the window; an occurrence rather than its
#: series) is calendarView's to say, so a new one marks its scope dirty.
MERGED = frozenset({"event"})
#: The notification's own addressing annotations, which the item does not carry in a delta page or a GET.
_ADDRESSING = ("@odata.id", "@odata.type")
VERSION_FIELDS = ("lastModifiedDateTime", "lastUpdatedDateTime")


@dataclass(frozen=True)
class Change:
    """One rich notification, as the writer needs it."""

    inbox_id: int
    change_type: str
    item_id: str
    resource: str
    payload: Mapping[str, Any] | None
    """The decrypted resource; None when the receiver could not decrypt it or Graph sent none (a delete)."""
    undecrypted: bool = False
    """Graph sent the resource but the receiver could not decrypt it (or it was forgotten, on a replay), or sent a
    basic notification of a whole mailbox's item (:mod:`syncer.worker.notified`): read by id."""
    fetched: bool = False
    """:attr:`payload` is what a GET by id returned (for an undecrypted change)."""
    folder: str | None = None
    """The item's ``parentFolderId`` as the GET returned it, when the mirror does not keep it (for routing only)."""


@dataclass
class Written:
    """What :func:`write_changes` did with one scope's changes."""

    result: PassResult
    from_payload: int = 0
    fetched: int = 0
    skipped: int = 0  # older than the row, a duplicate, or a removed row a payload cannot revive
    ids: list[int] = field(default_factory=list)  # the inbox rows done
    unplaced: list[Change] = field(default_factory=list)  # left to a delta pass (a new event)


def writable(scope: Scope) -> bool:
    """Whether *scope*'s notifications are rich and written as rows (its mirror holds the resource itself)."""
    return scope.rich and scope.mirror is not None and scope.strategy.key.split(".", 1)[0] in WRITABLE


def change_of(item: InboxItem) -> Change | None:
    """The change of inbox *item* (of a rich subscription), or None when it names no item.

    Graph sends a permanent delete without resource data, even on a rich subscription: a ``deleted`` item with
    no content is a removal, written without a read."""
    payload = item.payload
    if "decryptedContent" not in payload and "encryptionCertificateId" not in payload and item.event != "deleted":
        return None
    content = payload.get("decryptedContent")
    data = payload.get("resourceData")
    item_id = item.resource_id or (content.get("id") if isinstance(content, Mapping) else None)
    if item_id is None and isinstance(data, Mapping):
        item_id = data.get("id")
    if item_id is None or not item.resource:
        return None
    content = content if isinstance(content, Mapping) else None
    return Change(item.id, item.event.lower(), str(item_id), item.resource, content,
                  undecrypted=content is None and "encryptionCertificateId" in payload)


def to_item(payload: Mapping[str, Any], scope: Scope) -> dict[str, Any]:
    """The payload as a delta page gives the item: without the notification's addressing annotations, and with
    every ``$select``ed property present (a selected property Graph has no value for reads as null)."""
    item = {k: v for k, v in payload.items() if k not in _ADDRESSING}
    if scope.strategy.select and scope.mirror is not None:
        for name in scope.mirror.select:
            item.setdefault(name, None)
    return item


def version(item: Mapping[str, Any]) -> datetime | None:
    """When Graph last changed *item*, where its type says so."""
    for name in VERSION_FIELDS:
        value = item.get(name)
        if isinstance(value, str):
            try:
                converted = mirror.convert(value, "datetime")
            except (TypeError, ValueError):
                return None
            return converted if isinstance(converted, datetime) else None
    return None


def stale(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether writing *new* over the row's item *old* would go back in time or repeat it (a duplicate)."""
    if old is None:
        return False
    if new == old:
        return True
    new_at, old_at = version(new), version(old)
    return new_at is not None and old_at is not None and new_at < old_at


# --- routing: which scope a change belongs to ---------------------------------------------------------------


def route(
    engine: Engine, index: ScopeIndex, target: Scope, changes: Sequence[Change], *, known: set[str] | None = None
) -> tuple[dict[str, tuple[Scope, list[Change]]], list[Change]]:
    """Group *changes* notified under *target* by the scope whose rows they are; those no scope can take yet
    (a message in a folder not registered yet) are returned apart, to mark their scope dirty.

    A container (a whole mailbox) writes no rows itself: a message goes to the folder its payload names
    (``parentFolderId``, when declared or read) if that folder is followed; a message without one goes to the folder
    of its existing row. A message whose row another folder's scope holds (a move that kept its id) is returned
    apart too: that folder's pass may be writing the older row under its own lease, so both folders' passes
    settle it.
    *known* is the scope keys under the container, when the caller read them already.
    """
    routed: dict[str, tuple[Scope, list[Change]]] = {}
    if not target.container:
        routed[target.key] = (target, list(changes))
        return routed, []
    assert target.mirror is not None
    table, _members = table_of(target.mirror)  # built once per mirror: a Table is costly to build per notification
    with engine.connect() as connection:
        if known is None:
            known = set(scopestate.keys_under(connection, target.tenant_id, target.parent_key))
        ids = sorted({c.item_id for c in changes})
        found = dict(connection.execute(
            sa.select(table.c.id, table.c._scope).where(table.c.tenant_id == target.tenant_id, table.c.id.in_(ids))
        ).all()) if ids else {}
    leftovers: list[Change] = []
    for change in changes:
        scope: Scope | None = None
        folder = change.folder or (change.payload.get("parentFolderId") if change.payload else None)
        owner = found.get(change.item_id)
        if isinstance(folder, str):
            candidate = child_scope(target, folder)
            # Not followed yet, or moved under the same id (another folder holds the row): left to the passes.
            if candidate.key in known and owner in (None, candidate.key):
                scope = candidate
        elif owner in known:
            scope = index.resolve(target.tenant_id, str(owner), target.parent_key)
        if scope is None:
            leftovers.append(change)
        else:
            routed.setdefault(scope.key, (scope, []))[1].append(change)
    return routed, leftovers


# --- writing ------------------------------------------------------------------------------------------------

#: Runs a write under a scope's lease, or returns None while a pass of the scope runs in this process.
Exclusive = Callable[[Scope, Callable[[], Written]], "Written | None"]


@dataclass
class Reading:
    """What :func:`read_notified` found for the notifications under one scope: what to write where."""

    target: Scope
    changes: list[Change]
    routed: dict[str, tuple[Scope, list[Change]]] = field(default_factory=dict)
    unplaced: list[Change] = field(default_factory=list)  # left to a delta pass of the target's scopes
    failed: list[Change] = field(default_factory=list)  # their read failed: left to a delta pass likewise
    fallback: str | None = None
    """``many``: none is read or written, the target's scopes are marked dirty (the reason is counted)."""
    known: set[str] | None = None  # the scope keys under a container, when the plan read them


#: An item's read by id: the change with the item (:func:`as_read`), or why the read failed.
Read = Mapping[str, "Change | Exception"]


def read_notified(engine: Engine, index: ScopeIndex, sources: Mapping[str, PageSource], target: Scope,
                  changes: Sequence[Change]) -> Reading:
    """The read half of the drain's step for rich (and read-by-id) notifications under *target*: the items read
    by id, and each change's scope. Reads only (Graph, and the database), so that the drain runs many at once and
    writes their results one after the other: SQLite takes one writer at a time, and writers racing for its lock
    wait in its busy handler's sleeps. Database errors are raised."""
    return read_planned(engine, index, sources, plan_notified(engine, target, changes))


def plan_notified(engine: Engine, target: Scope, changes: Sequence[Change]) -> Reading:
    """*changes* under *target*, with fallback ``many`` when reading them by id would cost more than a pass per
    folder; then :func:`reads_of` says what to read (one by one: :func:`read_planned`; in envelopes:
    :mod:`syncer.worker.batched`) and :func:`finish_notified` routes what was read."""
    reading = Reading(target, list(changes))
    reads = {c.item_id for c in reading.changes if c.undecrypted}
    if target.container and len(reads) > 1:
        with engine.connect() as connection:
            reading.known = set(scopestate.keys_under(connection, target.tenant_id, target.parent_key))
        if len(reads) > max(len(reading.known) - 1, 1):
            # More reads by id than the mailbox has folder scopes (the container is one of *known*): one delta
            # pass per folder is fewer requests.
            reading.fallback = "many"
    return reading


def reads_of(reading: Reading) -> dict[str, Change]:
    """The items *reading* reads by id, one change each: an item notified several times in a batch is read once
    (the read returns its latest state). None when it falls back."""
    if reading.fallback is not None:
        return {}
    reads: dict[str, Change] = {}
    for change in reading.changes:
        if change.undecrypted:
            reads.setdefault(change.item_id, change)
    return reads


def read_planned(engine: Engine, index: ScopeIndex, sources: Mapping[str, PageSource], reading: Reading) -> Reading:
    """*reading*'s items read one request each, then routed."""
    if reading.fallback is not None:
        return reading
    read: dict[str, Change | Exception] = {}
    for item_id, change in reads_of(reading).items():
        try:
            read[item_id] = _fetched(sources[reading.target.tenant_id], reading.target, change)
        except Exception as error:  # this item falls back; the others are written
            read[item_id] = error
    return finish_notified(engine, index, reading, read)


def finish_notified(engine: Engine, index: ScopeIndex, reading: Reading, read: Read) -> Reading:
    """*reading* with what was read by id in place of each undecrypted change, and each change's scope. A change
    whose read failed goes to :attr:`Reading.failed` (its scopes are marked dirty), the others are written. Reads
    the database only; its errors are raised."""
    if reading.fallback is not None:
        return reading
    target, placed, failures = reading.target, [], {}
    for change in reading.changes:
        if change.undecrypted:
            found = read[change.item_id]
            if isinstance(found, Exception):
                failures[change.item_id] = found
                reading.failed.append(change)
                continue
            change = replace(change, payload=found.payload, folder=found.folder, undecrypted=False, fetched=True)
        placed.append(change)
    if failures:
        log.warning("reading %d of %d notified items of %s by id failed (%s): syncing the scope instead",
                    len(failures), len(reading.changes), target.key, next(iter(failures.values())))
    reading.changes = placed
    reading.routed, reading.unplaced = route(engine, index, target, placed, known=reading.known)
    return reading


def write_notified(
    engine: Engine,
    reading: Reading,
    *,
    exclusive: Exclusive,
    worker: str,
    clock: Clock,
    metrics: Metrics,
    outdated: Callable[[str], None] = lambda reason: None,
) -> tuple[list[int], list[int]]:
    """The write half (after :func:`read_notified`): the inbox rows done (rows written, or the scopes marked dirty
    when they could not be), and those to retry shortly (a pass holds their scope). *outdated* is told when the
    mirror table no longer has the worker's layout (the notifications wait for a worker that does)."""
    target = reading.target
    if reading.fallback is not None:
        with engine.begin() as connection:
            scopestate.mark_dirty(connection, target.tenant_id, [target.parent_key], now=clock())
        metrics.inc("syncer_notified_marked_total", len(reading.changes), reason=reading.fallback)
        return [c.inbox_id for c in reading.changes], []
    if reading.failed:
        metrics.inc("syncer_notified_marked_total", len(reading.failed), reason="failed")
    done: list[int] = []
    waiting: list[int] = []
    unplaced = list(reading.unplaced)
    for scope, batch in reading.routed.values():
        try:
            written = exclusive(scope, lambda s=scope, b=batch: write_changes(  # type: ignore[misc]
                engine, s, b, worker=worker, clock=clock))
        except Exception as error:
            log.warning("writing %d rich notifications of %s failed (%s): syncing the scope instead",
                        len(batch), scope.key, error)
            unplaced += batch
            continue
        if written is None or written.result.outcome != "ok":
            if written is not None and written.result.outcome == "outdated":
                outdated(written.result.error or "the spec changed")
            waiting += [c.inbox_id for c in batch]
            continue
        metrics.inc("syncer_rows_written_total", written.from_payload, source="payload")
        metrics.inc("syncer_rows_written_total", written.fetched, source="fetch")
        done += written.ids
        unplaced += written.unplaced
    if unplaced or reading.failed:
        with engine.begin() as connection:
            scopestate.mark_dirty(connection, target.tenant_id, [target.parent_key], now=clock())
        if unplaced:
            metrics.inc("syncer_notified_marked_total", len(unplaced), reason="unplaced")
        done += [c.inbox_id for c in unplaced + reading.failed]
    return done, waiting


def write_changes(
    engine: Engine,
    scope: Scope,
    changes: Sequence[Change],
    *,
    worker: str,
    clock: Clock = utcnow,
) -> Written:
    """Write *changes* (in notification order) into *scope*'s rows under its lease, in one transaction.

    A ``busy`` result (another worker holds the lease) wrote nothing: the caller keeps the notifications and tries
    again. Database errors are raised.
    """
    writer = RowWriter(engine, scope)
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=LEASE_TTL)
    with engine.begin() as connection:
        # force: a scope postponed because Graph throttled its reads still takes payloads, which read nothing.
        _, refused = take_scope(store, connection, now=clock(), force=True)
        if refused is not None:
            return Written(refused)
        run_id = store.start_run(connection, full=False)
        rows = _rows(connection, writer, {c.item_id for c in changes})
        items: list[Mapping[str, Any]] = []
        done = Written(PassResult(scope.key, "ok", run_id=run_id))
        for change in changes:
            item = _item_of(change, scope, rows)
            if item is None:
                done.unplaced.append(change)
                continue
            done.ids.append(change.inbox_id)
            if not _applies(item, rows.get(change.item_id), scope):
                done.skipped += 1
                continue
            items.append(item)
            deleted = scope.strategy.deleted_property
            rows[change.item_id] = _Row(item, removed="@removed" in item or bool(deleted and item.get(deleted)))
            if change.fetched:
                done.fetched += 1
            else:
                done.from_payload += 1
        outcome = apply_items(connection, writer, items, now=clock(), run_id=run_id)
        store.update_run(connection, run_id, outcome="ok", finished_at=clock(), pages=1,
                         upserted=outcome.upserted, deleted=outcome.deleted)
        store.release_lease(connection)
    done.result = PassResult(scope.key, "ok", run_id=run_id, pages=1, items=len(items), upserted=outcome.upserted,
                             deleted=outcome.deleted)
    return done


@dataclass
class _Row:
    item: Mapping[str, Any] | None
    removed: bool


def _rows(connection: Connection, writer: RowWriter, ids: set[str]) -> dict[str, _Row]:
    t = writer.table
    if not ids:
        return {}
    found = connection.execute(
        sa.select(t.c.id, t.c._raw, t.c._deleted_at).where(t.c.tenant_id == writer.scope.tenant_id, t.c.id.in_(sorted(ids)))
    ).all()
    out: dict[str, _Row] = {}
    for row_id, raw, deleted_at in found:
        item = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
        out[str(row_id)] = _Row(item if isinstance(item, Mapping) else None, removed=deleted_at is not None)
    return out


def _item_of(change: Change, scope: Scope, rows: Mapping[str, _Row]) -> Mapping[str, Any] | None:
    """The item to write for *change*; None when a delta pass must bring it (see :data:`MERGED`)."""
    payload = change.payload
    restorable = scope.strategy.deleted_property is not None
    if payload is None or "@removed" in payload or (change.change_type == "deleted" and not restorable
                                                     and not change.fetched):
        # Graph sends a permanent delete without resource data; an Outlook item's delete is final. An item read
        # by id after its delete notification is what Graph holds now (a 404 is ``@removed``).
        return {"id": change.item_id, "@removed": {"reason": "deleted"}}
    item = to_item(payload, scope)
    if scope.strategy.key in MERGED:
        row = rows.get(change.item_id)
        if row is None or row.item is None or row.removed:
            return None
        item = {**row.item, **item}
        etag = item.get("@odata.etag")
        if "changeKey" in row.item and isinstance(etag, str) and etag.startswith('W/"'):
            # An Outlook item's etag is W/"{changeKey}" (the examples of https://learn.microsoft.com/en-us/graph/api/resources/event):
            # the version the merged item now is, which the payload's $select did not carry.
            item["changeKey"] = etag[3:].rstrip('"')
    return item


def _applies(item: Mapping[str, Any], row: _Row | None, scope: Scope) -> bool:
    if row is None:
        return True
    if "@removed" in item:
        return not row.removed
    if row.removed:
        # Revived only where Graph can restore the item, and only by a later state than the row's.
        new_at, old_at = version(item), version(row.item or {})
        return (scope.strategy.deleted_property is not None and new_at is not None
                and (old_at is None or new_at > old_at))
    return not stale(item, row.item)


def _fetched(source: PageSource, scope: Scope, change: Change) -> Change:
    """*change* with the item read by id as the mirror reads it ($select when it has one); a 404 is a removal."""
    try:
        body = source.get_json(read_path(scope, change))
    except NotFoundError:
        body = None
    return as_read(scope, change, body)


def read_path(scope: Scope, change: Change) -> str:
    """The GET of *change*'s item, relative to the versioned base: the mirror's ``$select`` when it has one, and
    under a container (a whole mailbox) ``parentFolderId`` too, which names the item's folder scope."""
    path = _path(change.resource)
    if scope.strategy.select and scope.mirror is not None:
        extra = [] if not scope.container or "parentFolderId" in scope.mirror.select else ["parentFolderId"]
        path += ("&" if "?" in path else "?") + "$select=" + ",".join(list(scope.mirror.select) + extra)
    return path


def as_read(scope: Scope, change: Change, body: Any) -> Change:
    """*change* with *body*, what the GET of :func:`read_path` answered (None for a 404: a removal). The item's
    ``parentFolderId`` is kept in :attr:`Change.folder`, and out of the row when the mirror does not select it."""
    if not isinstance(body, Mapping) or "id" not in body:
        payload: dict[str, Any] = {"id": change.item_id, "@removed": {"reason": "deleted"}}
    else:
        payload = {k: v for k, v in body.items() if k != "@odata.context"}
    placed = scope.container and scope.mirror is not None
    folder = payload.get("parentFolderId") if placed else None
    if placed and scope.mirror is not None and "parentFolderId" not in scope.mirror.select:
        payload.pop("parentFolderId", None)
    return replace(change, payload=payload, folder=folder if isinstance(folder, str) else None, undecrypted=False,
                   fetched=True)


def _path(resource: str) -> str:
    # Notifications spell a path "Users/{id}/Messages/{id}" or "teams('t')/channels('c')"; Graph's paths are
    # case-blind but a strict server may not be, so collection names go lower-case and keys become segments.
    path, _, _query = resource.strip().lstrip("/").partition("?")
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    parts = path.split("/")
    return "/".join(p.lower() if i % 2 == 0 else p for i, p in enumerate(parts))
