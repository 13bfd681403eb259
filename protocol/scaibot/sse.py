"""Server-Sent Events with named events (seed 002 "Chat"): ``event: X\\ndata: {...}\\n\\n``.

Event names of ``POST /chat``: start, system_prompt, token, citation,
escalation, done, error. ``data`` is one line of compact JSON (JSON escapes
every newline inside strings, so a payload never breaks the framing).
"""

from __future__ import annotations

from typing import Any

import orjson

EVENTS = frozenset({"start", "system_prompt", "token", "citation", "escalation", "done", "error"})


def encode_event(name: str, data: Any) -> bytes:
    if name not in EVENTS:
        raise ValueError(f"not a chat event: {name!r}")
    return b"event: " + name.encode("ascii") + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def decode_events(raw: str) -> list[tuple[str, Any]]:
    """Parse a whole event stream as a client would (tests, bench): (name, data) pairs."""
    out: list[tuple[str, Any]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            out.append((name, orjson.loads("\n".join(data))))
    return out
