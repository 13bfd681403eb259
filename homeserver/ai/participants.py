"""``/v1/ai/participants``: create, list and delete AI participants (CONTRACT 12).

Tenant admins create them (any participant when ``ai.open_creation``), always
in the caller's tenant; the creator or a tenant admin deletes one. Deleting
takes the AI out of every room it is in (a ``leave`` member event each) and
keeps its rows: the events it sent still name it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from bridges.models.base import ChatModels
from homeserver.clock import WallClock
from homeserver.identity.auth import Principal
from homeserver.rooms.service import change_membership_txn
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.ai import AI_KINDS, OWN_DEFAULTS
from protocol.errors import ApiError, ErrorCode, invalid
from storage import ai as ai_store
from storage.ai import AiParticipant

MAX_PROMPT = 32_768


@dataclass(frozen=True, slots=True)
class NewAi:
    name: str
    display_name: str | None
    kind: str
    model: str
    system_prompt: str
    engagement: str | None


class AiParticipantService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        models: ChatModels,
        *,
        open_creation: bool,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._models = models
        self._open = open_creation
        # Told about each AI created and deleted (the runner drives the live ones).
        self.on_created: Callable[[AiParticipant], None] = lambda ai: None
        self.on_deleted: Callable[[str], None] = lambda ai_id: None

    async def create(self, principal: Principal, spec: NewAi) -> AiParticipant:
        if not (principal.is_admin or self._open):
            raise ApiError(
                ErrorCode.SW_AUTH_INSUFFICIENT_PERMISSION,
                "only tenant admins create AI participants here",
            )
        if spec.kind not in AI_KINDS:
            raise invalid("type", "must be one of " + ", ".join(AI_KINDS))
        if spec.engagement is not None and spec.engagement not in OWN_DEFAULTS:
            raise invalid("engagement", "must be one of " + ", ".join(OWN_DEFAULTS))
        self._models.get(spec.model)  # 404 MODEL_NOT_FOUND, naming the model
        ai = AiParticipant(
            participant_id=ids.participant_id(spec.kind),
            tenant_id=principal.tenant_id,
            name=spec.name,
            display_name=spec.display_name or spec.name,
            participant_type=spec.kind,
            model=spec.model,
            system_prompt=spec.system_prompt,
            engagement=spec.engagement,
            created_by=principal.participant_id,
            created_at_ms=self._clock(),
        )
        created = await self._writer.write(ai_store.create_ai_txn, ai)
        self.on_created(created)
        return created

    async def list(
        self, principal: Principal, *, limit: int, after: str | None
    ) -> list[AiParticipant]:
        return await self._readers.read(
            lambda conn: ai_store.list_ai(conn, principal.tenant_id, limit=limit, after=after)
        )

    async def get(self, principal: Principal, ai_id: str) -> AiParticipant:
        found = await self._readers.read(ai_store.get_ai, ai_id)
        if found is None or found.tenant_id != principal.tenant_id:
            raise ApiError(ErrorCode.SW_AI_NOT_FOUND, f"no AI participant {ai_id[:80]!r}")
        return found

    async def delete(self, principal: Principal, ai_id: str) -> None:
        await self._writer.write(self._delete_txn, principal, ai_id, self._clock())
        self.on_deleted(ai_id)

    def _delete_txn(
        self, conn: sqlite3.Connection, principal: Principal, ai_id: str, now: int
    ) -> None:
        found = ai_store.get_ai(conn, ai_id)
        if found is None or found.tenant_id != principal.tenant_id:
            raise ApiError(ErrorCode.SW_AI_NOT_FOUND, f"no AI participant {ai_id[:80]!r}")
        if not (principal.is_admin or found.created_by == principal.participant_id):
            raise ApiError(
                ErrorCode.SW_AUTH_INSUFFICIENT_PERMISSION,
                "only its creator or a tenant admin deletes an AI participant",
            )
        ai_store.mark_deleted_txn(conn, ai_id, now)
        for room_id in ai_store.joined_rooms(conn, ai_id):
            change_membership_txn(
                conn,
                room_id=room_id,
                target=ai_id,
                membership="leave",
                actor=principal.participant_id,
                now_ms=now,
                reason="AI participant deleted",
            )
