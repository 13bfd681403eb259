"""Media rules that need no I/O: names, ranges, validators, MIME choice, references.

- :func:`safe_filename` and :func:`content_disposition`: RFC 6266 headers with
  a plain ASCII ``filename`` and a UTF-8 ``filename*`` (RFC 8187), never a
  path separator, quote, backslash or control/format character.
- :func:`parse_range`: one ``bytes=`` range (RFC 9110 section 14) to an
  inclusive :class:`ByteRange`; ``None`` means "send the whole file" (no
  header, another unit, or several ranges: a server may ignore those);
  anything else that cannot be served raises ``SW_RANGE_NOT_SATISFIABLE`` (416).
- :func:`etag_matches` / :func:`range_applies`: ``If-None-Match`` and
  ``If-Range`` against the strong ETag ``"<sha256>"``.
- :func:`choose_mime`: the stored type comes from the bytes; a client's
  declared type is used only for inert text when the bytes are text.
- :func:`referenced_media_ids`: which media a message's content names.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from protocol.errors import ApiError, ErrorCode, invalid
from protocol.ids import MEDIA

# --------------------------------------------------------------------------- thumbnails

# name -> (mode, width, height). "fit": scaled to fit inside the box keeping the
# aspect ratio (never enlarged); "crop": scaled and centre-cropped to exactly the box.
THUMBNAIL_SIZES: Mapping[str, tuple[Literal["fit", "crop"], int, int]] = {
    "fit320": ("fit", 320, 240),
    "crop96": ("crop", 96, 96),
}
DEFAULT_THUMBNAIL = "fit320"


def parse_thumbnail_size(raw: str | None) -> str:
    """``?size=`` of the thumbnail route: one of :data:`THUMBNAIL_SIZES` (default fit320)."""
    if raw is None or raw == "":
        return DEFAULT_THUMBNAIL
    if raw not in THUMBNAIL_SIZES:
        raise invalid("size", f"must be one of {', '.join(THUMBNAIL_SIZES)}")
    return raw


# --------------------------------------------------------------------------- ids and paths

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_MEDIA_ID = 128


def blob_parts(sha256: str) -> tuple[str, str, str]:
    """The content-addressed location ``ab/cd/<sha256>`` as three path parts."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lower-case hex sha256: {sha256!r}")
    return sha256[:2], sha256[2:4], sha256


def referenced_media_ids(content: Mapping[str, Any], *, max_items: int = 100) -> list[str]:
    """Media ids a message's content names, in order, without repeats.

    Looked at: ``content.media_id``, ``content.thumbnail_id``, and for each item
    of ``content.attachments`` its ``media_id``, ``id`` and ``thumbnail_id``.
    Only strings that look like media ids (``med-`` prefix) count.
    """
    found: dict[str, None] = {}

    def add(value: object) -> None:
        if (
            isinstance(value, str)
            and value.startswith(MEDIA)
            and len(value) <= MAX_MEDIA_ID
            and len(found) < max_items
        ):
            found[value] = None

    add(content.get("media_id"))
    add(content.get("thumbnail_id"))
    attachments = content.get("attachments")
    if isinstance(attachments, list):
        for item in attachments[:max_items]:
            if isinstance(item, Mapping):
                add(item.get("media_id"))
                add(item.get("id"))
                add(item.get("thumbnail_id"))
    return list(found)


# --------------------------------------------------------------------------- file names

MAX_FILENAME = 200
_NAME_REPLACE = frozenset('"\\/:*?<>|;')
# RFC 8187 attr-char, minus ALPHA / DIGIT (quote() always keeps those).
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"
_ASCII_OK = re.compile(r"[A-Za-z0-9 ._()+,=@!#$%&'~\[\]{}-]")


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    out = []
    for ch in name:
        category = unicodedata.category(ch)
        if ch in _NAME_REPLACE:
            out.append("_")
        elif category[0] == "C" or category in ("Zl", "Zp"):
            continue  # control, format (bidi overrides), surrogate, private, unassigned
        elif ch.isspace():
            out.append(" ")
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    cleaned = cleaned.lstrip(" .").rstrip(" .")
    if len(cleaned) > MAX_FILENAME:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            cleaned = stem[: MAX_FILENAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            cleaned = cleaned[:MAX_FILENAME]
        cleaned = cleaned.lstrip(" .").rstrip(" .")
    return unicodedata.normalize("NFC", cleaned)


def safe_filename(name: str | None, fallback: str = "file") -> str:
    """A file name safe to store and to put in a header.

    Keeps only the last path component (``/`` or ``\\``), drops control and
    format characters, replaces ``"\\/:*?<>|;`` with ``_``, collapses
    whitespace, strips leading dots and spaces (no hidden files, no ``..``)
    and trailing dots and spaces, and keeps at most :data:`MAX_FILENAME`
    characters (the extension survives truncation). Empty -> ``fallback``.
    """
    if name:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        # Cleaning can expose new leading dots or a new combining sequence;
        # repeat until nothing changes (two rounds in practice).
        for _ in range(4):
            cleaned = _clean(base)
            if cleaned == base:
                break
            base = cleaned
        if base:
            return base
    return fallback


def ascii_filename(name: str) -> str:
    """The plain ``filename=`` fallback: ASCII only, no quote or backslash."""
    decomposed = unicodedata.normalize("NFKD", name)
    out = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue
        out.append(ch if _ASCII_OK.fullmatch(ch) else "_")
    result = "".join(out).lstrip(" .").rstrip(" ")
    return result or "file"


def content_disposition(disposition: Literal["inline", "attachment"], name: str) -> str:
    """``inline|attachment; filename="ascii"; filename*=UTF-8''percent-encoded``.

    ``name`` should already be :func:`safe_filename`'d; it is sanitised again
    here so the header is safe whatever the caller passes.
    """
    safe = safe_filename(name)
    encoded = quote(safe, safe=_ATTR_CHAR_SAFE, encoding="utf-8")
    return f"{disposition}; filename=\"{ascii_filename(safe)}\"; filename*=UTF-8''{encoded}"


# Raster image types a browser may show inline. SVG is never among them (it
# can carry script); everything else downloads as an attachment.
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"}
)


def disposition_for(mime_type: str) -> Literal["inline", "attachment"]:
    return "inline" if mime_type in INLINE_TYPES else "attachment"


# --------------------------------------------------------------------------- MIME

# Types a client may declare for bytes that are plain text: they carry no
# script a browser would run. Anything else textual is stored as text/plain.
INERT_TEXT_TYPES = frozenset(
    {"text/plain", "text/markdown", "text/csv", "text/tab-separated-values", "application/json"}
)
OCTET_STREAM = "application/octet-stream"
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def normalise_mime(declared: str | None) -> str | None:
    """``type/subtype`` in lower case without parameters, or None if malformed."""
    if not declared:
        return None
    value = declared.split(";", 1)[0].strip().lower()
    return value if _MIME_RE.match(value) else None


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-8 text without NULs or stray controls."""
    if not head or b"\x00" in head:
        return False
    try:
        # An incremental decoder tolerates a character cut off at the end.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\x1b")
    return controls * 100 <= len(text)


def choose_mime(sniffed: str | None, declared: str | None, head: bytes) -> str:
    """The stored MIME type.

    1. A type recognised from the bytes (magic numbers, or Pillow) wins.
    2. Text bytes keep a declared inert text type, else become ``text/plain``.
    3. Everything else is ``application/octet-stream``, whatever was declared.
    """
    found = normalise_mime(sniffed)
    if found is not None:
        return found
    if looks_like_text(head):
        claimed = normalise_mime(declared)
        return claimed if claimed in INERT_TEXT_TYPES else "text/plain"
    return OCTET_STREAM


def content_type_header(mime_type: str) -> str:
    if mime_type.startswith("text/") or mime_type == "application/json":
        return f"{mime_type}; charset=utf-8"
    return mime_type


# --------------------------------------------------------------------------- multipart


def multipart_boundary(content_type: str | None) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type, or 400."""
    if not content_type:
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM,
            "the upload must be multipart/form-data with a 'file' field",
            details=[{"field": "Content-Type", "message": "missing"}],
        )
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM,
            "the upload must be multipart/form-data with a 'file' field,"
            f" not {kind.strip()[:80]!r}",
            details=[{"field": "Content-Type", "message": "must be multipart/form-data"}],
        )
    for param in params.split(";"):
        key, eq, value = param.strip().partition("=")
        if eq and key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 1 <= len(value) <= 70 and value.isascii():
                return value
    raise ApiError(
        ErrorCode.SW_INVALID_PARAM,
        "the multipart Content-Type has no valid boundary",
        details=[{"field": "Content-Type", "message": "boundary missing or invalid"}],
    )


# --------------------------------------------------------------------------- ranges and ETags


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``[start, end]`` of a representation of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


_SPEC = re.compile(r"^([0-9]*)-([0-9]*)$")
MAX_RANGE_HEADER = 256


def _unsatisfiable(size: int, why: str) -> ApiError:
    return ApiError(
        ErrorCode.SW_RANGE_NOT_SATISFIABLE,
        f"range not satisfiable: {why}",
        details={"size": size},
    )


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range a ``Range`` header asks for, for a file of ``size`` bytes.

    Returns None to send the whole file: no header, a unit other than
    ``bytes`` (RFC 9110 says to ignore it), or several ranges (we do not
    send multipart/byteranges; RFC 9110 lets a server ignore the header).
    Raises ``SW_RANGE_NOT_SATISFIABLE`` for a malformed ``bytes`` range, one
    that starts at or past the end, ``last < first``, or a zero suffix.
    """
    if header is None:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise _unsatisfiable(size, "the Range header is too long")
    unit, eq, spec = header.strip().partition("=")
    if not eq:
        raise _unsatisfiable(size, "expected bytes=first-last")
    if unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) > 1:
        return None
    match = _SPEC.match(specs[0])
    if match is None or match.group(0) == "-":
        raise _unsatisfiable(size, "expected bytes=first-last, bytes=first- or bytes=-suffix")
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size, "empty suffix range")
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if start >= size:
        raise _unsatisfiable(size, f"first byte {start} is not below the size {size}")
    if last == "":
        return ByteRange(start, size - 1, size)
    end = int(last)
    if end < start:
        raise _unsatisfiable(size, "last byte is before the first")
    return ByteRange(start, min(end, size - 1), size)


def etag_for(sha256: str) -> str:
    return f'"{sha256}"'


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` (weak comparison, RFC 9110 13.1.2): True means 304."""
    if not if_none_match:
        return False
    tags = _tags(if_none_match)
    return "*" in tags or etag in tags


def range_applies(if_range: str | None, etag: str) -> bool:
    """``If-Range``: the range is honoured only for our exact strong ETag.

    A date (we send no Last-Modified) or a weak or other tag means "send it all".
    """
    return if_range is None or if_range.strip() == etag
