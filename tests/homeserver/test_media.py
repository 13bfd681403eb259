"""Media over REST (CONTRACT section 9): upload, download, thumbnails, headers, limits.

Access rules, restart survival and media-gc are in test_media_access.py; the
memory figure of a large upload in test_media_rss.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import httpx
import pytest
import trio
from PIL import Image

from homeserver.app import Running
from tests.homeserver.media_support import (
    BOUNDARY,
    blob_files,
    blob_path,
    halves_jpeg,
    media_server,
    multipart,
    multipart_headers,
    png,
    png_header_only,
    raw_exchange,
    upload,
)
from tests.support import Api

MIB = 1 << 20


# --------------------------------------------------------------------------- round trips


async def test_round_trip_bytes_and_sha256(api: Api) -> None:
    alice = await api.register("alice")
    data = os.urandom(300_000)
    up = await upload(api, alice, data, "blob.bin")
    assert up["media_id"].startswith("med-")
    assert up["sha256"] == hashlib.sha256(data).hexdigest()
    assert up["size"] == len(data)
    assert up["mime_type"] == "application/octet-stream"
    assert up["thumbnail_id"] is None
    assert up["width"] is None
    assert up["height"] is None
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["etag"] == f'"{up["sha256"]}"'
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment;")
    info = await api.ok("GET", f"/v1/media/{up['media_id']}/info", alice)
    assert info["sha256"] == up["sha256"]
    assert info["uploader_id"] == alice.participant_id
    assert info["filename"] == "blob.bin"


async def test_same_bytes_are_stored_once(api: Api, server: Running) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    data = png(640, 480)
    first = await upload(api, alice, data, "a.png", "image/png")
    second = await upload(api, bob, data, "b.png", "image/png")
    # Two uploads, two ids (each its own uploader and name), one file on disk.
    assert first["media_id"] != second["media_id"]
    assert first["sha256"] == second["sha256"]
    data_dir = server.db_path.parent
    files = blob_files(data_dir)
    assert [p for p in files if p.name == first["sha256"]] == [blob_path(data_dir, first["sha256"])]
    # Thumbnails are deterministic, so they are shared too: 1 original + 2 thumbnails.
    assert len(files) == 3
    for up in (first, second):
        r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
        if up is second:
            r = await api.call("GET", f"/v1/media/download/{up['media_id']}", bob)
        assert r.content == data


# --------------------------------------------------------------------------- types and thumbnails


async def _thumb(api: Api, user: object, media_id: str, size: str | None = None) -> Image.Image:
    query = "" if size is None else f"?size={size}"
    r = await api.call("GET", f"/v1/media/download/{media_id}/thumbnail{query}", user)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    im = Image.open(io.BytesIO(r.content))
    im.load()
    return im


async def test_png_thumbnails(api: Api) -> None:
    alice = await api.register("alice")
    up = await upload(api, alice, png(1000, 500), "wide.png", "application/octet-stream")
    assert up["mime_type"] == "image/png"  # from the bytes, not the declared type
    assert (up["width"], up["height"]) == (1000, 500)
    assert up["thumbnail_id"] == up["thumbnails"]["fit320"]
    fit = await _thumb(api, alice, up["media_id"])
    assert fit.size == (320, 160)  # inside 320x240, aspect kept
    assert fit.format == "JPEG"
    crop = await _thumb(api, alice, up["media_id"], "crop96")
    assert crop.size == (96, 96)
    # The thumbnail is a media item of its own too.
    r = await api.call("GET", f"/v1/media/download/{up['thumbnail_id']}", alice)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-disposition"].startswith("inline;")


@pytest.mark.parametrize(
    ("size", "fit"),
    [((200, 1000), (48, 240)), ((100, 50), (100, 50)), ((320, 240), (320, 240))],
)
async def test_fit_keeps_aspect_and_never_enlarges(
    api: Api, size: tuple[int, int], fit: tuple[int, int]
) -> None:
    alice = await api.register("alice")
    up = await upload(api, alice, png(*size), "x.png", "image/png")
    thumb = await _thumb(api, alice, up["media_id"], "fit320")
    assert thumb.size == fit
    assert (await _thumb(api, alice, up["media_id"], "crop96")).size == (96, 96)


async def test_transparent_image_gets_png_thumbnails(api: Api) -> None:
    alice = await api.register("alice")
    up = await upload(api, alice, png(400, 400, (0, 0, 0, 0), "RGBA"), "t.png", "image/png")
    thumb = await _thumb(api, alice, up["media_id"])
    assert thumb.format == "PNG"
    assert thumb.mode == "RGBA"


async def test_exif_orientation_is_honoured(api: Api) -> None:
    alice = await api.register("alice")
    # Stored 400x200 (left red, right blue); orientation 6 = shown rotated 90 degrees
    # clockwise: 200 wide, 400 high, red on top.
    up = await upload(api, alice, halves_jpeg(400, 200, 6), "photo.jpg", "image/jpeg")
    assert up["mime_type"] == "image/jpeg"
    assert (up["width"], up["height"]) == (200, 400)
    fit = (await _thumb(api, alice, up["media_id"])).convert("RGB")
    assert fit.size == (120, 240)
    top = fit.getpixel((60, 30))
    bottom = fit.getpixel((60, 210))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert top[0] > 200, top  # red
    assert top[2] < 60, top
    assert bottom[2] > 200, bottom  # blue
    assert bottom[0] < 60, bottom
    crop = await _thumb(api, alice, up["media_id"], "crop96")
    assert crop.size == (96, 96)
    # Thumbnails carry no EXIF (no orientation to apply twice, no location).
    assert not crop.getexif()


async def test_decompression_bomb_is_refused(api: Api, server: Running) -> None:
    alice = await api.register("alice")
    r = await api.call(
        "POST",
        "/v1/media/upload",
        alice,
        files={"file": ("bomb.png", png_header_only(100_000, 100_000), "image/png")},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "SW_INVALID_PARAM"
    assert "pixel" in r.json()["error"]["message"]
    assert blob_files(server.db_path.parent) == []


async def test_a_corrupt_image_is_kept_without_thumbnails(api: Api) -> None:
    alice = await api.register("alice")
    noisy = Image.effect_noise((300, 300), 50).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    up = await upload(api, alice, cut, "cut.png", "image/png")
    assert up["mime_type"] == "image/png"
    assert (up["width"], up["height"]) == (300, 300)
    assert up["thumbnail_id"] is None
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
    assert r.content == cut


async def test_type_comes_from_the_bytes(api: Api) -> None:
    alice = await api.register("alice")
    html = await upload(
        api, alice, b"<html><script>alert(1)</script></html>", "x.html", "text/html"
    )
    assert html["mime_type"] == "text/plain"
    r = await api.call("GET", f"/v1/media/download/{html['media_id']}", alice)
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-disposition"].startswith("attachment;")
    csv = await upload(api, alice, b"a,b\n1,2\n", "t.csv", "text/csv")
    assert csv["mime_type"] == "text/csv"
    pdf = await upload(
        api, alice, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "doc.pdf", "image/png"
    )
    assert pdf["mime_type"] == "application/pdf"
    gif = Image.new("P", (50, 40))
    buf = io.BytesIO()
    gif.save(buf, "GIF")
    up = await upload(api, alice, buf.getvalue(), "anim.gif", "application/octet-stream")
    assert up["mime_type"] == "image/gif"
    assert (up["width"], up["height"]) == (50, 40)


MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64


async def test_video_without_ffmpeg_has_no_thumbnail(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    alice = await api.register("alice")
    up = await upload(api, alice, MP4_HEAD, "clip.mp4", "video/mp4")
    assert up["mime_type"] == "video/mp4"
    assert up["thumbnail_id"] is None
    assert up["thumbnails"] == {}
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}/thumbnail", alice)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SW_MEDIA_NOT_FOUND"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not on the PATH")
async def test_video_poster_with_ffmpeg(api: Api, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    source = "testsrc=duration=2:size=640x360:rate=10"
    await trio.run_process(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p", str(clip)]
    )
    alice = await api.register("alice")
    up = await upload(api, alice, clip.read_bytes(), "clip.mp4", "video/mp4")
    assert up["mime_type"] == "video/mp4"
    assert (up["width"], up["height"]) == (640, 360)
    assert up["thumbnail_id"] is not None
    assert (await _thumb(api, alice, up["media_id"])).size == (320, 180)
    assert (await _thumb(api, alice, up["media_id"], "crop96")).size == (96, 96)


# --------------------------------------------------------------------------- headers


async def test_ranges(api: Api) -> None:
    alice = await api.register("alice")
    data = os.urandom(100_000)
    mid = (await upload(api, alice, data))["media_id"]
    url = f"/v1/media/download/{mid}"

    async def get(range_header: str, **headers: str) -> httpx.Response:
        return await api.call("GET", url, alice, headers={"Range": range_header, **headers})

    r = await get("bytes=0-99")
    assert r.status_code == 206
    assert r.content == data[:100]
    assert r.headers["content-range"] == "bytes 0-99/100000"
    assert r.headers["content-length"] == "100"
    r = await get("bytes=-500")
    assert r.status_code == 206
    assert r.content == data[-500:]
    assert r.headers["content-range"] == "bytes 99500-99999/100000"
    r = await get("bytes=99000-")
    assert r.status_code == 206
    assert r.content == data[99000:]
    r = await get("bytes=90000-1000000")
    assert r.status_code == 206
    assert r.content == data[90000:]
    for bad in ("bytes=100000-", "bytes=5-1", "bytes=x-y", "bytes=-0"):
        r = await get(bad)
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == "bytes */100000"
        assert r.json()["error"]["code"] == "SW_RANGE_NOT_SATISFIABLE"
    # If-Range with another validator: the whole file.
    r = await get("bytes=0-9", **{"If-Range": '"not-it"'})
    assert r.status_code == 200
    assert r.content == data
    etag = r.headers["etag"]
    r = await get("bytes=0-9", **{"If-Range": etag})
    assert r.status_code == 206
    assert r.content == data[:10]


async def test_etag_and_if_none_match(api: Api) -> None:
    alice = await api.register("alice")
    up = await upload(api, alice, png(50, 50), "p.png", "image/png")
    url = f"/v1/media/download/{up['media_id']}"
    etag = f'"{up["sha256"]}"'
    r = await api.call("GET", url, alice, headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    r = await api.call("GET", url, alice, headers={"If-None-Match": '"other", W/' + etag})
    assert r.status_code == 304
    r = await api.call("GET", url, alice, headers={"If-None-Match": '"other"'})
    assert r.status_code == 200
    r = await api.call(
        "GET", f"{url}/thumbnail", alice, headers={"If-None-Match": r.headers["etag"]}
    )
    assert r.status_code == 200  # the thumbnail has its own ETag
    r2 = await api.call(
        "GET", f"{url}/thumbnail", alice, headers={"If-None-Match": r.headers["etag"]}
    )
    assert r2.status_code == 304


async def test_content_disposition_is_sanitised(api: Api) -> None:
    alice = await api.register("alice")
    body = multipart([("file", '../../etc/we"ird\x07name;.txt', "text/plain", b"hello")])
    r = await api.call("POST", "/v1/media/upload", headers=multipart_headers(alice), content=body)
    assert r.status_code == 201, r.text
    up = r.json()["data"]
    assert up["filename"] == "we_irdname_.txt"
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"we_irdname_.txt\"; filename*=UTF-8''we_irdname_.txt"
    )
    body = multipart([("file", "résumé.pdf", "application/pdf", b"%PDF-1.7\n")])
    r = await api.call("POST", "/v1/media/upload", headers=multipart_headers(alice), content=body)
    assert r.status_code == 201, r.text
    up = r.json()["data"]
    assert up["filename"] == "résumé.pdf"
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )
    # No file name at all: the media id stands in.
    body = multipart([("file", None, None, b"data")])
    r = await api.call("POST", "/v1/media/upload", headers=multipart_headers(alice), content=body)
    assert r.status_code == 201, r.text
    up = r.json()["data"]
    r = await api.call("GET", f"/v1/media/download/{up['media_id']}", alice)
    assert 'filename="file"' in r.headers["content-disposition"]


# --------------------------------------------------------------------------- refusals


async def _error(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    error: dict[str, object] = body["error"]
    return error


async def test_bad_uploads_are_400(api: Api) -> None:
    alice = await api.register("alice")
    url = "/v1/media/upload"
    # Not multipart at all.
    r = await api.call("POST", url, alice, json={"file": "x"})
    await _error(r, 400, "SW_INVALID_PARAM")
    r = await api.call("POST", url, alice, content=b"raw", headers={"Content-Type": "image/png"})
    await _error(r, 400, "SW_INVALID_PARAM")
    # Multipart without a boundary.
    r = await api.call(
        "POST", url, alice, content=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    await _error(r, 400, "SW_INVALID_PARAM")
    # An empty body, an empty file, no 'file' field, a body cut short.
    r = await api.call("POST", url, headers=multipart_headers(alice), content=b"")
    await _error(r, 400, "SW_INVALID_PARAM")
    r = await api.call("POST", url, alice, files={"file": ("empty.txt", b"", "text/plain")})
    error = await _error(r, 400, "SW_INVALID_PARAM")
    assert "empty" in str(error["message"])
    r = await api.call("POST", url, alice, files={"other": ("x.txt", b"abc", "text/plain")})
    error = await _error(r, 400, "SW_INVALID_PARAM")
    assert "'file'" in str(error["message"])
    r = await api.call("POST", url, alice, data={"file": "just a form field"}, files={"x": b"1"})
    # A plain form field called "file" still counts as the file part.
    assert r.status_code == 201
    cut = multipart([("file", "a.bin", None, b"abc" * 100)], close=False)
    r = await api.call("POST", url, headers=multipart_headers(alice), content=cut)
    await _error(r, 400, "SW_INVALID_PARAM")
    r = await api.call("POST", url, headers=multipart_headers(alice), content=b"garbage" * 10)
    await _error(r, 400, "SW_INVALID_PARAM")


async def test_auth_and_unknown_ids(api: Api) -> None:
    alice = await api.register("alice")
    r = await api.call("POST", "/v1/media/upload", files={"file": ("a.txt", b"abc", "text/plain")})
    await _error(r, 401, "SW_AUTH_INVALID_TOKEN")
    mid = (await upload(api, alice, b"abc"))["media_id"]
    for path in (
        f"/v1/media/download/{mid}",
        f"/v1/media/download/{mid}/thumbnail",
        f"/v1/media/{mid}/info",
    ):
        r = await api.call("GET", path)
        await _error(r, 401, "SW_AUTH_INVALID_TOKEN")
    for path in (
        "/v1/media/download/med-nope",
        "/v1/media/download/med-nope/thumbnail",
        "/v1/media/med-nope/info",
    ):
        r = await api.call("GET", path, alice)
        await _error(r, 404, "SW_MEDIA_NOT_FOUND")
    r = await api.call("GET", f"/v1/media/download/{mid}/thumbnail?size=huge", alice)
    await _error(r, 400, "SW_INVALID_PARAM")


async def test_413_from_content_length_before_the_body(tmp_path: Path) -> None:
    async with media_server(tmp_path, media_max_bytes=MIB) as (running, api):
        alice = await api.register("alice")
        head = (
            f"POST /v1/media/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.access_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {50 * MIB}\r\n\r\n"
        ).encode()
        first = multipart([("file", "big.bin", None, b"x" * 1000)], close=False)
        # Only a sliver of the promised 50 MiB is ever sent: the answer comes first.
        status, _, body = await raw_exchange(running.port, head + first, [b""], pause=2.0)
        assert status == 413
        assert b"SW_CONTENT_TOO_LARGE" in body
        assert blob_files(running.db_path.parent) == []


async def test_413_while_streaming_a_chunked_body(tmp_path: Path) -> None:
    async with media_server(tmp_path, media_max_bytes=MIB) as (running, api):
        alice = await api.register("alice")
        head = (
            f"POST /v1/media/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.access_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        start = multipart([("file", "big.bin", None, b"")], close=False)[:-2]

        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        parts = [chunk(start)] + [chunk(b"y" * 65536) for _ in range(40)]  # 2.5 MiB, never ends
        status, _, body = await raw_exchange(running.port, head, parts)
        assert status == 413, body
        assert b"SW_CONTENT_TOO_LARGE" in body
        data_dir = running.db_path.parent
        assert blob_files(data_dir) == []
        assert list((data_dir / "media" / "tmp").iterdir()) == []


async def test_413_when_the_file_is_over_the_limit(tmp_path: Path) -> None:
    async with media_server(tmp_path, media_max_bytes=2000) as (_, api):
        alice = await api.register("alice")
        r = await api.call("POST", "/v1/media/upload", alice, files={"file": ("a", b"z" * 2001)})
        error = await _error(r, 413, "SW_CONTENT_TOO_LARGE")
        assert error["details"] == {"max_bytes": 2000}
        await upload(api, alice, b"z" * 2000)  # exactly the limit is fine


async def test_upload_rate_limit(tmp_path: Path) -> None:
    async with media_server(tmp_path, media_uploads_per_minute=2) as (_, api):
        alice = await api.register("alice")
        bob = await api.register("bob")
        await upload(api, alice, b"1")
        await upload(api, alice, b"2")
        r = await api.call("POST", "/v1/media/upload", alice, files={"file": ("a", b"3")})
        error = await _error(r, 429, "SW_RATE_LIMIT_EXCEEDED")
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 60
        assert error["retry_after"] == retry
        await upload(api, bob, b"3")  # per participant
