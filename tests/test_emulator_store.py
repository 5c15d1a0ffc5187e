"""The emulator's store and clock as pure code: the change log walk that every delta round relies on."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from syncer.emulator.clock import Clock, iso, parse_iso
from syncer.emulator.families.directory.users import USER, users_of
from syncer.emulator.families.mailbox.kinds import MESSAGE
from syncer.emulator.store import ChangeEvent, Store


def _store() -> Store:
    return Store(clock=Clock(), lock=threading.RLock(), seed=1)


def _ids(emitted: list) -> list[str]:
    return [e.item_id for e in emitted]


def test_walk_reports_each_item_once_with_its_latest_state() -> None:
    store = _store()
    ts = store.tenant("t")
    col = users_of(ts)
    for i in range(5):
        store.put(col, f"u{i}", {"id": f"u{i}", "v": 0}, change_type="created", notify=False)
    since = store.seq
    store.put(col, "u1", {"id": "u1", "v": 1}, change_type="updated", notify=False)
    store.put(col, "u1", {"id": "u1", "v": 2}, change_type="updated", notify=False)
    store.remove(col, "u3", reason="deleted", notify=False)
    everything, _, _, done = col.walk(since=0, hwm=store.seq, pos=None, sub=0, limit=100, include_removed=False)
    assert done and _ids(everything) == ["u0", "u2", "u4", "u1"]
    changes, _, _, _ = col.walk(since=since, hwm=store.seq, pos=None, sub=0, limit=100, include_removed=True)
    assert [(e.item_id, e.removed, (e.item or {}).get("v")) for e in changes] == [("u1", None, 2), ("u3", "deleted", 0)]


def test_walk_pages_resume_inside_a_seed_block() -> None:
    store = _store()
    col = users_of(store.tenant("t"))
    block = store.add_block(col, count=10, make=lambda uid, i: {"id": uid, "i": i})
    store.put(col, block.item_id(4), {"id": block.item_id(4), "i": 40}, change_type="updated", notify=False)
    hwm = store.seq
    seen: list[int] = []
    pos, sub, done = None, 0, False
    while not done:
        page, pos, sub, done = col.walk(since=0, hwm=hwm, pos=pos, sub=sub, limit=3, include_removed=False)
        assert len(page) <= 3
        seen += [e.item["i"] for e in page if e.item]
    assert seen == [0, 1, 2, 3, 5, 6, 7, 8, 9, 40]  # the changed one is reported at its own entry
    assert col.live_count() == 10
    store.remove(col, block.item_id(0), reason="deleted", notify=False)
    assert col.live_count() == 9 and col.get(block.item_id(0)) is None


def test_items_changed_after_the_high_water_mark_wait_for_the_next_round() -> None:
    store = _store()
    col = users_of(store.tenant("t"))
    store.put(col, "a", {"id": "a"}, change_type="created", notify=False)
    hwm = store.seq
    store.put(col, "a", {"id": "a", "x": 1}, change_type="updated", notify=False)
    first, _, _, _ = col.walk(since=0, hwm=hwm, pos=None, sub=0, limit=10, include_removed=False)
    second, _, _, _ = col.walk(since=hwm, hwm=store.seq, pos=None, sub=0, limit=10, include_removed=True)
    assert _ids(first) == [] and _ids(second) == ["a"]


def test_changed_since_tracks_properties_for_return_minimal() -> None:
    store = _store()
    col = users_of(store.tenant("t"))
    store.put(col, "a", {"id": "a", "x": 1, "y": 1}, change_type="created", notify=False)
    mark = store.seq
    store.put(col, "a", {"id": "a", "x": 2, "y": 1}, change_type="updated", notify=False)
    store.put(col, "b", {"id": "b"}, change_type="created", notify=False)
    assert col.changed_since("a", mark) == frozenset({"x"})
    assert col.changed_since("b", mark) is None  # new since the mark: everything is new


def test_listeners_get_events_with_collections_and_resource() -> None:
    store = _store()
    ts = store.tenant("t")
    events: list[ChangeEvent] = []
    store.add_listener(events.append)
    users_of(ts).put("u", {"id": "u", "userPrincipalName": "u@x"}, store.next_seq())
    col = ts.collection(MESSAGE, {"user": "u", "mailFolder": "F1"})
    store.put(col, "m1", {"id": "m1", "@odata.etag": 'W/"1"'}, change_type="created")
    (event,) = events
    assert event.collections == ("users/u/mailfolders/f1/messages", "users/u/messages",
                                 "users/u@x/mailfolders/f1/messages", "users/u@x/messages")
    assert event.resource == "Users/u/Messages/m1" and event.mailbox == "u"
    assert event.resource_data == {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": "Users/u/Messages/m1",
                                   "id": "m1", "@odata.etag": 'W/"1"'}
    assert USER.parents == ()


def test_ids_are_reproducible_from_the_seed() -> None:
    assert [_store().new_guid() for _ in range(1)] == [_store().new_guid()]


def test_clock_freeze_advance_and_graph_dates() -> None:
    clock = Clock()
    clock.freeze(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(90)
    assert iso(clock.now()) == "2026-01-01T00:01:30Z"
    clock.unfreeze()
    assert clock.time() >= datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC).timestamp()
    assert parse_iso("2026-03-20T11:00:00.0000000+00:00") == datetime(2026, 3, 20, 11, tzinfo=UTC)
    assert parse_iso("2026-03-20T11:00:00") == datetime(2026, 3, 20, 11, tzinfo=UTC)
