"""``[cluster]``: several processes on PostgreSQL and Redis (scale-out design,
``../shared/reference/scale-out.md``).

With ``database_url`` empty (the default) the server is one process on the
embedded SQLite file, exactly as without this table. Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conf.sections import SectionError, _float, _int, _table

_NODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEYS = {"node_id", "database_url", "bus_url", "read_connections", "liveness_seconds"}


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """``[cluster]``. ``enabled`` is true when ``database_url`` is set."""

    node_id: str = ""
    database_url: str = ""
    bus_url: str = ""
    read_connections: int = 8
    liveness_seconds: float = 3.0

    @property
    def enabled(self) -> bool:
        return bool(self.database_url)


def _text(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise SectionError(f"{label} must be a string, got {value!r}")
    return value


def cluster_section(value: object, label: str = "cluster") -> ClusterSettings:
    if isinstance(value, ClusterSettings):
        return value
    t = _table(value, label, _KEYS)
    node_id = _text(t.get("node_id", ""), f"{label}.node_id")
    if node_id and not _NODE_RE.fullmatch(node_id):
        raise SectionError(f"{label}.node_id must be 1-64 of A-Z a-z 0-9 _ . -, got {node_id!r}")
    database_url = _text(t.get("database_url", ""), f"{label}.database_url")
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        raise SectionError(f"{label}.database_url must be a postgresql:// URL")
    bus_url = _text(t.get("bus_url", ""), f"{label}.bus_url")
    if bus_url and not bus_url.startswith(("redis://", "rediss://", "unix://")):
        raise SectionError(f"{label}.bus_url must be a redis:// URL")
    if database_url and not bus_url:
        raise SectionError(f"{label}.bus_url is required with {label}.database_url")
    return ClusterSettings(
        node_id=node_id,
        database_url=database_url,
        bus_url=bus_url,
        read_connections=_int(t.get("read_connections", 8), f"{label}.read_connections", 1, 256),
        liveness_seconds=_float(
            t.get("liveness_seconds", 3.0), f"{label}.liveness_seconds", 0.5, 600
        ),
    )


def default_cluster() -> ClusterSettings:
    return ClusterSettings()
