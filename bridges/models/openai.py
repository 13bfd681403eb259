"""An OpenAI-compatible HTTP backend: Ollama, llama.cpp's server, vLLM, OpenAI (CONTRACT 10).

Every call is ``POST {base_url}/chat/completions`` with ``stream: true`` (and
``stream_options.include_usage``); the SSE reply is parsed with ``httpx-sse``.
httpx runs under trio through anyio. Each call opens its own client (one
connection, no pool), so closing the generator — or cancelling the task that
iterates it — closes the upstream socket at once; the SSL context is built
once per backend so a call never loads certificates on the event loop.

Error mapping (CONTRACT 10):

- refused connection, DNS failure, or an upstream 4xx (the backend refuses:
  bad key, rate limit, request rejected) → 503 ``MODEL_UNAVAILABLE``;
- upstream 404 → 503 ``MODEL_UNAVAILABLE`` as well: the slug is in our
  catalogue (so ``MODEL_NOT_FOUND`` would be wrong), the upstream just does not
  serve its ``upstream_id`` right now (an Ollama model not pulled, say);
- upstream 5xx, a body that is not an event stream, a malformed chunk, or a
  stream that ends before its ``finish_reason``/``[DONE]`` → 502 ``BACKEND_ERROR``;
- no byte within ``timeout_s`` (connecting, before the first byte, or between
  chunks) → 504 ``BACKEND_TIMEOUT``.

Usage is taken from the final chunk when the server reports it, else estimated.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from bridges.models.base import Delta, Finish, StreamItem
from conf.sections import BackendSettings, ModelEntry
from protocol.errors import ApiError, ErrorCode
from protocol.llm import ChatMessage, Usage, estimate_prompt_tokens, estimate_tokens

MAX_ERROR_BODY = 2048
_FINISH = {"stop": "stop", "length": "length"}


def _unavailable(backend: str, why: str) -> ApiError:
    return ApiError(ErrorCode.MODEL_UNAVAILABLE, f"model backend {backend!r} {why}")


def _bad(backend: str, why: str) -> ApiError:
    return ApiError(ErrorCode.BACKEND_ERROR, f"model backend {backend!r} {why}")


def _upstream_message(raw: bytes) -> str:
    """The upstream's own error message, if its body says one (bounded, one line)."""
    try:
        body = json.loads(raw[:MAX_ERROR_BODY])
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return " ".join(str(message).split())[:200] if message else ""


def _status_error(backend: str, status: int, raw: bytes) -> ApiError:
    said = _upstream_message(raw)
    suffix = f": {said}" if said else ""
    if status >= 500:
        return _bad(backend, f"answered HTTP {status}{suffix}")
    if status == 404:
        return _unavailable(backend, f"does not serve this model (HTTP 404){suffix}")
    return _unavailable(backend, f"refused the request (HTTP {status}){suffix}")


def _parse_chunk(backend: str, data: str) -> tuple[str, str | None, Usage | None]:
    """(content, finish_reason, usage) of one ``chat.completion.chunk``."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise _bad(backend, "sent a malformed chunk (not JSON)") from None
    if not isinstance(chunk, dict):
        raise _bad(backend, "sent a malformed chunk (not an object)")
    if "error" in chunk:
        said = _upstream_message(data.encode())
        raise _bad(backend, f"failed midway: {said or 'error event'}")
    usage = _usage(backend, chunk.get("usage"))
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise _bad(backend, "sent a malformed chunk (no choices)")
    if not choices:
        return "", None, usage  # the include_usage chunk has no choices
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        raise _bad(backend, "sent a malformed chunk (no delta)")
    content = delta.get("content") or ""
    reason = choice.get("finish_reason")
    if not isinstance(content, str) or not (reason is None or isinstance(reason, str)):
        raise _bad(backend, "sent a malformed chunk (bad content or finish_reason)")
    return content, reason, usage


def _usage(backend: str, value: Any) -> Usage | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(backend, "sent a malformed usage object")
    counts: list[int] = []
    for key in ("prompt_tokens", "completion_tokens"):
        n = value.get(key)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise _bad(backend, f"sent a malformed usage object ({key})")
        counts.append(n)
    return Usage(counts[0], counts[1])


class OpenAIBackend:
    """One ``[[models.backends]]`` entry."""

    def __init__(self, settings: BackendSettings) -> None:
        self.name = settings.name
        self._settings = settings
        self._url = settings.base_url + "/chat/completions"
        self._timeout = httpx.Timeout(settings.timeout_s)
        self._ssl = ssl.create_default_context() if self._url.startswith("https:") else None

    def _headers(self) -> dict[str, str]:
        key = self._settings.resolved_api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            verify=self._ssl if self._ssl is not None else True,
            trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
        )

    def _body(
        self,
        messages: Sequence[ChatMessage],
        model: ModelEntry,
        max_tokens: int,
        temperature: float | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.upstream_id,
            "messages": [m.to_dict() for m in messages],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if temperature is not None:
            body["temperature"] = temperature
        return body

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        model: ModelEntry,
        max_tokens: int,
        temperature: float | None,
    ) -> AsyncGenerator[StreamItem, None]:
        reader = _Reader(self.name)
        body = self._body(messages, model, max_tokens, temperature)
        prompt_tokens = estimate_prompt_tokens(messages)  # if the backend reports no usage
        del messages  # not needed while the answer streams (fewer live objects per stream)
        try:
            async with (
                self._client() as client,
                aconnect_sse(
                    client,
                    "POST",
                    self._url,
                    json=body,
                    headers=self._headers(),
                ) as source,
            ):
                if source.response.status_code != 200:
                    raw = await _read_bounded(source.response)
                    raise _status_error(self.name, source.response.status_code, raw)
                async with contextlib.aclosing(source.aiter_sse()) as events:
                    async for event in events:
                        content = reader.feed(event.event, event.data)
                        if content:
                            yield Delta(content)
                        if reader.done:
                            break
        except httpx.TimeoutException:
            raise ApiError(
                ErrorCode.BACKEND_TIMEOUT,
                f"model backend {self.name!r} sent nothing for {self._settings.timeout_s:g} s",
            ) from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.ProxyError):
            raise _unavailable(
                self.name, "is unreachable (refused, or its name is unknown)"
            ) from None
        except SSEError:
            raise _bad(self.name, "did not answer with an event stream") from None
        except (httpx.HTTPError, httpx.StreamError):
            raise _bad(self.name, "broke the stream midway") from None
        yield reader.finish(prompt_tokens)


async def _read_bounded(response: httpx.Response) -> bytes:
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) >= MAX_ERROR_BODY:
            break
    return raw


class _Reader:
    """The state of one upstream stream: text so far, finish reason, reported usage."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.text: list[str] = []
        self.reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, event: str, data: str) -> str:
        """The content one SSE event adds (``""`` for none)."""
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        if event == "error":
            said = _upstream_message(data.encode())
            raise _bad(self.backend, f"failed midway: {said or 'error event'}")
        content, finish, usage = _parse_chunk(self.backend, data)
        self.usage = usage or self.usage
        self.reason = finish or self.reason
        if content:
            self.text.append(content)
        return content

    def finish(self, prompt_tokens: int) -> Finish:
        if not self.done and self.reason is None:
            raise _bad(self.backend, "ended the stream before it finished")
        usage = self.usage or Usage(prompt_tokens, estimate_tokens("".join(self.text)))
        return Finish(_FINISH.get(self.reason or "stop", "stop"), usage)
