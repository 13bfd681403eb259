"""Wire time formats. Pure: callers pass the time in (milliseconds since epoch)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime


@functools.lru_cache(maxsize=4096)
def iso_ms(ts_ms: int) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2026-11-22T10:00:00.123Z``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def iso_or_none(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else iso_ms(ts_ms)


def parse_iso(value: str) -> int:
    """Parse an ISO-8601 timestamp (``Z`` or offset) to milliseconds; ValueError if bad."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
