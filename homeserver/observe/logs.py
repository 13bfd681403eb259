"""Logging setup: text lines, or one JSON object per line (``log_format = "json"``).

Structured records go through :func:`access` on the ``homeserver.access``
logger: one per HTTP request (``kind: "http"``) and one at each end of a
stream connection (``kind: "stream"``). Their fields become top-level keys of
the JSON line; with the text format they are appended as ``key=value``.
Callers emit them only when ``log_format = "json"`` (the request path then
costs nothing extra in text mode); with JSON they are written whatever
``log_level`` says.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

ACCESS = logging.getLogger("homeserver.access")
FORMATS = ("text", "json")


def access(message: str, **fields: Any) -> None:
    """One structured line (INFO) on ``homeserver.access``."""
    ACCESS.info(message, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", **fields}``, one line, UTF-8."""

    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.created * 1000) % 1000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"
        body: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            body.update(fields)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure(level: str, fmt: str) -> None:
    """Root logging to stderr in ``fmt`` ("text" or "json") at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Access lines are asked for by the format, whatever the level.
    ACCESS.setLevel(logging.INFO if fmt == "json" else logging.NOTSET)
