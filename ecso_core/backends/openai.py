"""OpenAI-compatible chat-completions backend (OpenAI, vLLM, SGLang, llama.cpp server, Ollama, ...).

Layers: :func:`to_payload` / :func:`from_payload` / :func:`score_from_payload` are pure translators,
tested for exact equality; :class:`OpenAIBackend` adds pooled httpx clients, bounded concurrency,
timeouts and retries with backoff on 429 / 5xx / connection errors, and maps failures to typed errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypedDict

import httpx
from pydantic import Field

from .._model import ECSOModel
from ..cancel import task_cancelling
from ..errors import BackendError, BackendTimeoutError, BackendUnavailableError, ConfigError, MessageError
from ..images import image_to_data_url, load_image
from ..types import ChatReply, ChatRequest, ImagePart, ScoreWords, TextPart, TokenUsage, ToolCall, YesNoScore
from ..verdict import score_from_logprobs
from .base import BackendBase, BackendCapabilities, check_capabilities

__all__ = [
    "OpenAIBackend",
    "OpenAISettings",
    "from_payload",
    "score_from_logprobs",  # re-exported from ecso_core.verdict, where it lives
    "score_from_payload",
    "to_payload",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_TOP_LOGPROBS = 20


class OpenAISettings(ECSOModel):
    """How to reach an OpenAI-compatible server."""

    invalid = ConfigError

    model: str
    base_url: str = Field(default_factory=lambda: os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL))
    api_key: str | None = None
    """Bearer token; default: ``$OPENAI_API_KEY``. Local servers usually need none."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Time limit of one HTTP request."""
    max_concurrency: int = Field(default=16, ge=1)
    """Most requests in flight at once from this backend."""
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    """First retry delay; doubles each retry (a ``Retry-After`` header wins when present)."""
    logprobs: Literal["auto", "always", "never"] = "auto"
    """Read the check from first-token log-probabilities: ``auto`` probes and, when the server sends
    none, leaves the check to text verdicts from then on; ``always`` asks every time; ``never``."""
    max_images: int | None = None
    """Declared image limit of the served model (None: unknown)."""
    tools: bool = True
    """The server accepts tool definitions."""


def to_payload(request: ChatRequest, model: str) -> dict[str, Any]:
    """Translate ``request`` into a chat-completions JSON body (images become ``data:`` URLs)."""
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    params = request.params
    if params.max_new_tokens is not None:  # unset: the server's own default, as for any OpenAI client
        body["max_tokens"] = params.max_new_tokens
    body["temperature"] = params.temperature
    if params.top_p != 1.0:
        body["top_p"] = params.top_p
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if request.tools:
        body["tools"] = list(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
    reserved = sorted(set(request.options) & _RESERVED_OPTIONS)
    if reserved:
        raise MessageError(f"call options cannot set {', '.join(reserved)}: the backend sets them itself")
    body.update(request.options)
    return body


# Body fields a call option must not override: the conversation, the model, and the reply's shape
# (one choice, one JSON body) that from_payload reads.
_RESERVED_OPTIONS = frozenset({"model", "messages", "stream", "stream_options", "n"})


def _message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
        out["content"] = message.text
        return out
    if message.images:
        out["content"] = [_part(p) for p in message.content]
    else:
        out["content"] = message.text
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    if message.name:
        out["name"] = message.name
    return out


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        image = part.image if hasattr(part.image, "save") else load_image(part.image)
        return {"type": "image_url", "image_url": {"url": image_to_data_url(image)}}
    raise BackendError(f"unknown message part {type(part).__name__}")  # pragma: no cover


def from_payload(body: dict[str, Any]) -> ChatReply:
    """Translate a chat-completions response body into a :class:`ChatReply`.

    Raises:
        BackendError: the body has no choices or a malformed tool call.

    """
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"malformed chat-completions response: {str(body)[:200]}") from exc
    calls = []
    for raw in message.get("tool_calls") or []:
        function = raw.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError as exc:
            raise BackendError(f"tool call with invalid JSON arguments: {function.get('arguments')!r}") from exc
        calls.append(ToolCall(id=raw.get("id") or "", name=function.get("name") or "", arguments=arguments))
    usage = body.get("usage") or {}
    return ChatReply(
        text=message.get("content") or "",
        tool_calls=tuple(calls),
        usage=TokenUsage(
            prompt_tokens=usage.get("prompt_tokens") or 0, completion_tokens=usage.get("completion_tokens") or 0
        ),
        finish_reason=choice.get("finish_reason"),
        raw=body,
    )


def score_from_payload(body: dict[str, Any], words: ScoreWords | None = None) -> YesNoScore | None:
    """P(yes) and P(no) (or of ``words``) from the first token's ``top_logprobs``; None when the server sent none."""
    try:
        logprobs = body["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    return score_from_logprobs(logprobs, (body.get("usage") or {}).get("prompt_tokens") or 0, words)


class _ClientOptions(TypedDict):
    """What the sync client and each event loop's async client share."""

    base_url: str
    headers: dict[str, str]
    timeout: float
    limits: httpx.Limits


class OpenAIBackend(BackendBase):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the served model name.
        transport: an httpx transport for both clients (tests pass ``httpx.MockTransport``).
        **settings: see :class:`OpenAISettings`.

    """

    endpoint = "/chat/completions"
    """The path requests are posted to, under ``base_url``."""

    def __init__(self, model: str, *, transport: Any = None, **settings: Any) -> None:
        self.settings = OpenAISettings(model=model, **settings)
        self.name = model
        self.capabilities = BackendCapabilities(
            score_yes_no=self.settings.logprobs != "never",
            max_images=self.settings.max_images,
            tools=self.settings.tools,
            call_options=True,
        )
        self._no_logprobs = False  # learnt at run time: the server sends no log-probabilities
        key = self.settings.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=self.settings.max_concurrency)
        self._transport = transport
        self._client_options = _ClientOptions(
            base_url=self.settings.base_url.rstrip("/"), headers=headers, timeout=self.settings.timeout_s, limits=limits
        )
        self._client = httpx.Client(transport=transport, **self._client_options)
        self._pool = ThreadPoolExecutor(max_workers=self.settings.max_concurrency)
        # Async clients and semaphores bind to an event loop: one of each per loop.
        self._per_loop: dict[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Semaphore]] = {}
        self._lock = threading.Lock()

    # ---- protocol ---------------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Answer each request; up to ``max_concurrency`` HTTP calls run at once.

        A cancelled request (see :attr:`ChatRequest.cancel`) is not sent and gets an empty
        ``finish_reason="cancelled"`` reply; with :meth:`agenerate` one already in flight is dropped.
        """
        bodies = [self._body(r) for r in requests]
        posted = self._pool.map(self._post_unless_cancelled, requests, bodies)
        return [_CANCELLED if b is None else self._reply(b) for b in posted]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Answer each request concurrently on the event loop."""
        bodies = [self._body(r) for r in requests]
        posted = await asyncio.gather(*(self._apost_cancellable(r, b) for r, b in zip(requests, bodies, strict=True)))
        return [_CANCELLED if b is None else self._reply(b) for b in posted]

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        """The server's SSE stream (``stream: true``): text deltas, then the whole reply with its usage.

        The server generates while the consumer checks between deltas; closing the iterator closes the
        HTTP response, which stops the generation on the server. Tool calls are not streamed: a request
        with tools is answered whole.
        """
        if request.tools:
            yield from super().stream_generate(request)
            return
        body = self._body(request) | {"stream": True, "stream_options": {"include_usage": True}}
        text, finish, usage = "", None, TokenUsage()
        try:
            with self._client.stream("POST", self.endpoint, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _json_or_raise(response, self.name)
                for line in response.iter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        usage = TokenUsage(
                            prompt_tokens=chunk["usage"].get("prompt_tokens") or 0,
                            completion_tokens=chunk["usage"].get("completion_tokens") or 0,
                        )
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
                        if delta:
                            text += delta
                            yield delta
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.settings.base_url) from exc
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise BackendError(f"{self.name} sent a malformed stream: {exc}") from exc
        yield ChatReply(text=text, usage=usage, finish_reason=finish)

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """First-token yes/no probabilities from ``logprobs``; None where the server sent none."""
        if self._no_logprobs:
            return [None] * len(requests)
        bodies = [self._score_body(r) for r in requests]
        posted = self._pool.map(self._post_unless_cancelled, requests, bodies)
        return [None if b is None else self._score(b, r.score_words) for r, b in zip(requests, posted, strict=True)]

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Async :meth:`score_yes_no`."""
        if self._no_logprobs:
            return [None] * len(requests)
        bodies = [self._score_body(r) for r in requests]
        posted = await asyncio.gather(*(self._apost_cancellable(r, b) for r, b in zip(requests, bodies, strict=True)))
        return [None if b is None else self._score(b, r.score_words) for r, b in zip(requests, posted, strict=True)]

    def close(self) -> None:
        """Close the sync HTTP client and the worker pool (see :meth:`aclose` for the async clients)."""
        self._client.close()
        self._pool.shutdown(wait=False)

    async def aclose(self) -> None:
        """Close the async client of the running event loop, then the sync resources."""
        with self._lock:
            state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].aclose()
        self.close()

    # ---- internals ----------------------------------------------------------------------------

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        check_capabilities(self.capabilities.model_copy(update={"score_yes_no": False}), request, self.name)
        return to_payload(request, self.settings.model)

    def _reply(self, body: dict[str, Any]) -> ChatReply:
        return from_payload(body)

    def _score_body(self, request: ChatRequest) -> dict[str, Any]:
        body = self._body(request)
        body.update(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=_TOP_LOGPROBS)
        return body

    def _score(self, body: dict[str, Any], words: ScoreWords | None = None) -> YesNoScore | None:
        """Read logprobs; None when the server sent none (the guard then asks for a text verdict).

        With ``logprobs="auto"`` a server that sent none once is not asked again: later scores are
        None at once, without a request.
        """
        score = score_from_payload(body, words)
        if score is None and self.settings.logprobs == "auto":
            self._no_logprobs = True
        return score

    def _post_unless_cancelled(self, request: ChatRequest, body: dict[str, Any]) -> dict[str, Any] | None:
        return None if request.cancel is not None and request.cancel.cancelled else self._post(body)

    async def _apost_cancellable(self, request: ChatRequest, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST ``body``; None, without waiting for the server, once the request is cancelled."""
        token = request.cancel
        if token is None:
            return await self._apost(body)
        if token.cancelled:
            return None
        post = asyncio.ensure_future(self._apost(body))
        loop = asyncio.get_running_loop()
        forget = token.on_cancel(lambda: loop.call_soon_threadsafe(post.cancel))
        try:
            return await post
        except asyncio.CancelledError:
            if token.cancelled and not task_cancelling():
                return None  # the HTTP request was dropped: the server stops generating for it
            raise
        finally:
            forget()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self._client.post(self.endpoint, json=body)
            except httpx.HTTPError as exc:
                error = _transport_error(exc, self.settings.base_url)
                if attempt == self.settings.max_retries:
                    raise error from exc
                time.sleep(self._delay(attempt, None))
                continue
            if response.status_code in _RETRY_STATUS and attempt < self.settings.max_retries:
                time.sleep(self._delay(attempt, response))
                continue
            return _json_or_raise(response, self.name)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apost(self, body: dict[str, Any]) -> dict[str, Any]:
        client, semaphore = self._loop_state()
        async with semaphore:
            for attempt in range(self.settings.max_retries + 1):
                try:
                    response = await client.post(self.endpoint, json=body)
                except httpx.HTTPError as exc:
                    error = _transport_error(exc, self.settings.base_url)
                    if attempt == self.settings.max_retries:
                        raise error from exc
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                if response.status_code in _RETRY_STATUS and attempt < self.settings.max_retries:
                    await asyncio.sleep(self._delay(attempt, response))
                    continue
                return _json_or_raise(response, self.name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _loop_state(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [other for other in self._per_loop if other.is_closed()]:
                del self._per_loop[old]
            if loop not in self._per_loop:
                client = httpx.AsyncClient(transport=self._transport, **self._client_options)
                self._per_loop[loop] = (client, asyncio.Semaphore(self.settings.max_concurrency))
            return self._per_loop[loop]

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    return min(float(retry_after), 60.0)
                except ValueError:
                    pass
        return self.settings.backoff_s * (2.0**attempt)


_CANCELLED = ChatReply(finish_reason="cancelled")


def _transport_error(exc: httpx.HTTPError, base_url: str) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeoutError(f"request to {base_url} timed out: {exc}")
    return BackendUnavailableError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}")


def _json_or_raise(response: httpx.Response, name: str) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", {})
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError):
            message = response.text[:300]
        error = BackendError(f"{name} answered HTTP {response.status_code}: {message}")
        error.status_code = response.status_code
        raise error
    try:
        body = response.json()
    except ValueError as exc:
        raise BackendError(f"{name} sent a non-JSON response: {response.text[:200]!r}") from exc
    if not isinstance(body, dict):
        raise BackendError(f"{name} sent an unexpected response: {str(body)[:200]}")
    return body
