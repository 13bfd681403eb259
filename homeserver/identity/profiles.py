"""Participant profiles (``/v1/me``) and look-ups for rendering members."""

from __future__ import annotations

from homeserver.store.database import Readers, Writer
from protocol.errors import ApiError, ErrorCode
from storage import participants as pstore
from storage.participants import Participant


class ProfileService:
    def __init__(self, writer: Writer, readers: Readers) -> None:
        self._writer = writer
        self._readers = readers

    async def get(self, participant_id: str) -> Participant:
        found = await self._readers.read(pstore.get_participant, participant_id)
        if found is None:
            raise ApiError(ErrorCode.SW_PARTICIPANT_NOT_FOUND, "no such participant")
        return found

    async def many(self, ids: list[str]) -> dict[str, Participant]:
        return await self._readers.read(pstore.get_participants, ids)

    async def update(self, participant_id: str, changes: dict[str, str | None]) -> Participant:
        if changes:
            await self._writer.write(pstore.update_profile_txn, participant_id, changes)
        return await self.get(participant_id)
