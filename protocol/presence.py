"""Presence rules, as a pure function of what the server knows and ``now``.

Rules (CONTRACT section 8; reference notes 1.10)
-----
1. AI participant types (model, agent, bot, persona) are always ``online``.
2. ``busy`` and ``appear_offline`` set by the owner stick until ``auto``.
3. Otherwise a participant is present while at least one stream is open or
   a heartbeat came within ``heartbeat_ttl`` seconds; absent means ``offline``.
4. A present participant is ``idle`` after ``idle_after`` seconds without
   activity (sending, typing, an active heartbeat), else ``online``. A manual
   ``online`` or ``idle`` holds while present, until ``auto``.
5. Several devices combine to the most awake: activity and heartbeats are
   tracked per participant as the latest over all devices.
6. Others see ``appear_offline`` as ``offline``; the owner sees the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.ids import AI_TYPES

STATES = ("online", "idle", "busy", "appear_offline", "offline")
MANUAL_STATES = frozenset({"online", "idle", "busy", "appear_offline"})
STICKY = frozenset({"busy", "appear_offline"})


@dataclass(frozen=True, slots=True)
class PresenceFacts:
    participant_type: str = "human"
    manual: str | None = None  # None = auto
    connections: int = 0
    last_heartbeat: float | None = None
    last_active: float | None = None


def effective(facts: PresenceFacts, now: float, *, idle_after: float, heartbeat_ttl: float) -> str:
    """The participant's true state at ``now``."""
    if facts.participant_type in AI_TYPES:
        return "online"
    if facts.manual in STICKY:
        return facts.manual
    heartbeat_fresh = (
        facts.last_heartbeat is not None and now - facts.last_heartbeat < heartbeat_ttl
    )
    if facts.connections <= 0 and not heartbeat_fresh:
        return "offline"
    if facts.manual in ("online", "idle"):
        return facts.manual
    if facts.last_active is None or now - facts.last_active >= idle_after:
        return "idle"
    return "online"


def as_seen_by_others(state: str) -> str:
    return "offline" if state == "appear_offline" else state


def next_change(
    facts: PresenceFacts, now: float, *, idle_after: float, heartbeat_ttl: float
) -> float | None:
    """The earliest time after ``now`` at which :func:`effective` may change by itself."""
    if facts.participant_type in AI_TYPES or facts.manual in STICKY:
        return None
    times = []
    if facts.connections <= 0 and facts.last_heartbeat is not None:
        expiry = facts.last_heartbeat + heartbeat_ttl
        if expiry > now:
            times.append(expiry)
    if facts.manual is None and facts.last_active is not None:
        idle_at = facts.last_active + idle_after
        if idle_at > now:
            times.append(idle_at)
    return min(times) if times else None
