"""Media: streamed uploads, content-addressed files, thumbnails, the access rule.

Storage
-------
Files live in the data directory, so a backup of the directory has them:
``<data_dir>/media/<ab>/<cd>/<sha256>`` (``ab``, ``cd``: the first hex digits).
An upload streams to ``media/tmp/`` while it is hashed (never held whole in
memory), then is renamed into place atomically (homeserver.media.blobs). Rows
(``storage.media``) hold the metadata. **Dedup**: the same bytes are stored
once on disk; each upload still gets its own ``media_id`` (its own uploader,
name and lifetime), so two uploads of one file give two ids naming one file.
Thumbnails are media rows too (``parent_id`` = the original) and are
deduplicated the same way.

Order of writes (safe against ``homeserver admin media-gc`` running at the same
time): the rows are committed first, then the file is renamed into place; GC
deletes rows and moves the now-unnamed files aside inside one write
transaction, so a file is never removed while a committed row names it.

Access rule
-----------
Any authenticated participant may upload. A media item (or a thumbnail) is
readable by

1. its uploader, always;
2. anyone currently joined to a room holding an event that references it:
   ``content.media_id``, ``content.thumbnail_id`` or
   ``content.attachments[*].media_id`` / ``.id`` / ``.thumbnail_id`` of a
   message or an edit. A thumbnail is readable when its original is.

Everyone else gets 404 ``SW_MEDIA_NOT_FOUND``, exactly as for an unknown id.
References are recorded when the event is stored (``media_refs``) and dropped
when the message is redacted, so the check is one indexed query.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import trio

from homeserver.clock import WallClock
from homeserver.media.blobs import BlobStore
from homeserver.media.thumbnails import (
    DEFAULT_MAX_PIXELS,
    Analysis,
    analyse_image,
    analyse_poster,
    sniff,
)
from homeserver.media.uploads import (
    MULTIPART_SLACK,
    FilePart,
    Receive,
    receive_file,
)
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from protocol.media import choose_mime, safe_filename
from protocol.ratelimit import SlidingWindowLimiter, retry_after_seconds
from storage import media as media_store
from storage.media import Media

log = logging.getLogger("homeserver.media.service")

UPLOAD_WINDOW = 60.0
POSTER_TIMEOUT = 30.0


def media_not_found(media_id: str) -> ApiError:
    return ApiError(ErrorCode.SW_MEDIA_NOT_FOUND, f"no media {media_id[:80]!r}")


@dataclass(frozen=True, slots=True)
class Upload:
    media: Media
    thumbnails: dict[str, Media]

    def to_dict(self) -> dict[str, Any]:
        return media_dict(self.media, self.thumbnails)


def media_dict(media: Media, thumbnails: dict[str, Media]) -> dict[str, Any]:
    fit = thumbnails.get("fit320")
    return {
        "media_id": media.media_id,
        "sha256": media.sha256,
        "size": media.size,
        "mime_type": media.mime_type,
        "thumbnail_id": None if fit is None else fit.media_id,
        "width": media.width,
        "height": media.height,
        "filename": media.filename,
        "thumbnails": {kind: t.media_id for kind, t in thumbnails.items()},
    }


class MediaService:
    """Upload, look up (with the access rule) and locate media files."""

    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        *,
        data_dir: Path,
        max_bytes: int,
        uploads_per_minute: int,
        fsync: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        idle_timeout: float = 60.0,
        ffmpeg: str | None = "auto",
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self.store = BlobStore(data_dir / "media", fsync=fsync)
        self.max_bytes = max_bytes
        self.max_body_bytes = max_bytes + MULTIPART_SLACK
        self._per_minute = uploads_per_minute
        self._max_pixels = max_pixels
        self._idle_timeout = idle_timeout
        self._ffmpeg = ffmpeg
        self._limiter = SlidingWindowLimiter()
        self.rate_limit_refusals = 0  # read by homeserver.observe.metrics

    def prepare(self) -> None:
        self.store.prepare()

    # ----------------------------------------------------------------- upload

    def check_rate(self, participant_id: str) -> None:
        """Take one upload slot for this participant, or 429 with Retry-After."""
        wait = self._limiter.try_acquire(
            participant_id, trio.current_time(), limit=self._per_minute, window=UPLOAD_WINDOW
        )
        if wait > 0:
            self.rate_limit_refusals += 1
            seconds = retry_after_seconds(wait)
            raise ApiError(
                ErrorCode.SW_RATE_LIMIT_EXCEEDED,
                f"at most {self._per_minute} uploads per minute; retry in {seconds} s",
                retry_after=seconds,
            )

    async def upload(self, uploader_id: str, *, boundary: str, receive: Receive) -> Upload:
        """Stream a multipart body's ``file`` part to disk, hash, analyse, store."""
        temps: list[Path] = []
        try:
            handle, temp = self.store.new_temp()
            temps.append(temp)
            with handle:
                part, sha256 = await self._receive(boundary, receive, handle)
            head = bytes(part.head)
            analysis = await self._analyse(temp, head)
            mime = choose_mime(analysis.sniffed, part.declared, head)
            now = self._clock()
            original = Media(
                media_id=ids.random_id(ids.MEDIA, 16),
                uploader_id=uploader_id,
                sha256=sha256,
                size=part.size,
                mime_type=mime,
                filename=safe_filename(part.filename, fallback="file"),
                width=analysis.width,
                height=analysis.height,
                parent_id=None,
                thumb_kind=None,
                created_at_ms=now,
            )
            thumbs: dict[str, Media] = {}
            placements = [(temp, sha256)]
            for t in analysis.thumbnails:
                t_temp = await trio.to_thread.run_sync(self.store.write_temp, t.data)
                temps.append(t_temp)
                t_sha = hashlib.sha256(t.data).hexdigest()
                placements.append((t_temp, t_sha))
                stem = (original.filename or "file").rsplit(".", 1)[0]
                ext = "png" if t.mime_type == "image/png" else "jpg"
                thumbs[t.kind] = Media(
                    media_id=ids.random_id(ids.MEDIA, 16),
                    uploader_id=uploader_id,
                    sha256=t_sha,
                    size=len(t.data),
                    mime_type=t.mime_type,
                    filename=safe_filename(f"{stem}-{t.kind}.{ext}"),
                    width=t.width,
                    height=t.height,
                    parent_id=original.media_id,
                    thumb_kind=t.kind,
                    created_at_ms=now,
                )
            # Rows first, then files (see the module docstring).
            await self._writer.write(media_store.insert_media_txn, [original, *thumbs.values()])
            await trio.to_thread.run_sync(self._place_all, placements)
            return Upload(original, thumbs)
        finally:
            for leftover in temps:
                leftover.unlink(missing_ok=True)

    def _place_all(self, placements: list[tuple[Path, str]]) -> None:
        for temp, sha256 in placements:
            self.store.place(temp, sha256)

    async def _receive(
        self, boundary: str, receive: Receive, handle: IO[bytes]
    ) -> tuple[FilePart, str]:
        part = FilePart(self.max_bytes)
        sha256 = await receive_file(
            part, boundary, receive, handle, idle_timeout=self._idle_timeout
        )
        await trio.to_thread.run_sync(self.store.finish_temp, handle)
        return part, sha256

    async def _analyse(self, temp: Path, head: bytes) -> Analysis:
        sniffed = sniff(head)
        if sniffed is None or sniffed.startswith("image/"):
            return await trio.to_thread.run_sync(
                lambda: analyse_image(temp, max_pixels=self._max_pixels, sniffed=sniffed)
            )
        if sniffed.startswith("video/"):
            frame = await self._poster_frame(temp)
            if frame is not None:
                poster = await trio.to_thread.run_sync(
                    lambda: analyse_poster(frame, max_pixels=self._max_pixels)
                )
                return Analysis(sniffed, poster.width, poster.height, poster.thumbnails)
        return Analysis(sniffed, None, None)

    def _ffmpeg_path(self) -> str | None:
        if self._ffmpeg == "auto":
            return shutil.which("ffmpeg")
        return self._ffmpeg

    async def _poster_frame(self, path: Path) -> bytes | None:
        """One frame (PNG) from about 1 s in, or the first; None without ffmpeg."""
        ffmpeg = self._ffmpeg_path()
        if ffmpeg is None:
            return None
        for seek in ("1", "0"):
            command = [ffmpeg, "-nostdin", "-v", "error", "-ss", seek, "-i", str(path)]
            command += ["-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"]
            with trio.move_on_after(POSTER_TIMEOUT):
                done = await trio.run_process(
                    command, capture_stdout=True, capture_stderr=True, check=False
                )
                if done.returncode == 0 and done.stdout:
                    return bytes(done.stdout)
        log.info("ffmpeg made no poster frame for %s", path.name)
        return None

    # ----------------------------------------------------------------- read

    async def readable(self, participant_id: str, media_id: str) -> Media:
        """The media item if this participant may read it, else 404 (same as unknown)."""

        def look(conn: Any) -> Media | None:
            media = media_store.get_media(conn, media_id)
            if media is None or not media_store.can_read(conn, media, participant_id):
                return None
            return media

        found = await self._readers.read(look)
        if found is None:
            raise media_not_found(media_id)
        return found

    async def info(self, participant_id: str, media_id: str) -> dict[str, Any]:
        media = await self.readable(participant_id, media_id)
        thumbs = await self._readers.read(media_store.thumbnails_of, media.media_id)
        body = media_dict(media, thumbs)
        body.update(
            uploader_id=media.uploader_id,
            created_at_ms=media.created_at_ms,
            parent_id=media.parent_id,
            thumb_kind=media.thumb_kind,
        )
        return body

    async def thumbnail(self, participant_id: str, media_id: str, kind: str) -> Media:
        """A thumbnail of a readable original (or of a thumbnail's original)."""
        media = await self.readable(participant_id, media_id)
        original = media.parent_id or media.media_id
        thumbs = await self._readers.read(media_store.thumbnails_of, original)
        thumb = thumbs.get(kind)
        if thumb is None:
            raise ApiError(
                ErrorCode.SW_MEDIA_NOT_FOUND, f"media {media_id[:80]!r} has no {kind} thumbnail"
            )
        return thumb

    def path_of(self, media: Media) -> Path:
        return self.store.path_for(media.sha256)
