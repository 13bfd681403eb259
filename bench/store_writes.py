"""Acked event appends per second through the store seam: SQLite vs PostgreSQL (run by hand).

What it measures: ``--callers`` concurrent callers, each appending one message event
at a time through ``Writer.write`` (group commit, savepoint per job, position from
``stream_head``) and waiting for the durable acknowledgement, for ``--seconds``.
With ``--writers 2`` the callers are split over two writers on one database: on
PostgreSQL that is two connections whose batches contend for the ``stream_head``
row lock from two threads (two processes' worth of writers, minus the second
process's CPU); on SQLite two connections to one file.

PostgreSQL is started by ``tests.engines.start_pg(fsync=True)`` (a throw-away
cluster, fsync ON so "full" pays its WAL flush), SQLite is a file in a temp dir.
Everything runs in one trio process on this machine: use it to compare engines
and writer counts on the same box, not as absolute figures.

    python bench/store_writes.py [--seconds 5] [--callers 32] [--sync full|normal]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from homeserver.store.database import Writer  # noqa: E402
from protocol.events import EventDraft, EventType  # noqa: E402
from storage import events as event_store  # noqa: E402
from storage import rooms as room_store  # noqa: E402


def _room(conn: sqlite3.Connection) -> None:
    room_store.create_room_txn(
        conn,
        room_id="room-bench",
        room_type="group",
        name=None,
        topic=None,
        is_public=False,
        creator_id="p-bench",
        thresholds={},
        now_ms=1,
    )


def _append(conn: sqlite3.Connection, n: int) -> int:
    draft = EventDraft(
        "room-bench", EventType.MESSAGE, "p-bench", "p-bench", {"msgtype": "swp.text", "body": n}
    )
    return event_store.append_event_txn(conn, draft, now_ms=n).stream_position


async def _measure(writers: list[Writer], callers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    for w in writers:
        w.open()
    try:
        async with trio.open_nursery() as nursery:
            for w in writers:
                await nursery.start(w.run)
            await writers[0].write(_room)
            deadline = trio.current_time() + seconds

            async def caller(w: Writer, k: int) -> None:
                n = k
                while trio.current_time() < deadline:
                    started = time.perf_counter()
                    await w.write(_append, n)
                    latencies.append(time.perf_counter() - started)
                    n += callers

            started = time.perf_counter()
            async with trio.open_nursery() as inner:
                for k in range(callers):
                    inner.start_soon(caller, writers[k % len(writers)], k)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    finally:
        for w in writers:
            w.close()
    batches = sum(w.stats.batches for w in writers)
    lat = sorted(latencies)
    return {
        "acked_per_s": len(lat) / elapsed,
        "mean_batch": len(lat) / max(1, batches),
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def _sqlite(root: Path, sync: str) -> Callable[[int], list[Writer]]:
    from homeserver.store.sqlite import SqliteWriter

    counter = iter(range(1_000_000))

    def make(count: int) -> list[Writer]:
        path = root / f"bench-{next(counter)}.db"
        return [SqliteWriter(path, synchronous=sync, max_batch=64) for _ in range(count)]

    return make


def _postgres(sync: str) -> tuple[Callable[[int], list[Writer]], Callable[[], None]]:
    from homeserver.store.postgres import PostgresWriter
    from tests.engines import start_pg

    server = start_pg(fsync=True)
    if isinstance(server, str):
        raise SystemExit(f"no PostgreSQL: {server}")
    counter = iter(range(1_000_000))

    def make(count: int) -> list[Writer]:
        name = f"bench_{next(counter)}"
        server.admin(f"CREATE DATABASE {name}")
        url = server.url(name)
        return [PostgresWriter(url, synchronous=sync, max_batch=64) for _ in range(count)]

    return make, server.stop


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pg_make, pg_stop = _postgres(args.sync)
        try:
            engines = {"sqlite": _sqlite(Path(tmp), args.sync), "postgres": pg_make}
            print("| engine | writers | acked appends/s | mean batch | p50 ms | p99 ms |")
            print("|---|---|---|---|---|---|")
            for name, make in engines.items():
                for count in (1, 2):
                    r = trio.run(_measure, make(count), args.callers, args.seconds)
                    print(
                        f"| {name} ({args.sync}) | {count} | {r['acked_per_s']:.0f} |"
                        f" {r['mean_batch']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |",
                        flush=True,
                    )
        finally:
            pg_stop()


if __name__ == "__main__":
    main()
