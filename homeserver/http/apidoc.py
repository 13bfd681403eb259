"""The OpenAPI 3.1 document, assembled from the fragment files in ``openapi/``.

Each ``openapi/<family>.json`` is ``{"paths": {...}, "components": {...}}``
for one route family (see openapi/README.md); ``_common.json`` holds the
shared components (envelopes, errors, the bearer scheme, common parameters).
:func:`document` merges them all and adds ``openapi``, ``info``, ``servers``
and the default security. Two fragments describing the same path, or the same
component name in one section, are refused with :class:`FragmentError`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FRAGMENTS = Path(__file__).with_name("openapi")
ALLOWED_KEYS = frozenset({"paths", "components", "tags"})
VERSION = "0.1.0"


class FragmentError(ValueError):
    """A fragment is malformed or collides with another one."""


def read_fragments(directory: Path = FRAGMENTS) -> list[tuple[str, dict[str, Any]]]:
    """(file name, parsed object) of every ``*.json`` fragment, ``_common.json`` first."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            parsed = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FragmentError(f"{path.name}: not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise FragmentError(f"{path.name}: must be a JSON object")
        unknown = set(parsed) - ALLOWED_KEYS
        if unknown:
            raise FragmentError(
                f"{path.name}: unknown top-level keys {sorted(unknown)} "
                f"(a fragment holds only {sorted(ALLOWED_KEYS)})"
            )
        out.append((path.name, parsed))
    return out


def merge(fragments: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One document from fragments; refuses duplicate paths and component names."""
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {}
    tags: dict[str, Any] = {}
    path_owner: dict[str, str] = {}
    component_owner: dict[tuple[str, str], str] = {}
    for name, fragment in fragments:
        for path, item in fragment.get("paths", {}).items():
            if path in path_owner:
                raise FragmentError(
                    f"path {path!r} is described in both {path_owner[path]} and {name}"
                )
            path_owner[path] = name
            paths[path] = item
        for section, entries in fragment.get("components", {}).items():
            if not isinstance(entries, dict):
                raise FragmentError(f"{name}: components.{section} must be an object")
            target = components.setdefault(section, {})
            for key, value in entries.items():
                owner = component_owner.get((section, key))
                if owner is not None:
                    raise FragmentError(
                        f"components.{section}.{key} is defined in both {owner} and {name}"
                    )
                component_owner[(section, key)] = name
                target[key] = value
        for tag in fragment.get("tags", []):
            tags.setdefault(tag["name"], tag)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ScaiWave homeserver",
            "version": VERSION,
            "description": (
                "ScaiWave chat protocol, ScaiGrid REST and modules, on one port. "
                "The WebSocket stream (GET /v1/stream) is described in CONTRACT section 4, "
                "not here."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": list(tags.values()),
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (path, METHOD) the document describes."""
    return {
        (path, method.upper())
        for path, item in doc.get("paths", {}).items()
        for method in item
        if method in HTTP_METHODS
    }


@functools.cache
def document() -> dict[str, Any]:
    """The served document (read once per process)."""
    return merge(read_fragments())


def document_bytes() -> bytes:
    return _document_bytes()


@functools.cache
def _document_bytes() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()
