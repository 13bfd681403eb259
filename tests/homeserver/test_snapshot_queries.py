"""The state snapshot costs a fixed number of SQL statements, whatever the room size."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from homeserver.live.ephemeral import PresenceService
from homeserver.live.hub import Hub
from homeserver.rooms.service import NewMember, RoomSpec, create_room_txn
from homeserver.rooms.state import RoomStateService
from storage import db, migrate
from storage import participants as pstore
from storage.db import atomic

T = TypeVar("T")


class TracedReaders:
    """Runs reads inline on one connection and counts the statements they execute."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements = 0
        conn.set_trace_callback(self._count)

    def _count(self, sql: str) -> None:
        self.statements += 1

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(self.conn, *args)


def room_with(conn: sqlite3.Connection, members: int) -> tuple[str, str]:
    with atomic(conn):
        ids = []
        for n in range(members):
            pid = f"p-{members}-{n}"
            pstore.create_participant_txn(
                conn,
                participant_id=pid,
                username=f"u{members}x{n}",
                display_name=pid,
                participant_type="human",
                password_hash=None,
                is_admin=False,
                now_ms=1,
            )
            ids.append(pid)
        spec = RoomSpec("group", "r", None, False, tuple(NewMember(p) for p in ids[1:]))
        room = create_room_txn(conn, ids[0], spec, now_ms=1, max_members=10_000)
    return room.room_id, ids[0]


async def no_types(ids: list[str]) -> dict[str, str]:
    return {}


async def statements_for(members: int) -> int:
    conn = db.connect(":memory:")
    migrate.migrate(conn)
    room_id, owner = room_with(conn, members)
    readers = TracedReaders(conn)
    presence = PresenceService(
        Hub("t", bytes), no_types, tenant_id="t", idle_after=300, heartbeat_ttl=120
    )
    service = RoomStateService(None, readers, presence, lambda: 2)  # type: ignore[arg-type]
    readers.statements = 0
    snap = await service.snapshot(owner, room_id)
    assert len(snap.members) == members
    return readers.statements


async def test_snapshot_statement_count_does_not_grow_with_members() -> None:
    small, large = await statements_for(5), await statements_for(1000)
    assert small == large
    assert small <= 15
