"""Close open streams whose credential was revoked: tail the revocation log.

Every revocation appends to ``credential_revocations`` in the transaction that
revokes (storage.participants), whichever process made it: this server's REST
API, or ``homeserver admin deactivate-participant`` run beside it. The watcher
reads the rows after the last one it saw and asks the stream
:class:`~homeserver.stream.registry.Registry` to close (4001) every connection
opened with the revoked credential. A revocation made in this process wakes it
at once (``AuthService.on_revoked``); one made elsewhere is seen within
``interval`` seconds.

Closing is the visible half. The guarantee that no frame is acted on after the
revocation commits comes from the stream re-checking its credential in the
transaction (or read) that acts on each frame.
"""

from __future__ import annotations

import logging
import sqlite3

import trio

from homeserver.store.database import Readers
from homeserver.stream.registry import Registry
from storage import participants as pstore

log = logging.getLogger("homeserver.identity.revocation")

POLL_INTERVAL = 0.5


class RevocationWatcher:
    def __init__(
        self,
        readers: Readers,
        registry: Registry,
        *more: Registry,
        interval: float | None = None,
    ) -> None:
        self._readers = readers
        self._registries = (registry, *more)  # the stream's, the direct SSE replies'
        self._interval = POLL_INTERVAL if interval is None else interval
        self._wake = trio.Event()
        self._seen = 0
        self.applied = 0

    def wake(self) -> None:
        """A revocation committed in this process: look now."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._seen = await self._readers.read(pstore.last_revocation)
        task_status.started()
        while True:
            with trio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.apply_new()
            except sqlite3.Error:
                log.exception("reading the revocation log failed; retrying")

    async def apply_new(self) -> int:
        """Apply every revocation logged since the last look; return how many."""
        applied = 0
        while True:
            rows = await self._readers.read(pstore.revocations_after, self._seen)
            for seq, kind, value in rows:
                closed = sum(registry.revoke(kind, value) for registry in self._registries)
                if closed:
                    log.info("revoked %s: closed %d stream connection(s)", kind, closed)
                self._seen = seq
            applied += len(rows)
            self.applied += len(rows)
            if len(rows) < 1000:
                return applied
