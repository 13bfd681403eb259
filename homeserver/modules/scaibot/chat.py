"""``POST /chat``: the turn pipeline (CONTRACT 13).

    open_turn (before the stream; refusals are plain JSON errors)
        token -> bot + tone (one read) -> rate limits -> visitor message stored
    stream (Server-Sent Events)
        start -> [system_prompt] -> retrieval -> keyword/explicit pre-check
        -> streamed model call (token, citation) -> intent/sentiment/confidence
        post-check -> done;  any failure ends with error {code, message}

The answer is stored when the stream ends in any way, the visitor closing it
included (finish_reason ``cancelled``; closing the generator closes the model
call). Escalation actions are handed to the action runner after that.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from functools import partial
from typing import Any

import trio

from bridges.models.base import ChatModels, Delta, Finish
from conf.sections import ScaibotSettings
from homeserver.clock import WallClock
from homeserver.errors import error_event
from homeserver.identity.auth import Principal
from homeserver.modules.scaibot.access import Caller
from homeserver.modules.scaibot.actions import ActionJob, ActionRunner
from homeserver.modules.scaibot.bots import bot_ref
from homeserver.modules.scaibot.ports import Retriever
from homeserver.modules.scaibot.turn import (
    ChatRequest,
    Turn,
    check_caller,
    load_read,
    model_history,
    rate_keys,
    visitor_fields,
)
from homeserver.store.database import Readers, Writer
from protocol import ids
from protocol.errors import ApiError, ErrorCode
from protocol.llm import cited_markers, estimate_prompt_tokens, estimate_tokens
from protocol.ratelimit import SlidingWindowLimiter, retry_after_seconds
from protocol.scaibot.embed import EmbedClaims
from protocol.scaibot.escalation import (
    POST_TRIGGERS,
    PRE_TRIGGERS,
    Rule,
    TurnFacts,
    first_firing,
    has_regex,
)
from protocol.scaibot.sse import encode_event
from protocol.scaibot.tone import build_prompt, fit_history, system_prompt
from storage.scaibot import conversations as cstore
from storage.scaibot.conversations import Escalation, Message, NewConversation

log = logging.getLogger("homeserver.scaibot")
Sentiment = Callable[[str], float]
MESSAGE = "msg_"
ESCALATION = "evt_esc_"
SNIPPET = 300
FINISH_TIMEOUT_S = 10.0


class ChatService:
    def __init__(
        self,
        writer: Writer,
        readers: Readers,
        clock: WallClock,
        models: ChatModels,
        retriever: Retriever,
        actions: ActionRunner,
        settings: ScaibotSettings,
        sentiment: Sentiment,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._clock = clock
        self._models = models
        self._retriever = retriever
        self._actions = actions
        self._settings = settings
        self._sentiment = sentiment
        self._limiter = SlidingWindowLimiter()

    # ------------------------------------------------------------ before the stream

    async def open_turn(self, who: Principal | EmbedClaims, request: ChatRequest) -> Turn:
        """Everything before the stream, in one read: refusals here are JSON errors."""
        started = trio.current_time()
        loaded = await self._readers.read(load_read, who, request.bot_id, request.conversation_id)
        bot = check_caller(request, loaded)
        caller = loaded.caller
        self._rate_limit(caller, bot.bot_id)
        fields = visitor_fields(caller)
        conversation_id = request.conversation_id or ids.random_id(ids.CONVERSATION)
        user_id, answer_id = ids.random_id(MESSAGE), ids.random_id(MESSAGE)
        new = None
        if request.conversation_id is None:
            new = NewConversation(
                conversation_id=conversation_id,
                tenant_id=bot.tenant_id,
                bot_id=bot.bot_id,
                **fields,
            )
        user = Message(user_id, conversation_id, "user", request.message, self._clock())

        def open_txn(conn: Any) -> None:
            if new is not None:
                cstore.create_conversation_txn(conn, new, user.created_at_ms)
            cstore.add_message_txn(conn, user)

        return Turn(
            caller=caller,
            request=request,
            bot=bot,
            tone=loaded.tone,
            rules=loaded.rules,
            history=model_history(loaded.history),
            visitor_texts=loaded.visitor_texts,
            conversation_id=conversation_id,
            user_message_id=user_id,
            message_id=answer_id,
            open_txn=open_txn,
            started=started,
            visitor_fields=fields,
        )

    def _rate_limit(self, caller: Caller, bot_id: str) -> None:
        visitor_key, bot_key = rate_keys(caller, bot_id)
        now = trio.current_time()
        s = self._settings
        wait = self._limiter.try_acquire(
            visitor_key, now, limit=s.visitor_messages_per_minute, window=60.0
        )
        if wait == 0.0:
            wait = self._limiter.try_acquire(
                bot_key, now, limit=s.bot_messages_per_minute, window=60.0
            )
            if wait > 0.0:
                self._limiter.refund(visitor_key)
        if wait > 0.0:
            raise ApiError(
                ErrorCode.RATE_LIMITED,
                "too many chat messages; wait before sending another",
                retry_after=retry_after_seconds(wait),
            )

    # ------------------------------------------------------------ the stream

    async def stream(self, turn: Turn) -> AsyncGenerator[bytes, None]:
        # The ids are ours already: start goes out first, and the visitor's message is
        # stored (durably) before anything else happens.
        yield encode_event(
            "start", {"conversation_id": turn.conversation_id, "message_id": turn.message_id}
        )
        try:
            await self._writer.write(turn.open_txn)
        except Exception as exc:
            yield encode_event("error", error_event(exc, "bot"))
            return
        try:
            system = system_prompt(turn.bot.config.display_name, turn.tone)
            await self._retrieve(turn)
            if turn.request.include_system_prompt:
                yield encode_event("system_prompt", {"system_prompt": system})
            pre = await self._pre_check(turn)
            if pre is not None:
                turn.escalation, turn.escalation_stage = pre, "pre"
                turn.answer = pre.spec.message
                yield self._escalation_event(turn)
            else:
                async with contextlib.aclosing(self._generate(turn, system)) as events:
                    async for event in events:
                        yield event
                post = first_firing(turn.rules, self._facts(turn, turn.answer), stage=POST_TRIGGERS)
                if post is not None:
                    turn.escalation, turn.escalation_stage = post, "post"
                    yield self._escalation_event(turn)
            yield encode_event(
                "done", {"total_tokens": turn.total_tokens, "latency_ms": _latency(turn)}
            )
        except ApiError as exc:
            turn.finish_reason = "error"
            yield encode_event("error", error_event(exc, "bot"))
        except Exception as exc:  # rendered as SW_INTERNAL; error_event logs it
            turn.finish_reason = "error"
            yield encode_event("error", error_event(exc, "bot"))
        except BaseException:
            turn.finish_reason = "cancelled"  # the visitor closed the stream
            raise
        finally:
            # Shielded (the visitor may have gone), bounded (the server may be stopping).
            with trio.move_on_after(FINISH_TIMEOUT_S) as scope:
                scope.shield = True
                await self._finish(turn)

    async def _pre_check(self, turn: Turn) -> Rule | None:
        """Keyword and explicit rules. Regex keywords run in a worker thread (the regex
        package releases the GIL and bounds each match), never on the event loop."""
        facts = self._facts(turn, None)
        if has_regex(turn.rules):
            return await trio.to_thread.run_sync(
                partial(first_firing, turn.rules, facts, stage=PRE_TRIGGERS),
                abandon_on_cancel=True,
            )
        return first_firing(turn.rules, facts, stage=PRE_TRIGGERS)

    async def _retrieve(self, turn: Turn) -> None:
        """The retrieval step: only with knowledge on; the Retriever decides what matches."""
        ref = bot_ref(turn.bot)
        if ref.knowledge_enabled:
            turn.chunks = list(
                await self._retriever.retrieve(
                    ref.retrieval_collection, turn.request.message, ref.knowledge_settings
                )
            )

    def _facts(self, turn: Turn, answer: str | None) -> TurnFacts:
        needs_sentiment = any(r.spec.trigger_type == "sentiment" for r in turn.rules)
        texts = [*turn.visitor_texts, turn.request.message] if needs_sentiment else []
        return TurnFacts(
            message=turn.request.message,
            sentiments=[self._sentiment(t) for t in texts],
            answer=answer,
            knowledge_enabled=turn.bot.config.knowledge_enabled,
            retrieval_scores=[c.score for c in turn.chunks],
            score_threshold=turn.bot.config.knowledge_settings.score_threshold,
        )

    def _escalation_event(self, turn: Turn) -> bytes:
        rule = turn.escalation
        assert rule is not None
        return encode_event(
            "escalation",
            {
                "rule_id": rule.rule_id,
                "action_type": rule.spec.action_type,
                "message": rule.spec.message,
            },
        )

    async def _generate(self, turn: Turn, system: str) -> AsyncGenerator[bytes, None]:
        config = turn.bot.config
        model = self._models.get(config.model)
        max_tokens = min(config.max_tokens_per_response, model.max_output_tokens)
        chunks = [c.text for c in turn.chunks]
        budget = model.context_window - max_tokens
        prompt = build_prompt(
            system,
            chunks,
            fit_history(system, chunks, turn.history, turn.request.message, budget),
            turn.request.message,
        )
        turn.history = []  # the prompt has it; nothing else needs it while the answer streams
        cited: set[str] = set()
        prompt_tokens = turn.total_tokens = estimate_prompt_tokens(prompt)
        stream = self._models.stream_chat(config.model, prompt, max_tokens)
        del prompt, chunks  # the backend holds what it needs (fewer live objects per stream)
        async with contextlib.aclosing(stream) as items:
            async for item in items:
                if isinstance(item, Delta):
                    turn.answer += item.text
                    turn.total_tokens = prompt_tokens + estimate_tokens(turn.answer)
                    yield encode_event("token", {"delta": item.text})
                    if turn.chunks and "]" in item.text:
                        for event in self._new_citations(turn, cited):
                            yield event
                elif isinstance(item, Finish):
                    turn.finish_reason = item.finish_reason
                    turn.total_tokens = item.usage.total_tokens

    def _new_citations(self, turn: Turn, cited: set[str]) -> list[bytes]:
        events = []
        for marker in cited_markers(turn.answer):
            n = int(marker)
            if marker in cited or not 1 <= n <= len(turn.chunks):
                continue
            cited.add(marker)
            chunk = turn.chunks[n - 1]
            citation = {
                "marker": marker,
                "document_id": chunk.document_id,
                "snippet": chunk.text[:SNIPPET],
                "score": round(chunk.score, 4),
            }
            turn.citations.append(citation)
            events.append(encode_event("citation", citation))
        return events

    # ------------------------------------------------------------ after the stream

    async def _finish(self, turn: Turn) -> None:
        """Store the answer (whatever was said) and the escalation; queue its action."""
        now = self._clock()
        answer = Message(
            turn.message_id,
            turn.conversation_id,
            "assistant",
            turn.answer,
            now,
            citations=turn.citations,
            retrieved=[c.to_dict() for c in turn.chunks],
            tokens=turn.total_tokens,
            latency_ms=_latency(turn),
            finish_reason=turn.finish_reason,
        )
        escalation = self._escalation_row(turn, now)

        def finish_txn(conn: Any) -> None:
            cstore.add_message_txn(conn, answer)
            if escalation is not None:
                cstore.add_escalation_txn(conn, escalation)

        try:
            await self._writer.write(finish_txn)
        except Exception:  # the stream is over; nothing to tell the visitor
            log.exception("storing a chat turn failed")
            return
        if escalation is not None and escalation.status == "pending":
            rule = turn.escalation
            assert rule is not None
            job = ActionJob(
                escalation.escalation_id,
                rule.spec.action_type,
                rule.spec.action_config,
                self._payload(turn, escalation),
            )
            if not self._actions.submit_nowait(job):
                await self._writer.write(
                    lambda conn: cstore.update_escalation_txn(
                        conn,
                        escalation.escalation_id,
                        status="failed",
                        attempts=0,
                        error={
                            "code": str(ErrorCode.ESCALATION_ACTION_FAILED),
                            "message": "the action queue is full",
                        },
                        now_ms=self._clock(),
                    )
                )

    def _escalation_row(self, turn: Turn, now: int) -> Escalation | None:
        rule = turn.escalation
        if rule is None:
            return None
        queue = rule.spec.action_type == "scaiqueue"
        return Escalation(
            seq=0,
            escalation_id=ids.random_id(ESCALATION),
            conversation_id=turn.conversation_id,
            tenant_id=turn.bot.tenant_id,
            bot_id=turn.bot.bot_id,
            message_id=turn.message_id,
            rule_id=rule.rule_id,
            rule_name=rule.spec.name,
            trigger_type=rule.spec.trigger_type,
            action_type=rule.spec.action_type,
            message=rule.spec.message,
            stage=turn.escalation_stage,
            status="open" if queue else "pending",
            attempts=0,
            error=None,
            answered_by=None,
            created_at_ms=now,
            updated_at_ms=now,
        )

    def _payload(self, turn: Turn, e: Escalation) -> dict[str, Any]:
        return {
            "escalation_id": e.escalation_id,
            "conversation_id": turn.conversation_id,
            "bot_id": turn.bot.bot_id,
            "bot_name": turn.bot.config.name,
            "rule_id": e.rule_id,
            "rule_name": e.rule_name,
            "trigger_type": e.trigger_type,
            "stage": e.stage,
            "message": e.message,
            "user_message": turn.request.message,
            "answer": turn.answer if e.stage == "post" else None,
            "visitor_id": turn.visitor_fields.get("visitor_id"),
            "visitor_email": turn.visitor_fields.get("visitor_email"),
            "visitor_name": turn.visitor_fields.get("visitor_name"),
            "metadata": turn.visitor_fields.get("metadata"),
            "created_at_ms": e.created_at_ms,
        }


def _latency(turn: Turn) -> int:
    return int((trio.current_time() - turn.started) * 1000)
