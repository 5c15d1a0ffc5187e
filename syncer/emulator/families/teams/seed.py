"""Seeding Teams (admin seed ``teamsPerUser`` / ``chatsPerUser``, and ``syncer emulator --seed-users``): cheap,
reproducible from the emulator's seed, no notifications.

Each content user owns *count* teams (a new Microsoft 365 group each, as ``POST /teams`` makes) with up to four other
users as members, a General, a standard and a private channel, and two root messages with a reply each; and has
*count* chats: a oneOnOne with the next user and a group chat of three, with a message each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncer.emulator.families.directory.users import users_of
from syncer.emulator.families.teams import model
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState


def _users(state: EmulatorState, ts: TenantStore, limit: int) -> list[dict[str, Any]]:
    col = users_of(ts)
    with state.lock:
        emitted, _, _, _ = col.walk(since=0, hwm=state.store.seq, pos=None, sub=0, limit=limit, include_removed=False)
    return [e.item for e in emitted if e.item is not None]


def _others(users: list[dict[str, Any]], uid: str, count: int) -> list[dict[str, Any]]:
    """The *count* users after *uid* in seed order (wrapping), never *uid* itself."""
    ids = [str(u["id"]) for u in users]
    start = ids.index(uid) + 1 if uid in ids else 0
    ring = users[start:] + users[:start]
    return [u for u in ring if str(u["id"]) != uid][:count]


def seed_teams(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* teams owned by *uid*, with channels, members and a short conversation."""
    owner = model.user_or_404(ts, uid)
    users = _users(state, ts, 50)
    for n in range(count):
        members = [(owner, ["owner"])] + [(u, []) for u in _others(users, uid, state.store.rng.randint(1, 4))]
        team = model.create_team(state, ts, display_name=f"{owner.get('displayName') or 'Team'} team {n}",
                                 description="Seeded team", visibility="private", members=members, notify=False)
        team_id = str(team["id"])
        general = str(team["internalId"])
        project = model.new_channel(state, ts, team_id, display_name="Project", description=None,
                                    membership_type="standard", notify=False)
        private = model.new_channel(state, ts, team_id, display_name="Leads", description=None,
                                    membership_type="private", notify=False)
        leads = model.member_col(ts, team=team_id, channel=str(private["id"]))
        model.add_member(state, ts, leads, owner, ["owner"], notify=False)
        for channel_id in (general, str(project["id"])):
            roots = model.roots_col(ts, team_id, channel_id)
            for i in range(2):
                author = members[i % len(members)][0]
                root = model.post_message(state, ts, roots, {"body": {"content": f"Seeded message {i}"}}, author,
                                          notify=False)
                replies = model.replies_col(ts, team_id, channel_id, str(root["id"]))
                model.post_message(state, ts, replies, {"body": {"content": "Seeded reply"}},
                                   members[-1][0], notify=False)


def seed_chats(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* oneOnOne and group chats of *uid*, with a message each."""
    user = model.user_or_404(ts, uid)
    users = _users(state, ts, 50)
    others = _others(users, uid, 2)
    if not others:
        return
    for n in range(count):
        one, _ = model.create_chat(state, ts, chat_type="oneOnOne", topic=None,
                                   members=[(user, ["owner"]), (others[0], ["owner"])], notify=False)
        group, _ = model.create_chat(state, ts, chat_type="group", topic=f"Seeded chat {n}",
                                     members=[(user, ["owner"]), *((o, ["owner"]) for o in others)], notify=False)
        for chat in (one, group):
            col = model.chat_messages_col(ts, str(chat["id"]))
            model.post_message(state, ts, col, {"body": {"content": f"Hello {n}"}}, user, notify=False)


def seed_channel_messages(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* root messages by *uid* in the General channel of a team it owns (one is made if it owns none): bulk
    channel traffic for benches, e.g. ``{"users": 10, "contentUsers": 1, "channelMessagesPerUser": 10000}``."""
    owner = model.user_or_404(ts, uid)
    team = next((t for _, t in model.team_col(ts).iter_live()
                 if any(m.get("userId") == uid and "owner" in (m.get("roles") or [])
                        for _, m in model.member_col(ts, team=str(t["id"])).iter_live())), None)
    if team is None:
        team = model.create_team(state, ts, display_name=f"{owner.get('displayName') or 'Bench'} bench",
                                 members=[(owner, ["owner"])], notify=False)
    roots = model.roots_col(ts, str(team["id"]), str(team["internalId"]))
    for i in range(count):
        model.post_message(state, ts, roots, {"body": {"content": f"Bench message {i}"}}, owner, notify=False)


def seed_channel_replies(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* replies by *uid* to each root message of the General channel of every team it owns: threads for
    benches (runs after ``channelMessagesPerUser``, e.g. ``{"channelMessagesPerUser": 2500,
    "channelRepliesPerMessage": 3}`` makes 10,000 messages in one channel)."""
    owner = model.user_or_404(ts, uid)
    for _, team in list(model.team_col(ts).iter_live()):
        if not any(m.get("userId") == uid and "owner" in (m.get("roles") or [])
                   for _, m in model.member_col(ts, team=str(team["id"])).iter_live()):
            continue
        team_id, general = str(team["id"]), str(team["internalId"])
        for _, root in list(model.roots_col(ts, team_id, general).iter_live()):
            if root.get("messageType") != "message":
                continue
            replies = model.replies_col(ts, team_id, general, str(root["id"]))
            for i in range(count):
                model.post_message(state, ts, replies, {"body": {"content": f"Bench reply {i}"}}, owner,
                                   notify=False)
