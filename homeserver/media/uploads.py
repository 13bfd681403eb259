"""Streamed multipart uploads shared by media and ScaiBot knowledge documents.

:class:`FilePart` collects the ``file`` part of a multipart body from
python-multipart's push parser, a piece at a time, with a size bound and the
first bytes kept to sniff the type; callers write the pieces to disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import trio
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from protocol.errors import ApiError, ErrorCode

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FLUSH_BYTES = 1 << 20  # write to disk in pieces of about this size
HEAD_BYTES = 8192  # kept in memory to sniff the type
MULTIPART_SLACK = 64 * 1024  # multipart framing allowed on top of the file limit

Receive = Callable[[], Awaitable[bytes | None]]


def too_large(max_bytes: int) -> ApiError:
    return ApiError(
        ErrorCode.SW_CONTENT_TOO_LARGE,
        f"the file is over the {max_bytes}-byte upload limit",
        details={"max_bytes": max_bytes},
    )


def bad_upload(message: str, field_name: str = "file") -> ApiError:
    """A malformed upload, naming the field (400 SW_INVALID_PARAM; 422 on ScaiGrid/ScaiBot)."""
    return ApiError(
        ErrorCode.SW_INVALID_PARAM, message, details=[{"field": field_name, "message": message}]
    )


@dataclass
class FilePart:
    """Collects the ``file`` part of a multipart body from the push parser's callbacks."""

    max_bytes: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: bytearray = field(default_factory=bytearray)
    value: bytearray = field(default_factory=bytearray)
    in_file: bool = False
    found: bool = False
    ended: bool = False
    filename: str | None = None
    declared: str | None = None
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.headers.clear,
            "on_header_field": lambda d, s, e: self.name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        self.headers[bytes(self.name).strip().lower()] = bytes(self.value).strip()
        self.name.clear()
        self.value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        if params.get(b"name") == b"file" and not self.found:
            self.found = self.in_file = True
            raw = params.get(b"filename")
            self.filename = None if raw is None else raw.decode("utf-8", "replace")
            declared = self.headers.get(b"content-type")
            self.declared = None if declared is None else declared.decode("latin-1")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file or end <= start:
            return
        piece = data[start:end]
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes)
        if len(self.head) < HEAD_BYTES:
            self.head.extend(piece[: HEAD_BYTES - len(self.head)])
        self.pending.append(piece)
        self.pending_bytes += len(piece)

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.ended = True

    def take(self) -> list[bytes]:
        pieces = self.pending
        self.pending = []
        self.pending_bytes = 0
        return pieces


async def receive_file(
    part: FilePart, boundary: str, receive: Receive, handle: IO[bytes], *, idle_timeout: float
) -> str:
    """Stream a multipart body's ``file`` part into ``handle`` and return its sha256.

    The body is fed to the parser as it arrives (``receive`` gives ``None`` at its
    end; ``idle_timeout`` seconds without a piece is 408); pieces are written in
    a worker thread about every :data:`FLUSH_BYTES`. Refuses a body that is not
    well-formed multipart, has no ``file`` field, or an empty file.
    """
    parser = MultipartParser(boundary, part.callbacks())
    hasher = hashlib.sha256()

    def sink(pieces: list[bytes]) -> None:
        for piece in pieces:
            hasher.update(piece)
        handle.writelines(pieces)

    while True:
        with trio.move_on_after(idle_timeout) as idle:
            chunk = await receive()
        if idle.cancelled_caught:
            raise ApiError(
                ErrorCode.SW_REQUEST_TIMEOUT, f"the upload sent nothing for {idle_timeout:g} s"
            )
        if chunk is None:
            break
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise bad_upload(f"malformed multipart body: {exc}", "body") from None
        if part.pending_bytes >= FLUSH_BYTES:
            await trio.to_thread.run_sync(sink, part.take())
    await trio.to_thread.run_sync(sink, part.take())
    if not part.ended:
        raise bad_upload("the multipart body ended before its closing boundary", "body")
    if not part.found:
        raise bad_upload("the multipart body has no 'file' field")
    if part.size == 0:
        raise bad_upload("the file is empty")
    return hasher.hexdigest()
