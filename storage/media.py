"""The media and media_refs tables: rows, references, the access check, GC candidates.

Files live on disk (homeserver.media.service); this module only knows rows. Rows with
the same ``sha256`` share one file, so a file may go only when the last row
naming its hash is deleted (:func:`delete_media_txn` says which hashes those are).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.media import referenced_media_ids


@dataclass(frozen=True, slots=True)
class Media:
    media_id: str
    uploader_id: str
    sha256: str
    size: int
    mime_type: str
    filename: str | None
    width: int | None
    height: int | None
    parent_id: str | None
    thumb_kind: str | None
    created_at_ms: int


_COLUMNS = (
    "media_id, uploader_id, sha256, size, mime_type, filename, width, height,"
    " parent_id, thumb_kind, created_at_ms"
)


def _row(row: sqlite3.Row) -> Media:
    return Media(
        media_id=row["media_id"],
        uploader_id=row["uploader_id"],
        sha256=row["sha256"],
        size=row["size"],
        mime_type=row["mime_type"],
        filename=row["filename"],
        width=row["width"],
        height=row["height"],
        parent_id=row["parent_id"],
        thumb_kind=row["thumb_kind"],
        created_at_ms=row["created_at_ms"],
    )


def insert_media_txn(conn: sqlite3.Connection, items: Sequence[Media]) -> None:
    conn.executemany(
        f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                m.media_id,
                m.uploader_id,
                m.sha256,
                m.size,
                m.mime_type,
                m.filename,
                m.width,
                m.height,
                m.parent_id,
                m.thumb_kind,
                m.created_at_ms,
            )
            for m in items
        ],
    )


def get_media(conn: sqlite3.Connection, media_id: str) -> Media | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM media WHERE media_id = ?", (media_id,)).fetchone()
    return None if row is None else _row(row)


def thumbnails_of(conn: sqlite3.Connection, media_id: str) -> dict[str, Media]:
    """The thumbnails of an original, by kind."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM media WHERE parent_id = ? ORDER BY thumb_kind", (media_id,)
    ).fetchall()
    return {row["thumb_kind"]: _row(row) for row in rows}


def can_read(conn: sqlite3.Connection, media: Media, participant_id: str) -> bool:
    """The access rule (homeserver.media.service): the uploader, or a joined member of a
    room where an event references this item or, for a thumbnail, its original."""
    if media.uploader_id == participant_id:
        return True
    row = conn.execute(
        "SELECT 1 FROM media_refs r JOIN memberships m"
        " ON m.room_id = r.room_id AND m.participant_id = ? AND m.membership = 'join'"
        " WHERE r.media_id IN (?, ?) LIMIT 1",
        (participant_id, media.media_id, media.parent_id or media.media_id),
    ).fetchone()
    return row is not None


def record_refs_txn(
    conn: sqlite3.Connection, *, event_id: str, room_id: str, content: Mapping[str, Any]
) -> int:
    """Note every existing media item ``content`` names; returns how many rows were added."""
    wanted = referenced_media_ids(content)
    if not wanted:
        return 0
    marks = ", ".join("?" for _ in wanted)
    cur = conn.execute(
        "INSERT OR IGNORE INTO media_refs (media_id, room_id, event_id)"
        f" SELECT media_id, ?, ? FROM media WHERE media_id IN ({marks})",
        (room_id, event_id, *wanted),
    )
    return cur.rowcount


def unref_event_txn(conn: sqlite3.Connection, event_id: str) -> None:
    """Forget the references of a redacted message and of all its edits."""
    conn.execute(
        "DELETE FROM media_refs WHERE event_id = ? OR event_id IN"
        " (SELECT event_id FROM events WHERE relates_to = ? AND type = 'swp.room.edit')",
        (event_id, event_id),
    )


def unreferenced(conn: sqlite3.Connection, *, older_than_ms: int) -> list[Media]:
    """Originals created before ``older_than_ms`` that no event references (neither
    them nor any of their thumbnails), followed by their thumbnails."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM media m WHERE m.parent_id IS NULL AND m.created_at_ms < ?"
        " AND NOT EXISTS (SELECT 1 FROM media_refs r WHERE r.media_id = m.media_id)"
        " AND NOT EXISTS (SELECT 1 FROM media t JOIN media_refs r ON r.media_id = t.media_id"
        "                 WHERE t.parent_id = m.media_id)"
        " ORDER BY m.created_at_ms",
        (older_than_ms,),
    ).fetchall()
    originals = [_row(r) for r in rows]
    thumbs = [t for m in originals for t in thumbnails_of(conn, m.media_id).values()]
    return originals + thumbs


def delete_media_txn(conn: sqlite3.Connection, media_ids: Iterable[str]) -> list[str]:
    """Delete rows; return the hashes no remaining row names (their files may go)."""
    shas: set[str] = set()
    for media_id in media_ids:
        row = conn.execute("SELECT sha256 FROM media WHERE media_id = ?", (media_id,)).fetchone()
        if row is None:
            continue
        shas.add(row["sha256"])
        conn.execute("DELETE FROM media_refs WHERE media_id = ?", (media_id,))
        conn.execute("DELETE FROM media WHERE media_id = ?", (media_id,))
    return sorted(
        sha
        for sha in shas
        if conn.execute("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None
    )


def sha_in_use(conn: sqlite3.Connection, sha256: str) -> bool:
    row = conn.execute("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
    return row is not None
