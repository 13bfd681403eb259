"""Wall-clock time for event timestamps; injectable so tests can move it."""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], int]


def system_ms() -> int:
    return time.time_ns() // 1_000_000
