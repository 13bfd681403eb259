"""Content-addressed media files in the data directory, and their garbage collection.

``<data_dir>/media/<ab>/<cd>/<sha256>`` holds the bytes (``ab``, ``cd``: the
first hex digits); ``tmp/`` holds uploads in flight, ``trash/`` files GC is
about to delete. Rows naming the files live in ``storage.media``. Blocking
file I/O: callers in the event loop run these in worker threads.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from protocol.media import blob_parts
from storage import media as media_store
from storage.media import Media


class BlobStore:
    """Content-addressed files under ``root``: ``ab/cd/<sha256>``, plus ``tmp/`` and ``trash/``."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.trash_dir = root / "trash"
        self._fsync = fsync

    def prepare(self) -> None:
        """Drop uploads a crash left half-written. Directories are made on first use."""
        if self.tmp.is_dir():
            for leftover in self.tmp.iterdir():
                leftover.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        a, b, name = blob_parts(sha256)
        return self.root / a / b / name

    def new_temp(self) -> tuple[IO[bytes], Path]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = self.tmp / f"up-{secrets.token_hex(12)}"
        return open(path, "xb"), path

    def write_temp(self, data: bytes) -> Path:
        handle, path = self.new_temp()
        with handle:
            handle.write(data)
            self._sync(handle)
        return path

    def _sync(self, handle: IO[bytes]) -> None:
        handle.flush()
        if self._fsync:
            os.fsync(handle.fileno())

    def finish_temp(self, handle: IO[bytes]) -> None:
        self._sync(handle)
        handle.close()

    def place(self, temp: Path, sha256: str) -> None:
        """Move a finished temp file to its content address (atomic; same bytes if present)."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        if self._fsync:
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def trash(self, sha256: str) -> Path | None:
        """Move a file aside (inside the GC transaction); None if it was not there."""
        final = self.path_for(sha256)
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        aside = self.trash_dir / f"{sha256}.{secrets.token_hex(6)}"
        try:
            os.replace(final, aside)
        except FileNotFoundError:
            return None
        return aside

    def restore(self, aside: Path, sha256: str) -> None:
        os.replace(aside, self.path_for(sha256))


# --------------------------------------------------------------------------- GC

GC_MIN_AGE_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class GcReport:
    removed: list[Media]  # originals first, then their thumbnails
    files: list[str]  # sha256 of every file deleted from disk
    bytes_freed: int
    dry_run: bool


def collect_garbage(
    conn: sqlite3.Connection, store: BlobStore, *, now_ms: int, min_age_ms: int, dry_run: bool
) -> GcReport:
    """Remove media no event references any more (``homeserver admin media-gc``).

    Candidates are originals older than ``min_age_ms`` (so uploads not yet
    posted are safe) that no event references, directly or through one of
    their thumbnails; they go with their thumbnails. A file goes only when no
    remaining row shares its sha256. Rows are deleted and files moved aside in
    one write transaction; the files are unlinked after the commit (and moved
    back if the commit fails). Safe to run while the server is up.
    """
    moved: list[tuple[Path, str]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        items = media_store.unreferenced(conn, older_than_ms=now_ms - min_age_ms)
        orphaned = media_store.delete_media_txn(conn, [m.media_id for m in items])
        sizes = {m.sha256: m.size for m in items}
        freed = sum(sizes[sha] for sha in orphaned)
        if dry_run:
            conn.execute("ROLLBACK")
            return GcReport(items, orphaned, freed, True)
        for sha in orphaned:
            aside = store.trash(sha)
            if aside is not None:
                moved.append((aside, sha))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for aside, sha in moved:
            store.restore(aside, sha)
        raise
    for aside, _ in moved:
        aside.unlink(missing_ok=True)
    return GcReport(items, orphaned, freed, False)
