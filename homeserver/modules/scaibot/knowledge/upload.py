"""Receive a document upload: multipart ``file`` (streamed to a temp file) and ``name``.

Reuses the media upload's push-parser part collector (homeserver.media.service) and
blob store temp files, so a 50 MB document is never held in memory: pieces go
to disk in a worker thread about every MiB while they are hashed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio
from python_multipart.multipart import parse_options_header

from homeserver.media.blobs import BlobStore
from homeserver.media.uploads import FilePart, Receive, bad_upload, receive_file
from protocol.errors import ApiError, ErrorCode

MAX_NAME_BYTES = 1024


def document_too_large(max_bytes: int) -> ApiError:
    return ApiError(
        ErrorCode.DOCUMENT_TOO_LARGE,
        f"the document is over the {max_bytes}-byte limit",
        details={"max_bytes": max_bytes},
    )


@dataclass
class _DocumentParts(FilePart):
    """The ``file`` part (as for media) plus the small ``name`` text field."""

    name_value: bytearray = field(default_factory=bytearray)
    name_found: bool = False
    in_name: bool = False

    def _headers_finished(self) -> None:
        super()._headers_finished()
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.in_name = params.get(b"name") == b"name" and not self.name_found
        self.name_found = self.name_found or self.in_name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.in_name:
            self.name_value.extend(data[start:end])
            if len(self.name_value) > MAX_NAME_BYTES:
                raise bad_upload(f"at most {MAX_NAME_BYTES} bytes", "name")
            return
        if self.in_file and self.size + (end - start) > self.max_bytes:
            raise document_too_large(self.max_bytes)
        super()._data(data, start, end)

    def _part_end(self) -> None:
        super()._part_end()
        self.in_name = False


@dataclass(frozen=True, slots=True)
class Received:
    temp: Path
    size: int
    sha256: str
    head: bytes
    filename: str | None
    name: str | None


async def receive_document(
    store: BlobStore, boundary: str, receive: Receive, *, max_bytes: int, idle_timeout: float
) -> Received:
    """Stream the body to a temp file in ``store``; the caller owns (and removes) it."""
    handle, temp = store.new_temp()
    part = _DocumentParts(max_bytes)

    try:
        with handle:
            sha256 = await receive_file(part, boundary, receive, handle, idle_timeout=idle_timeout)
            await trio.to_thread.run_sync(store.finish_temp, handle)
        name = part.name_value.decode("utf-8", "replace").strip() if part.name_found else None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Received(temp, part.size, sha256, bytes(part.head), part.filename, name)
