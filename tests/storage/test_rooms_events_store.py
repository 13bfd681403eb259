"""Rooms, memberships, spans and the append-only event DAG (storage layer).

Every test runs against ``:memory:`` and an on-disk file (the ``conn`` fixture).
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import orjson
import pytest

from protocol.canonical import content_hash
from protocol.events import Event, EventDraft, EventType, verify_event_id
from storage import events as event_store
from storage import participants as pstore
from storage import rooms as room_store
from storage.db import atomic
from storage.errors import Conflict, NotFound

# ---------------------------------------------------------------- builders

THRESHOLDS = {"events_default": 0, "redact_other": 50, "kick": 50, "ban": 50}

_clock = itertools.count(1_700_000_000_000)


def now_ms() -> int:
    """A strictly increasing fake clock (distinct timestamps keep ids distinct)."""
    return next(_clock)


def participant(conn: sqlite3.Connection, name: str, ptype: str = "human") -> str:
    pid = f"p-{name}"
    with atomic(conn):
        pstore.create_participant_txn(
            conn,
            participant_id=pid,
            username=name,
            display_name=name.title(),
            participant_type=ptype,
            password_hash=None,
            is_admin=False,
            now_ms=now_ms(),
        )
    return pid


def room(conn: sqlite3.Connection, room_id: str, creator: str = "p-nobody") -> str:
    with atomic(conn):
        room_store.create_room_txn(
            conn,
            room_id=room_id,
            room_type="group",
            name=room_id,
            topic=None,
            is_public=False,
            creator_id=creator,
            thresholds=THRESHOLDS,
            now_ms=now_ms(),
        )
    return room_id


def append(
    conn: sqlite3.Connection,
    room_id: str,
    sender: str = "p-nobody",
    content: dict[str, Any] | None = None,
    *,
    event_type: EventType = EventType.MESSAGE,
    event_uuid: str | None = None,
    at_ms: int | None = None,
) -> Event:
    draft = EventDraft(
        room_id,
        event_type,
        sender,
        sender,
        content if content is not None else {"msgtype": "swp.text", "body": "hi"},
        event_uuid=event_uuid,
    )
    with atomic(conn):
        return event_store.append_event_txn(
            conn, draft, now_ms=at_ms if at_ms is not None else now_ms()
        )


def member(conn: sqlite3.Connection, room_id: str, pid: str, membership: str) -> Event:
    """Append a member event and record the membership at its position (as the service does)."""
    with atomic(conn):
        ts = now_ms()
        event = event_store.append_event_txn(
            conn,
            EventDraft(room_id, EventType.MEMBER, pid, pid, {"membership": membership}),
            now_ms=ts,
        )
        room_store.set_membership_txn(
            conn,
            room_id=room_id,
            participant_id=pid,
            membership=membership,
            changed_by=pid,
            now_ms=ts,
            position=event.stream_position,
        )
    return event


def spans(conn: sqlite3.Connection, room_id: str, pid: str) -> list[tuple[int, int | None]]:
    rows = conn.execute(
        "SELECT from_pos, to_pos FROM membership_spans WHERE room_id = ? AND participant_id = ?"
        " ORDER BY from_pos",
        (room_id, pid),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def raw_events(conn: sqlite3.Connection) -> list[Event]:
    """Every stored row, without the read model, in position order."""
    rows = conn.execute("SELECT * FROM events ORDER BY stream_position").fetchall()
    return [event_store._row_event(r) for r in rows]


# ---------------------------------------------------------------- rooms and memberships


def test_create_and_read_room(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    room(conn, "room-a", alice)
    got = room_store.get_room(conn, "room-a")
    assert got is not None
    assert got.creator_id == alice
    assert got.state == "open"
    assert got.thresholds == THRESHOLDS
    assert got.last_event_id is None
    assert got.last_depth == 0
    assert got.member_count == 0
    assert room_store.get_room(conn, "room-missing") is None


def test_dm_key_is_unique(conn: sqlite3.Connection) -> None:
    def dm(room_id: str) -> None:
        with atomic(conn):
            room_store.create_room_txn(
                conn,
                room_id=room_id,
                room_type="dm",
                name=None,
                topic=None,
                is_public=False,
                creator_id="p-a",
                thresholds=THRESHOLDS,
                now_ms=now_ms(),
                dm_key="p-a|p-b",
            )

    dm("room-dm1")
    with pytest.raises(Conflict):
        dm("room-dm2")
    found = room_store.find_dm(conn, "p-a|p-b")
    assert found is not None
    assert found.room_id == "room-dm1"
    assert room_store.get_room(conn, "room-dm2") is None


def test_update_room_rejects_unknown_fields(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    with atomic(conn):
        room_store.update_room_txn(conn, "room-a", {"name": "new", "state": "closed"}, now_ms())
    got = room_store.get_room(conn, "room-a")
    assert got is not None
    assert (got.name, got.state) == ("new", "closed")
    with pytest.raises(ValueError, match="not a room field"), atomic(conn):
        room_store.update_room_txn(conn, "room-a", {"last_depth": 99}, now_ms())
    got = room_store.get_room(conn, "room-a")
    assert got is not None
    assert got.last_depth == 0


def test_join_opens_a_span_at_the_join_position(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    room(conn, "room-a", alice)
    append(conn, "room-a")
    joined = member(conn, "room-a", alice, "join")
    assert spans(conn, "room-a", alice) == [(joined.stream_position, None)]
    m = room_store.get_membership(conn, "room-a", alice)
    assert m is not None
    assert m.membership == "join"
    assert m.joined_at_ms is not None
    assert room_store.joined_ids(conn, "room-a") == [alice]
    assert ("room-a", alice) in room_store.all_joined(conn)
    assert room_store.count_rooms_for(conn, alice) == 1
    assert [r.room_id for r in room_store.rooms_for(conn, alice, limit=10, after=None)] == [
        "room-a"
    ]
    got = room_store.get_room(conn, "room-a")
    assert got is not None
    assert got.member_count == 1


def test_leave_closes_the_span_at_the_leave_position(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    room(conn, "room-a", alice)
    joined = member(conn, "room-a", alice, "join")
    append(conn, "room-a")
    left = member(conn, "room-a", alice, "leave")
    assert spans(conn, "room-a", alice) == [(joined.stream_position, left.stream_position)]
    m = room_store.get_membership(conn, "room-a", alice)
    assert m is not None
    assert m.membership == "leave"
    assert room_store.joined_ids(conn, "room-a") == []
    assert room_store.count_rooms_for(conn, alice) == 0
    # Leaving again changes nothing.
    member(conn, "room-a", alice, "leave")
    assert spans(conn, "room-a", alice) == [(joined.stream_position, left.stream_position)]


def test_rejoin_opens_a_new_span(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    room(conn, "room-a", alice)
    j1 = member(conn, "room-a", alice, "join")
    l1 = member(conn, "room-a", alice, "leave")
    append(conn, "room-a")
    j2 = member(conn, "room-a", alice, "join")
    assert spans(conn, "room-a", alice) == [
        (j1.stream_position, l1.stream_position),
        (j2.stream_position, None),
    ]


def test_ban_closes_the_span_and_a_second_join_keeps_it(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    room(conn, "room-a", alice)
    j = member(conn, "room-a", bob, "join")
    first = room_store.get_membership(conn, "room-a", bob)
    assert first is not None
    # A repeated join (e.g. a profile change) neither opens a span nor resets joined_at.
    member(conn, "room-a", bob, "join")
    again = room_store.get_membership(conn, "room-a", bob)
    assert again is not None
    assert again.joined_at_ms == first.joined_at_ms
    assert spans(conn, "room-a", bob) == [(j.stream_position, None)]
    b = member(conn, "room-a", bob, "ban")
    assert spans(conn, "room-a", bob) == [(j.stream_position, b.stream_position)]
    m = room_store.get_membership(conn, "room-a", bob)
    assert m is not None
    assert m.membership == "ban"


def test_invite_and_ban_without_join_open_no_span(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    room(conn, "room-a", alice)
    member(conn, "room-a", bob, "invite")
    assert spans(conn, "room-a", bob) == []
    member(conn, "room-a", bob, "ban")
    assert spans(conn, "room-a", bob) == []
    invited = room_store.list_members(conn, "room-a", memberships=("invite", "ban"))
    assert [(m.participant_id, m.membership) for m in invited] == [(bob, "ban")]


def test_power_level_and_read_only_survive_membership_changes(conn: sqlite3.Connection) -> None:
    alice = participant(conn, "alice")
    room(conn, "room-a", alice)
    member(conn, "room-a", alice, "join")
    with atomic(conn):
        room_store.set_power_txn(
            conn,
            room_id="room-a",
            participant_id=alice,
            power_level=100,
            read_only=True,
            now_ms=now_ms(),
        )
    member(conn, "room-a", alice, "leave")
    m = room_store.get_membership(conn, "room-a", alice)
    assert m is not None
    assert m.power_level == 100
    assert m.read_only


def test_membership_needs_existing_room_and_participant(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    with pytest.raises(sqlite3.IntegrityError), atomic(conn):
        room_store.set_membership_txn(
            conn,
            room_id="room-a",
            participant_id="p-ghost",
            membership="join",
            changed_by="p-ghost",
            now_ms=now_ms(),
            position=1,
        )
    assert room_store.get_membership(conn, "room-a", "p-ghost") is None


# ---------------------------------------------------------------- append and chain


def test_positions_increase_and_the_chain_links(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    events = [append(conn, "room-a", content={"n": n}) for n in range(5)]
    positions = [e.stream_position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    assert events[0].depth == 1
    assert events[0].prev_event_ids == ()
    for before, after in itertools.pairwise(events):
        assert after.depth == before.depth + 1
        assert after.prev_event_ids == (before.event_id,)
    head = conn.execute(
        "SELECT last_event_id, last_depth FROM rooms WHERE room_id = 'room-a'"
    ).fetchone()
    assert (head[0], head[1]) == (events[-1].event_id, 5)
    assert event_store.max_position(conn) == positions[-1]


def test_returned_event_equals_stored_event(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    sent = append(conn, "room-a", "p-alice", {"msgtype": "swp.text", "body": "héllo ✓"})
    read = event_store.get_event(conn, sent.event_id)
    assert read == sent
    assert read.content_hash == content_hash({"msgtype": "swp.text", "body": "héllo ✓"})
    assert event_store.get_event(conn, "evt-missing") is None


def test_rooms_chain_independently_with_global_positions(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    room(conn, "room-b")
    order = ["room-a", "room-b", "room-b", "room-a", "room-b", "room-a", "room-a"]
    made = [append(conn, r, content={"i": i}) for i, r in enumerate(order)]
    positions = [e.stream_position for e in made]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(made)
    for room_id in ("room-a", "room-b"):
        chain = [e for e in made if e.room_id == room_id]
        assert [e.depth for e in chain] == list(range(1, len(chain) + 1))
        assert chain[0].prev_event_ids == ()
        for before, after in itertools.pairwise(chain):
            assert after.prev_event_ids == (before.event_id,)


def test_every_stored_event_verifies(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    room(conn, "room-b")
    alice = participant(conn, "alice")
    member(conn, "room-a", alice, "join")
    for i in range(10):
        append(conn, "room-a" if i % 3 else "room-b", alice, {"i": i, "x": [1.5, None]})
    stored = raw_events(conn)
    assert len(stored) == 11
    assert all(verify_event_id(e) for e in stored)
    assert all(verify_event_id(e) for e in event_store.events_after(conn, 0))


@pytest.mark.sqlite_only  # drops a SQLite trigger to tamper
def test_tampering_with_a_stored_field_breaks_verification(conn: sqlite3.Connection) -> None:
    """Read back with the trigger out of the way: any changed identity field shows."""
    room(conn, "room-a")
    sent = append(conn, "room-a", "p-alice")
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("UPDATE events SET sender_id = 'p-mallory' WHERE event_id = ?", (sent.event_id,))
    tampered = event_store.get_event(conn, sent.event_id)
    assert tampered is not None
    assert not verify_event_id(tampered)


def test_append_to_a_missing_room_is_not_found(conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound):
        append(conn, "room-missing")
    assert event_store.max_position(conn) == 0


def test_a_rolled_back_append_leaves_the_chain_head_alone(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    first = append(conn, "room-a")

    def append_then_fail() -> None:
        with atomic(conn):
            event_store.append_event_txn(
                conn, EventDraft("room-a", EventType.MESSAGE, "p-a", "p-a", {"n": 1}), now_ms=1
            )
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        append_then_fail()
    assert event_store.max_position(conn) == first.stream_position
    second = append(conn, "room-a")
    assert second.prev_event_ids == (first.event_id,)
    assert second.depth == 2
    # AUTOINCREMENT: a rolled-back position is never handed out below the last one.
    assert second.stream_position > first.stream_position


# ---------------------------------------------------------------- history paging


def test_room_history_pages_back_and_forward_with_exclusive_from(
    conn: sqlite3.Connection,
) -> None:
    room(conn, "room-a")
    room(conn, "room-b")
    mine = []
    for i in range(7):
        mine.append(append(conn, "room-a", content={"i": i}))
        append(conn, "room-b", content={"i": i})
    pos = [e.stream_position for e in mine]

    def page(from_pos: int | None, direction: event_store.Direction, limit: int) -> list[int]:
        return [
            e.stream_position
            for e in event_store.room_history(
                conn, "room-a", from_pos=from_pos, direction=direction, limit=limit
            )
        ]

    assert page(None, "back", 3) == pos[::-1][:3]
    assert page(pos[4], "back", 3) == [pos[3], pos[2], pos[1]]
    assert page(pos[0], "back", 3) == []
    assert page(None, "forward", 3) == pos[:3]
    assert page(pos[2], "forward", 3) == pos[3:6]
    assert page(pos[6], "forward", 3) == []
    assert page(None, "forward", 100) == pos

    # Walking every page forward and backward visits every event exactly once.
    walked: list[int] = []
    cursor: int | None = None
    while chunk := page(cursor, "forward", 2):
        walked += chunk
        cursor = chunk[-1]
    assert walked == pos
    walked = []
    cursor = None
    while chunk := page(cursor, "back", 2):
        walked += chunk
        cursor = chunk[-1]
    assert walked == pos[::-1]


# ---------------------------------------------------------------- visibility spans


def _visible(conn: sqlite3.Connection, pid: str, since: int = 0) -> list[int]:
    return [
        e.stream_position for e in event_store.visible_since(conn, pid, since=since, limit=10_000)
    ]


def test_visible_since_honours_spans(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    room(conn, "room-a", alice)
    room(conn, "room-b", alice)
    member(conn, "room-a", alice, "join")
    member(conn, "room-b", alice, "join")
    before_bob = append(conn, "room-a", alice).stream_position
    join1 = member(conn, "room-a", bob, "join").stream_position
    during1 = append(conn, "room-a", alice).stream_position
    other_room = append(conn, "room-b", alice).stream_position
    leave = member(conn, "room-a", bob, "leave").stream_position
    after_leave = append(conn, "room-a", alice).stream_position
    join2 = member(conn, "room-a", bob, "join").stream_position
    during2 = append(conn, "room-a", alice).stream_position

    seen = _visible(conn, bob)
    assert seen == [join1, during1, leave, join2, during2]
    assert before_bob not in seen
    assert after_leave not in seen
    assert other_room not in seen
    # since is exclusive and combines with the spans
    assert _visible(conn, bob, since=during1) == [leave, join2, during2]
    assert _visible(conn, bob, since=leave) == [join2, during2]
    assert event_store.visible_since(conn, bob, since=0, limit=2)[-1].stream_position == during1
    # alice joined both rooms first and never left: she sees every event
    assert _visible(conn, alice) == [e.stream_position for e in raw_events(conn)]


def test_ban_is_the_last_event_a_banned_member_sees(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    room(conn, "room-a", alice)
    join = member(conn, "room-a", bob, "join").stream_position
    ban = member(conn, "room-a", bob, "ban").stream_position
    append(conn, "room-a", alice)
    assert _visible(conn, bob) == [join, ban]


def test_nothing_is_visible_to_a_stranger(conn: sqlite3.Connection) -> None:
    alice, bob = participant(conn, "alice"), participant(conn, "bob")
    room(conn, "room-a", alice)
    member(conn, "room-a", alice, "join")
    append(conn, "room-a", alice)
    member(conn, "room-a", bob, "invite")
    assert _visible(conn, bob) == []


# ---------------------------------------------------------------- append-only triggers

IDENTITY_UPDATES = [
    ("event_id", "'evt-forged'"),
    ("room_id", "'room-other'"),
    ("type", "'swp.room.name'"),
    ("sender_id", "'p-mallory'"),
    ("actor_id", "'p-mallory'"),
    ("content_hash", "'sha256:forged'"),
    ("origin_ts_ms", "origin_ts_ms + 1"),
    ("depth", "depth + 1"),
    ("prev_event_ids", "'[]'"),
    ("relates_to", "'evt-other'"),
    ("stream_position", "stream_position + 1000"),
]


def _two_events(conn: sqlite3.Connection) -> tuple[str, str]:
    room(conn, "room-a")
    first = append(conn, "room-a", "p-alice", {"body": "first"})
    second = append(conn, "room-a", "p-alice", {"body": "second"})
    return first.event_id, second.event_id


@pytest.mark.parametrize(("column", "value"), IDENTITY_UPDATES)
def test_identity_columns_cannot_change(conn: sqlite3.Connection, column: str, value: str) -> None:
    _, eid = _two_events(conn)
    before = conn.execute("SELECT * FROM events WHERE event_id = ?", (eid,)).fetchone()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(f"UPDATE events SET {column} = {value} WHERE event_id = ?", (eid,))
    # Not even alongside a legitimate-looking redaction.
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(
            f"UPDATE events SET {column} = {value}, content = '{{}}', redacted_at_ms = 1"
            " WHERE event_id = ?",
            (eid,),
        )
    after = conn.execute("SELECT * FROM events WHERE event_id = ?", (eid,)).fetchone()
    assert tuple(after) == tuple(before)


@pytest.mark.parametrize(
    "assignment",
    [
        'content = \'{"body": "rewritten"}\'',
        "content = '{}'",
        "redacted_at_ms = 5",
        'content = \'{"body": "x"}\', redacted_at_ms = 5',
        "redacted_by = 'p-mallory'",
        "redaction_reason = 'because'",
    ],
)
def test_content_changes_only_as_redaction(conn: sqlite3.Connection, assignment: str) -> None:
    first, _ = _two_events(conn)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(f"UPDATE events SET {assignment} WHERE event_id = ?", (first,))
    read = event_store.get_event(conn, first)
    assert read is not None
    assert read.content == {"body": "first"}
    assert not read.is_redacted


def test_delete_is_refused(conn: sqlite3.Connection) -> None:
    first, second = _two_events(conn)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE event_id = ?", (first,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events")
    assert [e.event_id for e in raw_events(conn)] == [first, second]


def test_redaction_erasure_is_the_one_allowed_update(conn: sqlite3.Connection) -> None:
    first, second = _two_events(conn)
    original = event_store.get_event(conn, first)
    assert original is not None
    with atomic(conn):
        conn.execute(
            "UPDATE events SET content = '{}', redacted_at_ms = 1234, redacted_by = 'p-mod',"
            " redaction_reason = 'spam' WHERE event_id = ?",
            (first,),
        )
    erased = event_store.get_event(conn, first)
    assert erased is not None
    assert erased.content == {}
    assert erased.is_redacted
    assert erased.redacted_by == "p-mod"
    assert erased.redaction_reason == "spam"
    # The id is over the redacted form, so it still verifies, and the chain holds.
    assert verify_event_id(erased)
    assert erased.content_hash == original.content_hash != content_hash({})
    later = event_store.get_event(conn, second)
    assert later is not None
    assert later.prev_event_ids == (first,)
    row = conn.execute("SELECT content FROM events WHERE event_id = ?", (first,)).fetchone()
    assert orjson.loads(row[0]) == {}

    # Re-stating the same redaction (e.g. a second redact) is allowed ...
    conn.execute(
        "UPDATE events SET content = '{}', redacted_at_ms = 1234, redacted_by = 'p-mod2'"
        " WHERE event_id = ?",
        (first,),
    )
    # ... but the redaction time never moves, and content never comes back.
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(
            "UPDATE events SET content = '{}', redacted_at_ms = 9999 WHERE event_id = ?", (first,)
        )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute(
            'UPDATE events SET content = \'{"body": "first"}\', redacted_at_ms = 1234'
            " WHERE event_id = ?",
            (first,),
        )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET redacted_at_ms = NULL WHERE event_id = ?", (first,))


# ---------------------------------------------------------------- idempotency


def test_idempotent_event_inside_and_outside_the_window(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    sent = append(conn, "room-a", "p-alice", event_uuid="uuid-1", at_ms=10_000)
    found = event_store.idempotent_event(
        conn, sender_id="p-alice", event_uuid="uuid-1", not_before_ms=10_000
    )
    assert found is not None
    assert found.event_id == sent.event_id
    assert (
        event_store.idempotent_event(
            conn, sender_id="p-alice", event_uuid="uuid-1", not_before_ms=10_001
        )
        is None
    )
    # The key is per sender.
    assert (
        event_store.idempotent_event(conn, sender_id="p-bob", event_uuid="uuid-1", not_before_ms=0)
        is None
    )
    assert (
        event_store.idempotent_event(
            conn, sender_id="p-alice", event_uuid="uuid-2", not_before_ms=0
        )
        is None
    )


def test_idempotency_rows_are_pruned_and_reusable(conn: sqlite3.Connection) -> None:
    room(conn, "room-a")
    append(conn, "room-a", "p-alice", event_uuid="uuid-1", at_ms=10_000)
    append(conn, "room-a", "p-alice", event_uuid="uuid-2", at_ms=20_000)
    with atomic(conn):
        assert event_store.prune_idempotency_txn(conn, older_than_ms=15_000) == 1
    assert (
        event_store.idempotent_event(
            conn, sender_id="p-alice", event_uuid="uuid-1", not_before_ms=0
        )
        is None
    )
    # After the window the same key may name a new event.
    again = append(conn, "room-a", "p-alice", event_uuid="uuid-2", at_ms=400_000)
    found = event_store.idempotent_event(
        conn, sender_id="p-alice", event_uuid="uuid-2", not_before_ms=100_000
    )
    assert found is not None
    assert found.event_id == again.event_id
