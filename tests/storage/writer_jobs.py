"""Writer jobs the store tests share: a room to write into, and one message appended."""

from __future__ import annotations

import sqlite3

from protocol.events import Event, EventDraft, EventType
from storage import events as event_store
from storage import rooms as room_store


def make_room(conn: sqlite3.Connection, room_id: str = "room-a") -> None:
    room_store.create_room_txn(
        conn,
        room_id=room_id,
        room_type="group",
        name=None,
        topic=None,
        is_public=False,
        creator_id="p-a",
        thresholds={},
        now_ms=1,
    )


def append_message(conn: sqlite3.Connection, room_id: str, n: int) -> Event:
    """Message ``n`` of ``p-a`` in ``room_id`` (content ``{"n": n}``)."""
    draft = EventDraft(room_id, EventType.MESSAGE, "p-a", "p-a", {"n": n})
    return event_store.append_event_txn(conn, draft, now_ms=1_000 + n)
