"""Cost of one event append on SQLite, for comparing two checkouts (run by hand).

3,200 appends through ``storage.events.append_event_txn`` in batches of 32, each
in its own savepoint inside one ``BEGIN IMMEDIATE`` (the writer's shape), on a
fresh file with ``synchronous=NORMAL``; prints the best and median of 5 runs.
Point it at another checkout to compare (``git archive BASE | tar -x -C /tmp/base``):

    python bench/append_cost.py [REPO_ROOT]     # default: this checkout
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.events import EventDraft, EventType  # noqa: E402
from storage import db, migrate  # noqa: E402
from storage import events as event_store  # noqa: E402
from storage import rooms as room_store  # noqa: E402


def one_run() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = db.connect(os.path.join(tmp, "x.db"), synchronous="normal")
        migrate.migrate(conn)
        room_store.create_room_txn(
            conn,
            room_id="r",
            room_type="group",
            name=None,
            topic=None,
            is_public=False,
            creator_id="p",
            thresholds={},
            now_ms=1,
        )
        content = {"msgtype": "swp.text", "body": "x"}
        started = time.perf_counter()
        for _ in range(100):
            conn.execute("BEGIN IMMEDIATE")
            for i in range(32):
                conn.execute("SAVEPOINT job")
                draft = EventDraft("r", EventType.MESSAGE, "p", "p", content)
                event_store.append_event_txn(conn, draft, now_ms=i)
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    return elapsed / 3200 * 1e6


if __name__ == "__main__":
    runs = sorted(one_run() for _ in range(5))
    print(f"{ROOT}: {runs[0]:.1f} us per append (best of 5), median {runs[2]:.1f}")
