"""Type sniffing and thumbnails (blocking; the media service runs these in worker threads).

- The MIME type comes from the bytes: ``filetype`` (magic numbers, pure Python)
  first, then Pillow, which identifies images itself. Pillow may open only the
  raster formats in :data:`IMAGE_FORMATS` (no EPS, which would run Ghostscript).
- Images are refused as decompression bombs above ``max_pixels`` (checked on
  the header, before any pixel is decoded; Pillow's own limit is set too).
- Thumbnails (:data:`protocol.media.THUMBNAIL_SIZES`): EXIF orientation is
  applied first; "fit" keeps the aspect ratio inside the box and never
  enlarges, "crop" scales and centre-crops to exactly the box. They are JPEG,
  or PNG when the image has transparency, and carry no metadata (no EXIF/GPS).
- Video posters come from ffmpeg (homeserver.media.service) and go through the same code.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import filetype
from PIL import Image, ImageOps

from protocol.errors import ApiError, ErrorCode
from protocol.media import THUMBNAIL_SIZES

log = logging.getLogger("homeserver.media.thumbnails")

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "AVIF")
_ORIENTATION = 0x0112

# Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises beyond;
# make the warning an error too so a bomb is always refused.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    kind: str
    data: bytes
    mime_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Analysis:
    sniffed: str | None  # the type recognised from the bytes, if any
    width: int | None  # as displayed (after EXIF orientation)
    height: int | None
    thumbnails: tuple[Thumbnail, ...] = ()


def sniff(head: bytes) -> str | None:
    """The MIME type the magic numbers at the start of a file say, if any."""
    kind = filetype.guess(head)
    return None if kind is None else str(kind.mime)


def _bomb(width: int, height: int, max_pixels: int) -> ApiError:
    return ApiError(
        ErrorCode.SW_INVALID_PARAM,
        f"image of {width}x{height} pixels is over the {max_pixels}-pixel limit",
        details=[{"field": "file", "message": "image too large (decompression bomb guard)"}],
    )


def _formats() -> list[str]:
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def analyse_image(source: Path | IO[bytes], *, max_pixels: int, sniffed: str | None) -> Analysis:
    """Identify an image and make its thumbnails; ``sniffed`` unchanged if not an image.

    Raises ``SW_INVALID_PARAM`` (400) for an image over ``max_pixels``.
    """
    try:
        im = Image.open(source, formats=_formats())
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ApiError(
            ErrorCode.SW_INVALID_PARAM,
            f"image refused: {exc}",
            details=[{"field": "file", "message": "image too large (decompression bomb guard)"}],
        ) from None
    except Exception:  # not an image Pillow may open (or one it cannot parse)
        return Analysis(sniffed, None, None)
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise _bomb(width, height, max_pixels)
        mime = Image.MIME.get(im.format or "") or sniffed
        try:
            orientation = im.getexif().get(_ORIENTATION, 1)
        except Exception:  # malformed EXIF: show it as stored
            orientation = 1
        shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        try:
            thumbs = _thumbnails(im)
        except Exception as exc:  # truncated or corrupt pixel data: keep the file
            log.info("no thumbnails for a %s image: %r", im.format, exc)
            thumbs = ()
        return Analysis(mime, shown[0], shown[1], thumbs)


def _thumbnails(im: Image.Image) -> tuple[Thumbnail, ...]:
    # A JPEG can decode at 1/2, 1/4 or 1/8 scale: far less memory for big photos.
    im.draft("RGB", (320, 320))
    shown = ImageOps.exif_transpose(im)
    alpha = shown.mode in ("RGBA", "LA", "PA") or (
        shown.mode == "P" and "transparency" in shown.info
    )
    base = shown.convert("RGBA" if alpha else "RGB")
    out = []
    for kind, (mode, width, height) in THUMBNAIL_SIZES.items():
        if mode == "fit":
            thumb = base.copy()
            thumb.thumbnail((width, height), Image.Resampling.LANCZOS)
        else:
            thumb = ImageOps.fit(base, (width, height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if alpha:
            thumb.save(buf, "PNG")
            mime = "image/png"
        else:
            thumb.save(buf, "JPEG", quality=85)
            mime = "image/jpeg"
        out.append(Thumbnail(kind, buf.getvalue(), mime, thumb.width, thumb.height))
    return tuple(out)


def analyse_poster(frame: bytes, *, max_pixels: int) -> Analysis:
    """Thumbnails from a video's poster frame (a PNG from ffmpeg)."""
    found = analyse_image(io.BytesIO(frame), max_pixels=max_pixels, sniffed=None)
    return Analysis(None, found.width, found.height, found.thumbnails)
