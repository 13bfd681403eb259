"""Escalation actions, run after the answer in a server-owned nursery.

``email`` (stdlib smtplib in a worker thread), ``webhook`` (POST JSON signed
``X-ScaiBot-Signature: sha256=<hex HMAC of the body>``), ``slack`` (an
incoming-webhook POST). Each is tried ``action_attempts`` times with doubling
backoff; the outcome is recorded on the escalation (``delivered``, or
``failed`` with ``ESCALATION_ACTION_FAILED``). Nothing here can break a chat:
jobs are queued without waiting, and every failure is caught and recorded.
``scaiqueue`` needs no delivery: the escalation row is the hand-off.

Outbound URLs are client-controlled: redirects are not followed, each attempt
is bounded by ``webhook_timeout_s`` in all, and at most 64 KiB of a reply is read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
import orjson
import trio

from conf.sections import ScaibotSettings
from homeserver.clock import WallClock
from homeserver.store.database import Writer
from protocol.errors import ErrorCode
from storage.scaibot import conversations as cstore

log = logging.getLogger("homeserver.scaibot.actions")
MAX_REPLY_BYTES = 64 * 1024
QUEUE = 10_000
CONCURRENT = 32


@dataclass(frozen=True, slots=True)
class ActionJob:
    escalation_id: str
    action_type: str
    action_config: dict[str, Any]
    payload: dict[str, Any]


class ActionFailed(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _send_email(settings: ScaibotSettings, to: list[str], subject: str, text: str) -> None:
    if not settings.smtp_host:
        raise ActionFailed("no SMTP server is configured (scaibot.smtp_host)")
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(text)
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
        ) as smtp:
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise ActionFailed(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from None


def email_text(payload: dict[str, Any]) -> str:
    lines = [
        f"Bot: {payload.get('bot_name')} ({payload.get('bot_id')})",
        f"Conversation: {payload.get('conversation_id')}",
        f"Rule: {payload.get('rule_name')} ({payload.get('trigger_type')})",
        f"Visitor: {payload.get('visitor_name') or ''} <{payload.get('visitor_email') or ''}> "
        f"{payload.get('visitor_id') or ''}",
        "",
        f"Visitor wrote: {payload.get('user_message')}",
    ]
    if payload.get("answer"):
        lines.append(f"Bot answered: {payload['answer']}")
    return "\n".join(lines)


class ActionRunner:
    def __init__(
        self,
        writer: Writer,
        clock: WallClock,
        settings: ScaibotSettings,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._settings = settings
        self._send, self._recv = trio.open_memory_channel[ActionJob](QUEUE)
        self._limiter = trio.CapacityLimiter(CONCURRENT)
        self._http = http

    def submit_nowait(self, job: ActionJob) -> bool:
        """Queue a job; False when the queue is full (the caller records the failure)."""
        try:
            self._send.send_nowait(job)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(self._settings.webhook_timeout_s)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            trio.open_nursery() as nursery,
        ):
            if self._http is None:
                self._http = client
            task_status.started()
            async for job in self._recv:
                nursery.start_soon(self._run_job, job)

    async def _run_job(self, job: ActionJob) -> None:
        try:
            async with self._limiter:
                await self._deliver_with_retries(job)
        except Exception:  # recording the outcome failed: never take the server down
            log.exception("escalation action %s could not be recorded", job.escalation_id)

    async def _deliver_with_retries(self, job: ActionJob) -> None:
        attempts = self._settings.action_attempts
        error = "not attempted"
        for attempt in range(1, attempts + 1):
            try:
                await self._deliver(job)
            except ActionFailed as exc:
                error = str(exc)
            except Exception as exc:  # a bug or an unexpected library error: record it
                log.exception("escalation action %s crashed", job.escalation_id)
                error = f"{type(exc).__name__}"
            else:
                await self._record(job, "delivered", attempt, None)
                return
            if attempt < attempts:
                await trio.sleep(self._settings.action_backoff_ms / 1000 * 2 ** (attempt - 1))
        code = ErrorCode.ESCALATION_ACTION_FAILED
        await self._record(job, "failed", attempts, {"code": str(code), "message": error})

    async def _record(
        self, job: ActionJob, status: str, attempts: int, error: dict[str, Any] | None
    ) -> None:
        await self._writer.write(
            lambda conn: cstore.update_escalation_txn(
                conn,
                job.escalation_id,
                status=status,
                attempts=attempts,
                error=error,
                now_ms=self._clock(),
            )
        )

    async def _deliver(self, job: ActionJob) -> None:
        cfg = job.action_config
        if job.action_type == "email":
            await trio.to_thread.run_sync(
                _send_email,
                self._settings,
                list(cfg["to"]),
                str(cfg.get("subject") or "ScaiBot escalation"),
                email_text(job.payload),
                abandon_on_cancel=True,
            )
        elif job.action_type == "webhook":
            body = orjson.dumps({"event": "scaibot.escalation", **job.payload})
            headers = {"X-ScaiBot-Signature": signature(str(cfg["secret"]), body)}
            await self._post(str(cfg["url"]), body, headers)
        elif job.action_type == "slack":
            text = f"ScaiBot escalation ({job.payload.get('rule_name')}): " + str(
                job.payload.get("user_message")
            )
            await self._post(str(cfg["webhook_url"]), orjson.dumps({"text": text}), {})
        else:
            raise ActionFailed(f"no delivery for action {job.action_type}")

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        client = self._http
        assert client is not None
        status = 0
        with trio.move_on_after(self._settings.webhook_timeout_s) as scope:
            try:
                async with client.stream(
                    "POST",
                    url,
                    content=body,
                    headers={"Content-Type": "application/json", **headers},
                ) as reply:
                    status = reply.status_code
                    read = 0
                    async for chunk in reply.aiter_raw():
                        read += len(chunk)
                        if read > MAX_REPLY_BYTES:
                            break
            except httpx.HTTPError as exc:
                raise ActionFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
        if scope.cancelled_caught:
            raise ActionFailed(f"no answer within {self._settings.webhook_timeout_s} s")
        if not 200 <= status < 300:
            raise ActionFailed(f"the receiver answered HTTP {status}")
