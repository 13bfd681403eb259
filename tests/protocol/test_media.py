"""protocol.media: Range parsing, safe file names and headers, MIME choice, references."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protocol.errors import ApiError, Code, ErrorCode
from protocol.media import (
    MAX_FILENAME,
    ByteRange,
    ascii_filename,
    blob_parts,
    choose_mime,
    content_disposition,
    disposition_for,
    etag_for,
    etag_matches,
    looks_like_text,
    multipart_boundary,
    parse_range,
    parse_thumbnail_size,
    range_applies,
    referenced_media_ids,
    safe_filename,
)

# --------------------------------------------------------------------------- Range


def _model(header: str, size: int) -> tuple[int, int] | str | None:
    """A straightforward reference for one bytes range: (start, end), None, or '416'."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return "416"
    if not first.isascii() or not last.isascii() or (first == "" and last == ""):
        return "416"
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "416"
        return (max(0, size - n), size - 1)
    a = int(first)
    if a >= size:
        return "416"
    if last == "":
        return (a, size - 1)
    b = int(last)
    if b < a:
        return "416"
    return (a, min(b, size - 1))


def _outcome(header: str, size: int) -> tuple[int, int] | str | None:
    code: Code | None = None
    status = 0
    got: ByteRange | None = None
    try:
        got = parse_range(header, size)
    except ApiError as exc:
        code = exc.code
        status = exc.http_status
    if code is not None:
        assert code is ErrorCode.SW_RANGE_NOT_SATISFIABLE
        assert status == 416
        return "416"
    if got is None:
        return None
    assert got.size == size
    return (got.start, got.end)


_nums = st.one_of(st.just(""), st.integers(0, 10**6).map(str))


@given(
    first=_nums,
    last=_nums,
    size=st.integers(0, 10**6),
    unit=st.sampled_from(["bytes", "BYTES", "items"]),
)
@example(first="", last="", size=10, unit="bytes")
@example(first="0", last="", size=0, unit="bytes")
def test_range_matches_the_reference(first: str, last: str, size: int, unit: str) -> None:
    header = f"{unit}={first}-{last}"
    assert _outcome(header, size) == _model(header, size)


@given(start=st.integers(0, 10**9), length=st.integers(1, 10**9), size=st.integers(1, 10**9))
def test_a_satisfiable_range_stays_inside_the_file(start: int, length: int, size: int) -> None:
    try:
        got = parse_range(f"bytes={start}-{start + length - 1}", size)
    except ApiError:
        assert start >= size
        return
    assert got is not None
    assert 0 <= got.start <= got.end < size
    assert got.length == min(length, size - start)
    assert got.content_range == f"bytes {got.start}-{got.end}/{size}"


@given(st.text(max_size=300), st.integers(0, 10**6))
def test_range_never_fails_unexpectedly(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except ApiError as exc:
        code: Code | None = exc.code
        got = None
    else:
        code = None
    assert code in (None, ErrorCode.SW_RANGE_NOT_SATISFIABLE)
    if got is not None:
        assert 0 <= got.start <= got.end < size


def test_range_examples() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == ByteRange(0, 9, 100)
    assert parse_range("bytes=-10", 100) == ByteRange(90, 99, 100)
    assert parse_range("bytes=-1000", 100) == ByteRange(0, 99, 100)
    assert parse_range("bytes=95-", 100) == ByteRange(95, 99, 100)
    assert parse_range("bytes=90-1000", 100) == ByteRange(90, 99, 100)
    assert parse_range("bytes=0-0,5-9", 100) is None  # several ranges: whole file
    assert parse_range("lines=1-2", 100) is None  # another unit: ignored
    assert parse_range("=0-1", 100) is None  # no unit is another unit
    for bad in ("bytes=100-", "bytes=5-2", "bytes=-0", "bytes=-", "bytes=a-b", "bytes 0-1"):
        with pytest.raises(ApiError) as info:
            parse_range(bad, 100)
        assert info.value.http_status == 416, bad
    with pytest.raises(ApiError):
        parse_range("bytes=0-" + "9" * 400, 100)  # overlong header
    with pytest.raises(ApiError):
        parse_range("bytes=\u0661-\u0662", 100)  # non-ASCII digits are not digits here


def test_etags_and_if_range() -> None:
    tag = etag_for("ab" * 32)
    assert tag == '"' + "ab" * 32 + '"'
    assert etag_matches(tag, tag)
    assert etag_matches(f'"x", W/{tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"other"', tag)
    assert not etag_matches(None, tag)
    assert range_applies(None, tag)
    assert range_applies(tag, tag)
    assert not range_applies(f"W/{tag}", tag)
    assert not range_applies("Wed, 21 Oct 2015 07:28:00 GMT", tag)


# --------------------------------------------------------------------------- file names

_FORBIDDEN = set('/\\"')


def _is_clean(name: str) -> bool:
    return (
        bool(name)
        and not (_FORBIDDEN & set(name))
        and not any(unicodedata.category(c)[0] == "C" for c in name)
        and not name.startswith((".", " "))
        and not name.endswith((".", " "))
        and len(name) <= MAX_FILENAME
    )


@given(st.one_of(st.none(), st.text(max_size=400)))
@example("../../etc/passwd")
@example('a"b\r\nContent-Type: text/html')
@example("C:\\Users\\me\\evil.exe")
@example("\u202egnp.exe")
@example("....")
@example(". .a")
def test_safe_filename_properties(name: str | None) -> None:
    safe = safe_filename(name, fallback="file")
    assert _is_clean(safe)
    assert safe_filename(safe) == safe  # idempotent


@given(st.text(max_size=300))
@example('x".png')
@example("résumé naïve.pdf")
@example("日本語のファイル.txt")
def test_content_disposition_is_safe_ascii_and_round_trips(name: str) -> None:
    kinds: tuple[Literal["inline", "attachment"], ...] = ("inline", "attachment")
    for kind in kinds:
        header = content_disposition(kind, name)
        assert header.isascii()
        assert not any(ord(c) < 32 or ord(c) == 127 for c in header)
        match = re.fullmatch(
            r"(inline|attachment); filename=\"([^\"\\]*)\"; filename\*=UTF-8''(\S+)", header
        )
        assert match is not None, header
        assert match.group(1) == kind
        plain = match.group(2)
        assert "/" not in plain
        assert unquote(match.group(3), encoding="utf-8", errors="strict") == safe_filename(name)


def test_filename_examples() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\temp\\x.png") == "x.png"
    assert safe_filename(".htaccess") == "htaccess"
    assert safe_filename("a\x00b\x1fc.txt") == "abc.txt"
    assert safe_filename("\u202egnp.exe") == "gnp.exe"  # bidi override dropped
    assert safe_filename('say "hi".txt') == "say _hi_.txt"
    assert safe_filename("", fallback="med-1") == "med-1"
    assert safe_filename(None) == "file"
    long = "x" * 500 + ".jpeg"
    assert safe_filename(long).endswith(".jpeg")
    assert len(safe_filename(long)) == MAX_FILENAME
    assert ascii_filename("résumé.pdf") == "resume.pdf"
    assert ascii_filename("日本.txt") == "__.txt"
    assert content_disposition("attachment", "résumé.pdf") == (
        "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )


def test_disposition_by_type() -> None:
    assert disposition_for("image/png") == "inline"
    assert disposition_for("image/jpeg") == "inline"
    assert disposition_for("image/svg+xml") == "attachment"
    assert disposition_for("text/html") == "attachment"
    assert disposition_for("application/pdf") == "attachment"


# --------------------------------------------------------------------------- MIME and more


def test_choose_mime() -> None:
    assert choose_mime("image/png", "text/html", b"\x89PNG") == "image/png"
    assert choose_mime(None, "text/html", b"<script>alert(1)</script>") == "text/plain"
    assert choose_mime(None, "text/csv", b"a,b\n1,2\n") == "text/csv"
    assert choose_mime(None, "application/json; charset=utf-8", b'{"a": 1}') == "application/json"
    assert choose_mime(None, "image/png", b"\x00\x01\x02binary") == "application/octet-stream"
    assert choose_mime(None, None, b"plain words") == "text/plain"
    assert looks_like_text("héllo".encode()[:2])  # a cut character at the end is fine
    assert not looks_like_text(b"\xff\xfe\x00a")
    assert not looks_like_text(b"")


def test_multipart_boundary() -> None:
    assert multipart_boundary("multipart/form-data; boundary=abc") == "abc"
    assert multipart_boundary('Multipart/Form-Data; charset=x; boundary="a b"') == "a b"
    for bad in (None, "", "application/json", "multipart/form-data", "multipart/mixed; boundary=a"):
        with pytest.raises(ApiError) as info:
            multipart_boundary(bad)
        assert info.value.code is ErrorCode.SW_INVALID_PARAM


def test_thumbnail_size_param() -> None:
    assert parse_thumbnail_size(None) == "fit320"
    assert parse_thumbnail_size("crop96") == "crop96"
    with pytest.raises(ApiError):
        parse_thumbnail_size("huge")


def test_blob_parts() -> None:
    sha = "0123456789abcdef" * 4
    assert blob_parts(sha) == ("01", "23", sha)
    for bad in ("../x", "A" * 64, "0" * 63):
        with pytest.raises(ValueError, match="sha256"):
            blob_parts(bad)


def test_referenced_media_ids() -> None:
    content = {
        "msgtype": "swp.media",
        "media_id": "med-a",
        "thumbnail_id": "med-b",
        "attachments": [
            {"media_id": "med-c"},
            {"type": "file", "id": "med-d"},
            {"id": "evt-not-media"},
            "med-ignored-not-an-object",
            {"media_id": "med-a"},
        ],
    }
    assert referenced_media_ids(content) == ["med-a", "med-b", "med-c", "med-d"]
    assert referenced_media_ids({"media_id": 5, "attachments": "x"}) == []
    assert referenced_media_ids({"media_id": "med-" + "x" * 200}) == []


@given(
    st.recursive(
        st.none() | st.text(max_size=8) | st.integers(),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=8), c),
    )
)
def test_referenced_media_ids_never_fails(value: object) -> None:
    content = value if isinstance(value, dict) else {"attachments": value, "media_id": value}
    for found in referenced_media_ids(content):
        assert found.startswith("med-")
