"""Media routes (CONTRACT section 9): upload, download, thumbnail, info.

- ``POST /v1/media/upload`` (multipart ``file``) -> 201 ``{media_id, sha256,
  size, mime_type, thumbnail_id, width, height, filename, thumbnails}``.
  Refusals: 401 without a token; 400 ``SW_INVALID_PARAM`` for a body that is
  not multipart/form-data, has no ``file`` field, an empty file or broken
  framing; 413 ``SW_CONTENT_TOO_LARGE`` over ``media_max_bytes`` (from
  Content-Length before any byte is read, else while streaming); 429
  ``SW_RATE_LIMIT_EXCEEDED`` with Retry-After over ``media_uploads_per_minute``;
  408 ``SW_REQUEST_TIMEOUT`` when the client stalls.
- ``GET /v1/media/download/{id}`` and ``GET /v1/media/download/{id}/thumbnail
  ?size=fit320|crop96`` (default fit320): the bytes, streamed from disk, with
  Content-Type, Content-Length, Content-Disposition (``inline`` for raster
  images, else ``attachment``), ``ETag: "<sha256>"`` (If-None-Match -> 304),
  ``Accept-Ranges: bytes`` and single ``Range`` requests (206 + Content-Range;
  416 with ``Content-Range: bytes */size`` when unsatisfiable).
- ``GET /v1/media/{id}/info``: the upload's metadata and its thumbnails.

Who may read what: homeserver.media.service (unknown and not-allowed are the same 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge

from homeserver.http.shim import bearer, error_response, ok, route
from homeserver.http.upload_body import allow_large_bodies
from homeserver.identity.auth import AuthService
from homeserver.media.service import MediaService, media_not_found
from homeserver.media.uploads import too_large
from protocol.errors import ApiError, ErrorCode
from protocol.media import (
    ByteRange,
    content_disposition,
    content_type_header,
    disposition_for,
    etag_for,
    etag_matches,
    multipart_boundary,
    parse_range,
    parse_thumbnail_size,
    range_applies,
)
from storage.media import Media

UPLOAD_PATH = "/v1/media/upload"
READ_CHUNK = 256 * 1024


def _open(path: Path) -> IO[bytes] | None:
    try:
        return open(path, "rb")  # closed by _file_chunks
    except FileNotFoundError:
        return None


async def _file_chunks(handle: IO[bytes], start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes from ``start``, read in worker threads one chunk at a time."""
    try:
        await trio.to_thread.run_sync(handle.seek, start)
        remaining = length
        while remaining > 0:
            data = await trio.to_thread.run_sync(handle.read, min(READ_CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        handle.close()


async def _serve_file(media: MediaService, item: Media) -> Response:
    etag = etag_for(item.sha256)
    name = item.filename or item.media_id
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": content_disposition(disposition_for(item.mime_type), name),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return Response(b"", status=304, headers=headers)
    wanted: ByteRange | None = None
    if range_applies(request.headers.get("If-Range"), etag):
        try:
            wanted = parse_range(request.headers.get("Range"), item.size)
        except ApiError as exc:
            response = error_response(exc, "sw")
            response.headers["Content-Range"] = f"bytes */{item.size}"
            return response
    handle = await trio.to_thread.run_sync(_open, media.path_of(item))
    if handle is None:
        raise media_not_found(item.media_id)
    start, length, status = 0, item.size, 200
    if wanted is not None:
        start, length, status = wanted.start, wanted.length, 206
        headers["Content-Range"] = wanted.content_range
    headers["Content-Length"] = str(length)
    response = Response(
        _file_chunks(handle, start, length),
        status=status,
        headers=headers,
        content_type=content_type_header(item.mime_type),
    )
    response.timeout = None  # a large file may take longer than RESPONSE_TIMEOUT
    return response


def install(app: QuartTrio, auth: AuthService, media: MediaService) -> None:
    allow_large_bodies(app, "POST", UPLOAD_PATH, media.max_body_bytes)

    async def caller() -> str:
        return (await auth.authenticate(bearer())).participant_id

    @route(app, UPLOAD_PATH, ["POST"])
    async def upload() -> Response:
        me = await caller()
        boundary = multipart_boundary(request.headers.get("Content-Type"))
        declared = request.content_length
        if declared is not None and declared > media.max_body_bytes:
            raise too_large(media.max_bytes)
        if declared == 0:
            raise ApiError(
                ErrorCode.SW_INVALID_PARAM,
                "the request body is empty",
                details=[{"field": "file", "message": "missing"}],
            )
        media.check_rate(me)
        body = request.body

        async def receive() -> bytes | None:
            try:
                chunk: bytes = await body.__anext__()
            except StopAsyncIteration:
                return None
            except RequestEntityTooLarge:
                raise too_large(media.max_bytes) from None
            return chunk

        result = await media.upload(me, boundary=boundary, receive=receive)
        return ok(result.to_dict(), 201)

    @route(app, "/v1/media/download/<media_id>", ["GET"])
    async def download(media_id: str) -> Response:
        me = await caller()
        return await _serve_file(media, await media.readable(me, media_id))

    @route(app, "/v1/media/download/<media_id>/thumbnail", ["GET"])
    async def thumbnail(media_id: str) -> Response:
        me = await caller()
        kind = parse_thumbnail_size(request.args.get("size"))
        return await _serve_file(media, await media.thumbnail(me, media_id, kind))

    @route(app, "/v1/media/<media_id>/info", ["GET"])
    async def info(media_id: str) -> Response:
        me = await caller()
        return ok(await media.info(me, media_id))
