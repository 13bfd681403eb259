"""A model-based test of the message model: sends, edits, redactions, reactions, markers.

The state machine drives the writer-transaction functions directly on a fresh
in-memory database (no server, no trio) with a fake wall clock, predicts every
outcome (including refusals) from a small model, and checks after every step:

- history shows each live message's latest content (``original_content`` and
  ``edited_at`` when edited) and ``{}`` for redacted ones; reactions as modelled;
- no erased text (a redacted message's content or any of its edits) is left in
  the events table, or anywhere in the database dump;
- ``unread_count`` equals a brute-force recount for every member;
- stream positions strictly increase; every event id verifies; the chain holds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from homeserver.live.hub import Hub
from homeserver.rooms.messages import MessageLimits, MessageService, SendRequest
from homeserver.rooms.relations import MarkerResult, RelationService
from homeserver.rooms.service import NewMember, RoomSpec, create_room_txn
from homeserver.store.database import Readers, Writer
from protocol.errors import ApiError, Code, ErrorCode
from protocol.events import Event, EventType, verify_event_id
from storage import db, migrate
from storage import events as event_store
from storage import participants as pstore
from storage import relations as rel_store
from storage.db import atomic

T = TypeVar("T")

OWNER, MOD, MEMBER, OUTSIDER = "p-owner", "p-mod", "p-member", "p-outsider"
PEOPLE = (OWNER, MOD, MEMBER, OUTSIDER)
MEMBERS = (OWNER, MOD, MEMBER)
POWER = {OWNER: 100, MOD: 50, MEMBER: 0}
EDIT_WINDOW_MS = 1_000
IDEMPOTENCY_MS = 300_000
EMOJI = ("+1", "tada")
T0 = 1_800_000_000_000
STEPS = st.sampled_from([0, 1, 250, 999, 1_000, 1_001, IDEMPOTENCY_MS + 1])


@dataclass
class Msg:
    event_id: str
    sender: str
    actor: str
    position: int
    origin_ts: int
    contents: list[dict[str, Any]]
    edited_at: int | None = None
    redacted: bool = False
    edits: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [str(c["body"]) for c in self.contents]


class MessageModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.conn = db.connect(":memory:")
        migrate.migrate(self.conn)
        with atomic(self.conn):
            for pid in PEOPLE:
                pstore.create_participant_txn(
                    self.conn,
                    participant_id=pid,
                    username=pid[2:],
                    display_name=pid,
                    participant_type="human",
                    password_hash=None,
                    is_admin=False,
                    now_ms=self.now,
                )
            spec = RoomSpec("group", "model", None, False, (NewMember(MOD), NewMember(MEMBER)))
            self.room = create_room_txn(self.conn, OWNER, spec, self.now, 10).room_id
            self.conn.execute(
                "UPDATE memberships SET power_level = ? WHERE room_id = ? AND participant_id = ?",
                (POWER[MOD], self.room, MOD),
            )

        def clock() -> int:
            return self.now

        # The txn functions use neither the writer, the readers nor the hub.
        self.messages = MessageService(
            cast("Writer", None),
            cast("Readers", None),
            cast("Hub", None),
            clock,
            MessageLimits(65_536, IDEMPOTENCY_MS, 60.0, lambda _: 0),
        )
        self.relations = RelationService(
            cast("Writer", None),
            cast("Readers", None),
            cast("Hub", None),
            clock,
            tenant_id="default",
            max_content_bytes=65_536,
            edit_window_ms=EDIT_WINDOW_MS,
        )
        self.msgs: dict[str, Msg] = {}
        self.order: list[str] = []
        self.edit_of: dict[str, str] = {}  # edit event id -> message id
        self.reactions: set[tuple[str, str, str]] = set()  # (target, sender, emoji)
        self.markers: dict[str, tuple[str, int]] = {}  # member -> (event id, position)
        self.uuids: dict[tuple[str, str], tuple[str, int]] = {}  # (sender, uuid) -> (id, ts)
        self.erased: set[str] = set()
        self.counter = 0
        self.last_position = event_store.max_position(self.conn)

    def teardown(self) -> None:
        self.conn.close()

    # -- helpers ------------------------------------------------------------

    def tick(self, step: int) -> None:
        self.now += step

    def fresh_text(self) -> str:
        self.counter += 1
        return f"zq{self.counter:05d}q"

    def run(self, fn: Callable[..., T], *args: Any) -> T | ApiError:
        """Run a txn as the writer does: in a transaction, rolled back if it raises."""
        before = event_store.max_position(self.conn)
        try:
            with atomic(self.conn):
                return fn(self.conn, *args)
        except ApiError as exc:
            assert event_store.max_position(self.conn) == before
            return exc

    def pick(self, n: int) -> Msg:
        return self.msgs[self.order[n % len(self.order)]]

    def new_positions(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT stream_position FROM events WHERE stream_position > ? ORDER BY rowid",
            (self.last_position,),
        ).fetchall()
        positions = [int(r[0]) for r in rows]
        assert positions == sorted(set(positions))
        if positions:
            self.last_position = positions[-1]
        return positions

    @staticmethod
    def refused(out: object, code: Code) -> None:
        assert isinstance(out, ApiError), out
        assert out.code is code, out

    # -- rules --------------------------------------------------------------

    @initialize()
    def first_message(self) -> None:
        self.do_send(MEMBER, None, None, 0)

    @rule(
        who=st.sampled_from(PEOPLE),
        behalf=st.none() | st.sampled_from(PEOPLE),
        uuid=st.none() | st.sampled_from(["u1", "u2"]),
        step=STEPS,
    )
    def send(self, who: str, behalf: str | None, uuid: str | None, step: int) -> None:
        self.do_send(who, behalf, uuid, step)

    def do_send(self, who: str, behalf: str | None, uuid: str | None, step: int) -> None:
        self.tick(step)
        sender = behalf or who
        body = self.fresh_text()
        content = {"msgtype": "swp.text", "body": body}
        req = SendRequest(who, self.room, content, event_uuid=uuid, as_participant_id=behalf)
        out = self.run(self.messages._send_txn, req, sender, self.now)
        # Authorisation comes first: an idempotency key never hands an event to a
        # caller who may not send (as ``behalf``) in this room.
        if who == OUTSIDER:
            self.refused(out, ErrorCode.SW_NOT_MEMBER)
            return
        if behalf is not None and behalf != who:
            if who != OWNER:
                self.refused(out, ErrorCode.SW_ROOM_FORBIDDEN)
                return
            if behalf == OUTSIDER:
                self.refused(out, ErrorCode.SW_PARTICIPANT_NOT_FOUND)
                return
        earlier = self.uuids.get((sender, uuid)) if uuid is not None else None
        if earlier is not None and self.now - earlier[1] <= IDEMPOTENCY_MS:
            assert isinstance(out, Event), out
            assert out.event_id == earlier[0]
            assert self.new_positions() == []
            self.erased.add(body)  # never stored
            return
        assert isinstance(out, Event), out
        assert (out.sender_id, out.actor_id, out.content) == (sender, who, content)
        assert self.new_positions() == [out.stream_position]
        self.msgs[out.event_id] = Msg(
            out.event_id, sender, who, out.stream_position, self.now, [content]
        )
        self.order.append(out.event_id)
        if uuid is not None:
            self.uuids[(sender, uuid)] = (out.event_id, self.now)

    @precondition(lambda self: self.order)
    @rule(n=st.integers(0, 1_000), who=st.sampled_from(PEOPLE), step=STEPS)
    def edit(self, n: int, who: str, step: int) -> None:
        self.tick(step)
        msg = self.pick(n)
        content = {"msgtype": "swp.text", "body": self.fresh_text()}
        out = self.run(self.relations._edit_txn, who, self.room, msg.event_id, content, self.now)
        if who == OUTSIDER:
            self.refused(out, ErrorCode.SW_NOT_MEMBER)
        elif msg.redacted:
            self.refused(out, ErrorCode.SW_EVENT_NOT_FOUND)
        elif who not in (msg.sender, msg.actor):
            self.refused(out, ErrorCode.SW_ROOM_FORBIDDEN)
        elif self.now - msg.origin_ts > EDIT_WINDOW_MS:
            self.refused(out, ErrorCode.SW_EVENT_TOO_OLD_TO_EDIT)
        else:
            assert isinstance(out, Event), out
            assert out.event_id == msg.event_id
            assert out.content == content
            assert out.original_content == msg.contents[0]
            (position,) = self.new_positions()
            (edit_id,) = self.conn.execute(
                "SELECT event_id FROM events WHERE stream_position = ?", (position,)
            ).fetchone()
            msg.contents.append(content)
            msg.edited_at = self.now
            msg.edits.append(edit_id)
            self.edit_of[edit_id] = msg.event_id
            return
        # Refused: nothing stored (checked in run), and the text never was written.
        self.erased.add(str(content["body"]))

    @precondition(lambda self: self.order)
    @rule(
        n=st.integers(0, 1_000),
        who=st.sampled_from(PEOPLE),
        reason=st.none() | st.just("why"),
        step=STEPS,
    )
    def redact(self, n: int, who: str, reason: str | None, step: int) -> None:
        self.tick(step)
        msg = self.pick(n)
        out = self.run(self.relations._redact_txn, who, self.room, msg.event_id, reason, self.now)
        if who == OUTSIDER:
            self.refused(out, ErrorCode.SW_NOT_MEMBER)
            return
        if who not in (msg.sender, msg.actor) and POWER[who] < 50:
            self.refused(out, ErrorCode.SW_REDACT_FORBIDDEN)
            return
        assert isinstance(out, Event), out
        assert out.event_id == msg.event_id
        assert out.is_redacted
        assert out.content == {}
        if msg.redacted:
            assert self.new_positions() == []
            return
        assert len(self.new_positions()) == 1
        msg.redacted = True
        self.erased.update(msg.texts())
        self.reactions = {r for r in self.reactions if r[0] != msg.event_id}

    @precondition(lambda self: self.order)
    @rule(
        n=st.integers(0, 1_000),
        who=st.sampled_from(PEOPLE),
        emoji=st.sampled_from(EMOJI),
        add=st.booleans(),
        step=STEPS,
    )
    def react(self, n: int, who: str, emoji: str, add: bool, step: int) -> None:
        self.tick(step)
        msg = self.pick(n)
        out = self.run(
            self.relations._react_txn, who, self.room, msg.event_id, emoji, add, self.now
        )
        if who == OUTSIDER:
            self.refused(out, ErrorCode.SW_NOT_MEMBER)
            return
        if msg.redacted:
            self.refused(out, ErrorCode.SW_EVENT_NOT_FOUND)
            return
        assert isinstance(out, dict), out
        key = (msg.event_id, who, emoji)
        changed = (key in self.reactions) != add
        assert out["changed"] is changed
        assert len(self.new_positions()) == (1 if changed else 0)
        if add:
            self.reactions.add(key)
        else:
            self.reactions.discard(key)
        assert out["reactions"] == self.summary(msg.event_id)

    @rule(who=st.sampled_from(PEOPLE), n=st.integers(0, 10_000), step=STEPS)
    def mark(self, who: str, n: int, step: int) -> None:
        self.tick(step)
        rows = self.conn.execute(
            "SELECT event_id, type, relates_to, stream_position FROM events WHERE room_id = ?"
            " ORDER BY stream_position",
            (self.room,),
        ).fetchall()
        row = rows[n % len(rows)]
        out = self.run(self.relations._marker_txn, who, self.room, row["event_id"], self.now)
        if who == OUTSIDER:
            self.refused(out, ErrorCode.SW_NOT_MEMBER)
            return
        assert isinstance(out, MarkerResult), out
        # An edit is read as its message: the marker sits at the message.
        if row["type"] == EventType.EDIT:
            target = self.msgs[row["relates_to"]]
            wanted = (target.event_id, target.position)
        else:
            wanted = (row["event_id"], int(row["stream_position"]))
        current = self.markers.get(who)
        moves = current is None or wanted[1] > current[1]
        assert out.moved is moves
        if moves:
            self.markers[who] = wanted
        assert out.event_id == self.markers[who][0]
        assert out.unread_count == self.brute_unread(who)
        assert self.new_positions() == []

    # -- model queries ------------------------------------------------------

    def summary(self, target: str) -> dict[str, int]:
        counts = Counter(emoji for t, _, emoji in self.reactions if t == target)
        return dict(sorted(counts.items()))

    def brute_unread(self, member: str) -> int:
        marker = self.markers.get(member)
        position = marker[1] if marker else 0
        return sum(
            1
            for m in self.msgs.values()
            if m.position > position and m.sender != member and not m.redacted
        )

    # -- invariants ---------------------------------------------------------

    @invariant()
    def history_shows_the_read_model(self) -> None:
        events = event_store.room_history(
            self.conn, self.room, from_pos=None, direction="forward", limit=1_000_000
        )
        shown = [e for e in events if e.type is EventType.MESSAGE]
        assert [e.event_id for e in shown] == self.order
        assert not [e for e in events if e.type is EventType.EDIT]
        for event in shown:
            msg = self.msgs[event.event_id]
            assert (event.sender_id, event.actor_id) == (msg.sender, msg.actor)
            assert event.stream_position == msg.position
            if msg.redacted:
                assert event.is_redacted
                assert event.content == {}
                assert event.original_content is None
                assert event.edited_at_ms is None
                assert "reactions" not in event.extra
                continue
            assert not event.is_redacted
            assert event.content == msg.contents[-1]
            if len(msg.contents) > 1:
                assert event.original_content == msg.contents[0]
                assert event.edited_at_ms == msg.edited_at
            else:
                assert event.original_content is None
                assert event.edited_at_ms is None
            assert event.extra.get("reactions", {}) == self.summary(msg.event_id)
            assert rel_store.reaction_summary(self.conn, msg.event_id) == self.summary(msg.event_id)

    @invariant()
    def erased_text_is_gone(self) -> None:
        if not self.erased:
            return
        contents = [r[0] for r in self.conn.execute("SELECT content FROM events")]
        dump = "\n".join(self.conn.iterdump())
        for text in self.erased:
            assert not [c for c in contents if text in c], text
            assert text not in dump, text

    @invariant()
    def every_edit_is_its_own_event(self) -> None:
        for msg in self.msgs.values():
            rows = self.conn.execute(
                "SELECT event_id, content, redacted_at_ms FROM events"
                " WHERE relates_to = ? AND type = 'swp.room.edit' ORDER BY stream_position",
                (msg.event_id,),
            ).fetchall()
            assert [r["event_id"] for r in rows] == msg.edits
            if msg.redacted:
                assert all(r["content"] == "{}" and r["redacted_at_ms"] for r in rows)
            else:
                assert [json.loads(r["content"]) for r in rows] == msg.contents[1:]

    @invariant()
    def unread_counts_match_a_recount(self) -> None:
        for member in MEMBERS:
            marker = rel_store.get_read_marker(self.conn, self.room, member)
            expected = self.markers.get(member)
            found = (marker.event_id, marker.position) if marker else None
            assert found == expected
            count = rel_store.unread_count(self.conn, self.room, member)
            assert count == self.brute_unread(member)
            (sql_count,) = self.conn.execute(
                "SELECT COUNT(*) FROM events WHERE room_id = ? AND type = 'swp.room.message'"
                " AND stream_position > ? AND sender_id != ? AND redacted_at_ms IS NULL",
                (self.room, expected[1] if expected else 0, member),
            ).fetchone()
            assert count == sql_count

    @invariant()
    def ids_verify_and_the_chain_holds(self) -> None:
        previous: Event | None = None
        for event in event_store.stored_chain(self.conn, self.room):
            assert verify_event_id(event), event.event_id
            if previous is None:
                assert event.prev_event_ids == ()
                assert event.depth == 1
            else:
                assert event.stream_position > previous.stream_position
                assert event.prev_event_ids == (previous.event_id,)
                assert event.depth == previous.depth + 1
            previous = event
        head = self.conn.execute(
            "SELECT last_event_id FROM rooms WHERE room_id = ?", (self.room,)
        ).fetchone()
        assert previous is not None
        assert head[0] == previous.event_id


MessageModel.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestMessageModel = MessageModel.TestCase
