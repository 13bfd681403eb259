"""Helpers for the media tests: images made with Pillow, raw multipart, raw HTTP."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from PIL import Image

from conf import Settings
from homeserver.app import Running
from tests.support import Api, User, api_for, make_settings, start_server

BOUNDARY = "sw-test-boundary-7f3a"


def png(
    width: int, height: int, color: tuple[int, ...] = (10, 200, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def halves_jpeg(width: int, height: int, orientation: int) -> bytes:
    """A JPEG whose stored left half is red and right half blue, with an EXIF orientation."""
    im = Image.new("RGB", (width, height), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(
    parts: Iterable[tuple[str, str | None, str | None, bytes]],
    boundary: str = BOUNDARY,
    *,
    close: bool = True,
) -> bytes:
    """A multipart/form-data body; each part is (name, filename, content type, data).

    The file name goes in verbatim (quotes escaped as ``\\"``), as raw UTF-8.
    """
    out = bytearray()
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{escaped}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if ctype is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def multipart_headers(user: User | None, boundary: str = BOUNDARY) -> dict[str, str]:
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if user is not None:
        headers.update(user.auth)
    return headers


async def upload(
    api: Api,
    user: User,
    data: bytes,
    name: str = "file.bin",
    ctype: str = "application/octet-stream",
) -> dict[str, Any]:
    result: dict[str, Any] = await api.ok(
        "POST", "/v1/media/upload", user, status=201, files={"file": (name, data, ctype)}
    )
    return result


def blob_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "media" / sha256[:2] / sha256[2:4] / sha256


def blob_files(data_dir: Path) -> list[Path]:
    root = data_dir / "media"
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.parent.name not in ("tmp", "trash")
    )


@asynccontextmanager
async def media_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Running, Api]]:
    settings: Settings = make_settings(tmp_path / "data", **overrides)
    async with start_server(settings) as running, api_for(running) as api:
        yield running, api


async def raw_exchange(
    port: int, head: bytes, body_parts: Iterable[bytes], *, pause: float = 0.0
) -> tuple[int, dict[str, str], bytes]:
    """Send a request by hand and read the response, even if the server answers early.

    Sends ``head`` and each body part; stops sending once the server has
    answered or closed. Returns (status, headers, body) of the response.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream:
        await stream.send_all(head)
        for part in body_parts:
            with trio.move_on_after(pause or 0.01):
                data = await stream.receive_some(65536)
                if data == b"":
                    break
                received += data
            if received:
                break
            try:
                await stream.send_all(part)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
        # Read to the end: the server closes after an early answer.
        with trio.fail_after(10):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                received += data
    head_end = received.index(b"\r\n\r\n")
    lines = bytes(received[:head_end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return status, headers, bytes(received[head_end + 4 : head_end + 4 + length])
