"""Canonical JSON and the hashes that make room history tamper-evident.

Canonical JSON (as in Matrix): object keys sorted, no insignificant white
space, UTF-8, no floats that are not finite. The same value always encodes to
the same bytes, so a hash of those bytes is stable across processes and
versions.

An event id is the hash of the event's *redacted* canonical form: every field
except ``content``, plus ``content_hash``, the SHA-256 of the canonical content.
Erasing a redacted event's content therefore leaves its id verifiable, and the
``prev_event_ids`` chain of every later event intact (Matrix room versions do
the same with ``hashes.sha256``).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

JsonObject = dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically; raises ``TypeError`` for non-JSON values."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def compact_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding of ``value`` (the 64 KB rule)."""
    return len(orjson.dumps(value))


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def content_hash(content: JsonObject) -> str:
    """``sha256:`` + unpadded URL-safe base64 of the canonical content."""
    return "sha256:" + _b64(hashlib.sha256(canonical_json(content)).digest())


def event_id_for(fields: JsonObject) -> str:
    """The event id of an event whose redacted form is ``fields``.

    ``fields`` must not contain ``content``; it must contain ``content_hash``.
    """
    if "content" in fields:
        raise ValueError("event ids are computed over the redacted form (no content)")
    if "content_hash" not in fields:
        raise ValueError("event ids need the content_hash")
    return "evt-" + _b64(hashlib.sha256(canonical_json(fields)).digest())
