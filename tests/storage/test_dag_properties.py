"""Property test: random rooms, appends, joins, leaves and redactions keep the DAG sound.

Plain sync Hypothesis (no trio fixtures); every run gets a fresh ``:memory:`` database.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol.events import Event, EventDraft, EventType, verify_event_id
from storage import db, migrate
from storage import events as event_store
from storage import participants as pstore
from storage import rooms as room_store
from storage.db import atomic

PARTICIPANTS = ("p-ann", "p-ben", "ai-cal")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(max_size=12),
)
contents = st.dictionaries(
    st.text(max_size=6),
    st.one_of(json_scalars, st.lists(json_scalars, max_size=3)),
    max_size=4,
)


class DagMachine(RuleBasedStateMachine):
    rooms = Bundle("rooms")

    def __init__(self) -> None:
        super().__init__()
        self.conn = db.connect(":memory:")
        migrate.migrate(self.conn)
        self.clock = itertools.count(1_700_000_000_000, 7)
        self.room_ids = itertools.count()
        # The model: what storage must agree with.
        self.chains: dict[str, list[str]] = {}
        self.contents: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.joined: set[tuple[str, str]] = set()
        self.spans: dict[tuple[str, str], list[list[int | None]]] = {}
        self.positions: dict[str, int] = {}

    def teardown(self) -> None:
        self.conn.close()

    @initialize()
    def make_participants(self) -> None:
        with atomic(self.conn):
            for pid in PARTICIPANTS:
                pstore.create_participant_txn(
                    self.conn,
                    participant_id=pid,
                    username=pid.split("-")[1],
                    display_name=pid,
                    participant_type="bot" if pid.startswith("ai-") else "human",
                    password_hash=None,
                    is_admin=False,
                    now_ms=next(self.clock),
                )

    # -- operations ----------------------------------------------------------

    def _append(self, draft: EventDraft) -> Event:
        event = event_store.append_event_txn(self.conn, draft, now_ms=next(self.clock))
        self.chains.setdefault(draft.room_id, []).append(event.event_id)
        self.contents[event.event_id] = draft.content
        self.order.append(event.event_id)
        self.positions[event.event_id] = event.stream_position
        return event

    @rule(target=rooms)
    def create_room(self) -> str:
        room_id = f"room-{next(self.room_ids)}"
        with atomic(self.conn):
            room_store.create_room_txn(
                self.conn,
                room_id=room_id,
                room_type="group",
                name=None,
                topic=None,
                is_public=False,
                creator_id=PARTICIPANTS[0],
                thresholds={},
                now_ms=next(self.clock),
            )
        self.chains[room_id] = []
        return room_id

    @rule(room_id=rooms, sender=st.sampled_from(PARTICIPANTS), content=contents)
    def send(self, room_id: str, sender: str, content: dict[str, Any]) -> None:
        with atomic(self.conn):
            self._append(EventDraft(room_id, EventType.MESSAGE, sender, sender, content))

    @rule(
        room_id=rooms,
        pid=st.sampled_from(PARTICIPANTS),
        membership=st.sampled_from(["join", "leave", "ban", "invite"]),
    )
    def change_membership(self, room_id: str, pid: str, membership: str) -> None:
        with atomic(self.conn):
            event = self._append(
                EventDraft(room_id, EventType.MEMBER, pid, pid, {"membership": membership})
            )
            room_store.set_membership_txn(
                self.conn,
                room_id=room_id,
                participant_id=pid,
                membership=membership,
                changed_by=pid,
                now_ms=event.origin_ts_ms,
                position=event.stream_position,
            )
        key = (room_id, pid)
        if membership == "join" and key not in self.joined:
            self.joined.add(key)
            self.spans.setdefault(key, []).append([event.stream_position, None])
        elif membership != "join" and key in self.joined:
            self.joined.discard(key)
            self.spans[key][-1][1] = event.stream_position

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data())
    def redact(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(self.order))
        self.conn.execute(
            "UPDATE events SET content = '{}', redacted_at_ms = COALESCE(redacted_at_ms, ?),"
            " redacted_by = 'p-ann' WHERE event_id = ?",
            (next(self.clock), event_id),
        )
        self.contents[event_id] = {}

    # -- invariants ----------------------------------------------------------

    @invariant()
    def positions_strictly_increase_globally(self) -> None:
        stored = self.conn.execute(
            "SELECT event_id, stream_position FROM events ORDER BY rowid"
        ).fetchall()
        assert [r[0] for r in stored] == self.order
        positions = [r[1] for r in stored]
        assert all(a < b for a, b in itertools.pairwise(positions))
        assert event_store.max_position(self.conn) == (positions[-1] if positions else 0)

    @invariant()
    def each_room_is_a_chain(self) -> None:
        for room_id, chain in self.chains.items():
            events = event_store.room_history(
                self.conn, room_id, from_pos=None, direction="forward", limit=10_000
            )
            assert [e.event_id for e in events] == chain
            previous: Event | None = None
            for event in events:
                if previous is None:
                    assert event.depth == 1
                    assert event.prev_event_ids == ()
                else:
                    assert event.depth == previous.depth + 1
                    assert event.prev_event_ids == (previous.event_id,)
                    assert event.stream_position > previous.stream_position
                previous = event
            head = room_store.get_room(self.conn, room_id)
            assert head is not None
            assert head.last_event_id == (chain[-1] if chain else None)
            assert head.last_depth == len(chain)

    @invariant()
    def every_event_verifies_and_keeps_its_content(self) -> None:
        for event in event_store.events_after(self.conn, 0):
            assert verify_event_id(event), event
            assert event.content == self.contents[event.event_id]
            assert event.stream_position == self.positions[event.event_id]

    @invariant()
    def visibility_follows_the_spans(self) -> None:
        all_events = event_store.events_after(self.conn, 0)
        for pid in PARTICIPANTS:
            expected = [
                e.stream_position
                for e in all_events
                if any(
                    lo is not None
                    and lo <= e.stream_position
                    and (hi is None or e.stream_position <= hi)
                    for lo, hi in self.spans.get((e.room_id, pid), [])
                )
            ]
            got = event_store.visible_since(self.conn, pid, since=0, limit=10_000)
            assert [e.stream_position for e in got] == expected


DagMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDagMachine = DagMachine.TestCase
