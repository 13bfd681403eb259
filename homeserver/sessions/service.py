"""ScaiGrid sessions (CONTRACT 11): stored one-to-one conversations with a model.

Who may do what: the owner does everything; an admin of the session's tenant
may read, edit, stop and delete it (and list the tenant's sessions with
``scope=tenant``) but not send messages in it (403 ``AUTHZ_PERMISSION_DENIED``);
anyone else, and everyone after a soft delete, gets 404 ``SESSION_NOT_FOUND``.

Sending: the user message is stored first (with the reply's id marked as
generating), then the reply is generated in a task of this service's own
nursery, so it outlives the request that asked for it; the assistant message
is stored once, when the generation ends (``stop``, ``length``,
``cancelled`` after :meth:`SessionService.stop`, or ``error`` with whatever
was generated). On start-up, replies a stopped server left generating are
stored as empty ``error`` replies, so nothing stays "generating" forever.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from bridges.models import ChatModels, Delta, Finish
from conf.sections import ModelEntry
from homeserver.clock import WallClock
from homeserver.identity.auth import SCOPE_MODELS_USE, Principal
from homeserver.sessions.generation import Generation
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.context import Counted, budget_for, fit_context
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, Usage, estimate_tokens, estimate_usage
from protocol.sessions import CreateSession, SendMessage
from storage import sessions as store
from storage.errors import NotFound
from storage.sessions import NewReply, Session, SessionMessage

log = logging.getLogger("homeserver.sessions")

# The newest messages read for a context cut (older ones cannot fit any window we offer
# cheaply enough to matter; the cut then trims to the model's budget).
CONTEXT_READ_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class SessionLimits:
    heartbeat_seconds: float = 15.0
    max_generations: int = 1024
    max_per_participant: int = 10000


@dataclass(frozen=True, slots=True)
class SessionView:
    session: Session
    messages: list[SessionMessage] | None = None


def _not_found() -> ApiError:
    return ApiError(ErrorCode.SESSION_NOT_FOUND, "no such session")


class SessionService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        models: ChatModels,
        clock: WallClock,
        limits: SessionLimits,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._models = models
        self._clock = clock
        self.limits = limits
        self._active: dict[str, Generation] = {}  # session_id -> its reply in progress
        self._reserved: set[str] = set()  # session ids between the busy check and the start
        self._nursery: trio.Nursery | None = None

    # -- lifetime -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every generation task; close what a previous run left generating."""
        closed = await self._writer.write(store.close_interrupted_txn, self._clock())
        if closed:
            log.warning(
                "stored %d reply(ies) interrupted by a restart as finish_reason=error", closed
            )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def generating(self) -> int:
        return len(self._active)

    # -- access -----------------------------------------------------------------------

    async def _visible(self, principal: Principal, session_id: str) -> Session:
        if not ids.looks_like_id(session_id):
            raise _not_found()
        return _check_visible(principal, await self._readers.read(store.get_session, session_id))

    # -- CRUD -------------------------------------------------------------------------

    async def create(self, principal: Principal, spec: CreateSession) -> Session:
        principal.require_scope(SCOPE_MODELS_USE)
        self._models.get(spec.model)  # 404 MODEL_NOT_FOUND
        created = await self._writer.write(
            lambda conn: store.create_session_txn(
                conn,
                session_id=ids.random_id(ids.SESSION),
                tenant_id=principal.tenant_id,
                owner_id=principal.participant_id,
                model=spec.model,
                title=spec.title,
                system_prompt=spec.system_prompt,
                metadata=spec.metadata,
                now_ms=self._clock(),
                max_per_owner=self.limits.max_per_participant,
            )
        )
        if created is None:
            raise ApiError(
                ErrorCode.VALIDATION_ERROR,
                f"you own {self.limits.max_per_participant} sessions already; delete some first",
            )
        return created

    async def list_for(
        self, principal: Principal, *, tenant: bool, cursor: int | None, limit: int
    ) -> tuple[list[Session], str | None]:
        if tenant and not principal.is_admin:
            raise ApiError(
                ErrorCode.AUTHZ_PERMISSION_DENIED, "scope=tenant is for tenant admins only"
            )
        rows = await self._readers.read(
            lambda conn: store.list_sessions(
                conn,
                owner_id=None if tenant else principal.participant_id,
                tenant_id=principal.tenant_id,
                before_seq=cursor,
                limit=limit + 1,
            )
        )
        page = rows[:limit]
        next_cursor = str(page[-1].seq) if len(rows) > limit else None
        return page, next_cursor

    async def get(self, principal: Principal, session_id: str) -> SessionView:
        found = await self._visible(principal, session_id)
        messages = await self._readers.read(store.list_messages, found.session_id)
        return SessionView(found, messages)

    async def update(
        self, principal: Principal, session_id: str, changes: Mapping[str, Any]
    ) -> Session:
        found = await self._visible(principal, session_id)
        try:
            return await self._writer.write(
                store.update_session_txn, found.session_id, changes, self._clock()
            )
        except NotFound:
            raise _not_found() from None

    async def delete(self, principal: Principal, session_id: str) -> None:
        found = await self._visible(principal, session_id)
        try:
            await self._writer.write(
                store.soft_delete_txn, found.session_id, principal.participant_id, self._clock()
            )
        except NotFound:
            raise _not_found() from None
        gen = self._active.get(found.session_id)
        if gen is not None:
            gen.stop()  # its partial reply is still stored, for the audit trail

    # -- replies ----------------------------------------------------------------------

    async def send(self, principal: Principal, session_id: str, req: SendMessage) -> Generation:
        """Store the user message and start the reply; the caller follows the generation."""
        principal.require_scope(SCOPE_MODELS_USE)
        if not ids.looks_like_id(session_id):
            raise _not_found()
        # One read for the session and the history a context cut starts from.
        row, recent = await self._readers.read(
            store.session_and_recent, session_id, CONTEXT_READ_LIMIT, self._budget_for(req)
        )
        found = _check_visible(principal, row)
        if found.owner_id != principal.participant_id:
            raise ApiError(
                ErrorCode.AUTHZ_PERMISSION_DENIED, "only the session's owner may send messages"
            )
        if found.status == "closed":
            raise ApiError(ErrorCode.SESSION_CLOSED, "the session is closed")
        sid = found.session_id
        if sid in self._active or sid in self._reserved:
            raise ApiError(ErrorCode.SESSION_BUSY, "a reply is still being generated")
        if len(self._active) + len(self._reserved) >= self.limits.max_generations:
            raise ApiError(
                ErrorCode.MODEL_UNAVAILABLE, "too many replies are being generated", retry_after=1
            )
        self._reserved.add(sid)
        try:
            return await self._start(found, recent, req)
        finally:
            self._reserved.discard(sid)

    def _max_tokens(self, model: ModelEntry, req: SendMessage) -> int:
        return min(req.max_tokens or model.max_output_tokens, model.max_output_tokens)

    def _budget_for(self, req: SendMessage) -> Callable[[Session], int | None]:
        """The prompt budget of a session's model (None: unknown model, refused later)."""

        def budget(session: Session) -> int | None:
            if not self._models.has(session.model):
                return None
            model = self._models.get(session.model)
            return budget_for(model.context_window, self._max_tokens(model, req))

        return budget

    async def _start(
        self, found: Session, recent: list[SessionMessage], req: SendMessage
    ) -> Generation:
        model = self._models.get(found.model)
        max_tokens = self._max_tokens(model, req)
        history = [_counted(m) for m in recent if m.content]
        history.append(Counted(ChatMessage("user", req.content)))
        prompt = fit_context(
            found.system_prompt, history, budget_for(model.context_window, max_tokens)
        )
        user_id, reply_id = ids.random_id(ids.SESSION_MESSAGE), ids.random_id(ids.SESSION_MESSAGE)
        now = self._clock()
        assert self._nursery is not None, "SessionService.run is not running"
        # Shielded: once the user message (and the reply marked generating) is stored,
        # the generation must start even if the client has already gone away.
        with trio.CancelScope(shield=True):
            gen = await self._store_and_start(
                found, user_id, reply_id, now, req, prompt, max_tokens
            )
        return gen

    async def _store_and_start(
        self,
        found: Session,
        user_id: str,
        reply_id: str,
        now: int,
        req: SendMessage,
        prompt: list[ChatMessage],
        max_tokens: int,
    ) -> Generation:
        assert self._nursery is not None
        try:
            await self._writer.write(
                lambda conn: store.add_user_message_txn(
                    conn,
                    session_id=found.session_id,
                    message_id=user_id,
                    content=req.content,
                    tokens=estimate_tokens(req.content),
                    reply_id=reply_id,
                    now_ms=now,
                )
            )
        except NotFound:
            raise _not_found() from None
        gen = Generation(found.session_id, reply_id, user_id, found.model, now // 1000)
        self._active[found.session_id] = gen
        self._nursery.start_soon(self._generate, gen, prompt, max_tokens, req.temperature)
        return gen

    async def _generate(
        self,
        gen: Generation,
        prompt: list[ChatMessage],
        max_tokens: int,
        temperature: float | None,
    ) -> None:
        finish: Finish | None = None
        error: ApiError | None = None
        try:
            with gen.scope:
                try:
                    async with contextlib.aclosing(
                        self._models.stream_chat(gen.model, prompt, max_tokens, temperature)
                    ) as items:
                        async for item in items:
                            if isinstance(item, Delta):
                                gen.append(item.text)
                            else:
                                finish = item
                except ApiError as exc:
                    error = exc
                except Exception as exc:
                    log.exception("session reply failed", exc_info=exc)
                    error = ApiError(ErrorCode.BACKEND_ERROR, "the model backend failed")
            reason, usage = _outcome(gen, prompt, finish, error)
            await self._store(gen, reason, usage)
        finally:
            if not gen.finished:  # also when the server shuts down mid-reply
                reason, usage = _outcome(gen, prompt, finish, error)
                gen.finish(reason, usage, error)
            self._active.pop(gen.session_id, None)

    async def _store(self, gen: Generation, reason: str, usage: Usage) -> None:
        reply = NewReply(
            gen.message_id,
            gen.text,
            reason,
            usage.prompt_tokens,
            usage.completion_tokens,
            self._clock(),
        )
        try:
            await self._writer.write(store.add_reply_txn, gen.session_id, reply)
        except Exception as exc:  # a purged session, a full disk: log; readers still end
            log.error("could not store the reply %s: %r", gen.message_id, exc)

    async def stop(self, principal: Principal, session_id: str) -> Generation | None:
        """Stop the reply in progress (if any); returns it once its partial text is stored."""
        found = await self._visible(principal, session_id)
        gen = self._active.get(found.session_id)
        if gen is None:
            return None
        gen.stop()
        await gen.done.wait()
        return gen

    async def attach(self, principal: Principal, session_id: str, message_id: str) -> Generation:
        """A reply to follow: the live generation, or the stored reply replayed."""
        found = await self._visible(principal, session_id)
        gen = self._active.get(found.session_id)
        if gen is not None and gen.message_id == message_id:
            return gen
        missing = ApiError(ErrorCode.SESSION_MESSAGE_NOT_FOUND, "no such reply in this session")
        if not ids.looks_like_id(message_id):
            raise missing
        msg = await self._readers.read(store.get_message, message_id)
        if msg is None or msg.session_id != found.session_id or msg.role != "assistant":
            raise missing
        return Generation.stored(
            session_id=found.session_id,
            message_id=msg.message_id,
            user_message_id="",
            model=found.model,
            created=msg.created_at_ms // 1000,
            content=msg.content,
            finish_reason=msg.finish_reason or "stop",
            usage=Usage(msg.prompt_tokens or 0, msg.completion_tokens or 0),
        )


def _check_visible(principal: Principal, found: Session | None) -> Session:
    """The session if ``principal`` may see it: its owner, or an admin of its tenant."""
    if found is None or found.deleted_at_ms is not None:
        raise _not_found()
    if found.owner_id == principal.participant_id:
        return found
    if principal.is_admin and principal.tenant_id == found.tenant_id:
        return found
    raise _not_found()


def _counted(m: SessionMessage) -> Counted:
    if m.role == "assistant":
        return Counted(ChatMessage("assistant", m.content), m.tokens)
    return Counted(ChatMessage("user", m.content), m.tokens)


def _outcome(
    gen: Generation, prompt: list[ChatMessage], finish: Finish | None, error: ApiError | None
) -> tuple[str, Usage]:
    if error is not None:
        return "error", estimate_usage(prompt, gen.text)
    if finish is None:  # cancelled: stopped, deleted, or the server is shutting down
        return "cancelled", estimate_usage(prompt, gen.text)
    return finish.finish_reason, finish.usage
