"""FastAPI routes and error handlers of the guarded OpenAI-compatible server.

Every error leaves as an OpenAI-shaped body: 400 bad request or image, or a request field the server
cannot honour (``param`` names it), 401 bad API key, 413 body too large, 502 backend failure, 504
timeout, 500 anything unexpected. No request can crash the process.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..backends.base import VisionChatBackend
from ..cancel import CancelToken
from ..config import ImageLimits
from ..errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    CheckFailedError,
    ECSOError,
    InputError,
    MissingDependencyError,
)
from ..guard import ECSO, StreamEnd, TextDelta
from ..types import ChatRequest
from .admission import PixelBudget, admit_images
from .protocol import (
    ChatCompletionRequest,
    RequestLimits,
    chunk_body,
    completion_body,
    ecso_headers,
    error_body,
    stream_bodies,
    to_chat_request,
)
from .service import ChatService

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from pydantic import ValidationError
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(exc.name or "fastapi", "server") from exc

__all__ = ["create_app"]


class HTTPProblem(Exception):
    """An error with its HTTP status and OpenAI error type."""

    def __init__(
        self, status: int, message: str, error_type: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code, self.param = status, message, error_type, code, param


def _problem(exc: Exception) -> HTTPProblem:
    """Map an exception to its HTTP status (the one table of the server's error contract)."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, (InputError, CapabilityError)):
        return HTTPProblem(400, str(exc), "invalid_request_error", type(exc).__name__, exc.param)
    if isinstance(exc, BackendTimeoutError):
        return HTTPProblem(504, str(exc), "timeout_error", "BackendTimeoutError")
    if isinstance(exc, (BackendError, CheckFailedError)):
        status = 503 if isinstance(exc, BackendUnavailableError) else 502
        return HTTPProblem(status, str(exc), "upstream_error", type(exc).__name__)
    if isinstance(exc, ECSOError):
        return HTTPProblem(500, str(exc), "server_error", type(exc).__name__)
    return HTTPProblem(500, "internal server error", "server_error")


def create_app(
    backend: VisionChatBackend,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    max_body_bytes: int = 32 * 1024 * 1024,
    max_batch_size: int = 16,
    batch_window_s: float = 0.005,
    request_timeout_s: float = 300.0,
    default_max_tokens: int | None = None,
    keepalive_s: float = 10.0,
    public_metrics: bool = False,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """Build the app serving ``backend`` (usually an :class:`~ecso_core.guard.ECSO` guard).

    Args:
        backend: what answers; a guard adds the ``ecso`` field and the ``X-ECSO-*`` headers (both
            without withheld text; the field carries it only when the config sets ``in_band_audit``).
        model_name: the id served by ``/v1/models`` and echoed in responses.
        api_key: when set, requests need ``Authorization: Bearer <api_key>``.
        max_body_bytes: larger request bodies get 413.
        max_batch_size: most concurrent requests answered as one batch.
        batch_window_s: how long a request waits for others to batch with.
        request_timeout_s: a request still unanswered after this gets 504.
        default_max_tokens: ``max_tokens`` when the client sends none; None leaves it to the model (a
            transformers checkpoint's own default, else 1,024; an OpenAI-compatible server's own default).
        keepalive_s: a streamed request still undecided after this starts its SSE stream with
            keep-alive comments (proxies and clients would otherwise time out on a silent socket);
            a failure after that point arrives as an SSE ``error`` event.
        public_metrics: serve ``/metrics`` without the API key (by default it needs it when one is set).
        limits: per-request bounds (tokens, prompt size, image deadline, pixels in flight).

    """
    name = model_name or backend.name
    audit = isinstance(backend, ECSO) and backend.config.in_band_audit
    limits = limits or RequestLimits()
    image_limits = backend.config.image_limits if isinstance(backend, ECSO) else ImageLimits()
    allow_urls = isinstance(backend, ECSO) and backend.config.allow_image_urls
    budget = PixelBudget(limits.max_inflight_pixels)
    service = ChatService(
        backend, max_batch_size=max_batch_size, batch_window_s=batch_window_s, request_timeout_s=request_timeout_s
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()  # graceful: in-flight batches finish first

    app = FastAPI(title="ecso guarded chat completions", lifespan=lifespan)
    app.state.service = service

    async def _errors(_: Request, exc: Exception) -> JSONResponse:
        problem = _problem(exc)
        body = error_body(problem.message, problem.error_type, problem.code, problem.param)
        return JSONResponse(body, status_code=problem.status)

    app.add_exception_handler(HTTPProblem, _errors)  # expected errors: answered, not logged as crashes
    app.add_exception_handler(Exception, _errors)  # anything else: a 500 body, and the server stays up

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorise(request, api_key)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ecso"}]}

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not public_metrics:
            _authorise(request, api_key)

        return PlainTextResponse(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        token = CancelToken()
        try:
            _authorise(request, api_key)
            body = await _read_body(request, max_body_bytes)
            usage = bool(body.stream_options and body.stream_options.include_usage)
            chat_request = to_chat_request(
                body, default_max_tokens, limits, backend.capabilities.call_options, name
            ).model_copy(update={"cancel": token})
            # Images are read and decoded off the loop, within a deadline and the server's pixel budget,
            # so that a bad image is a 400 before anything streams.
            chat_request, pixels = await admit_images(
                chat_request, image_limits, allow_urls, budget, limits.image_deadline_s
            )
            if body.stream and isinstance(backend, ECSO) and backend.config.stream == "progressive":
                # Progressive streams leave window by window as each is checked: no batching, no waiting.
                service.metrics.requests.labels("200").inc()
                events = _progressive_sse(backend, chat_request, name, audit, usage, budget, pixels, request_timeout_s)
                return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
            answer = asyncio.ensure_future(service.complete(chat_request))
            answer.add_done_callback(lambda _: budget.release(pixels) if pixels else None)
            watch = asyncio.ensure_future(_cancel_on_disconnect(request, token))
            try:
                if body.stream and not (await asyncio.wait({answer}, timeout=keepalive_s))[0]:
                    service.metrics.requests.labels("200").inc()  # committed to a stream from here on
                    late = _late_sse(answer, name, keepalive_s, audit, token, usage)  # it watches the client itself
                    return StreamingResponse(late, media_type="text/event-stream", headers=_SSE_HEADERS)
                reply = await answer
            finally:
                watch.cancel()
        except Exception as exc:
            token.cancel("the request failed")
            problem = _problem(exc)
            service.metrics.requests.labels(str(problem.status)).inc()
            raise problem from exc
        service.metrics.requests.labels("200").inc()
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        headers = ecso_headers(reply)
        if not body.stream:
            return JSONResponse(completion_body(reply, name, completion_id, created, audit), headers=headers)
        chunks = stream_bodies(reply, name, completion_id, created, audit, usage)
        return StreamingResponse(_sse(chunks), media_type="text/event-stream", headers=headers | _SSE_HEADERS)

    return app


# Proxies (nginx) buffer responses unless told not to; an SSE stream must reach the client as written.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _authorise(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    # Constant-time comparison: response timing must not reveal how much of the key matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
        raise HTTPProblem(401, "invalid or missing API key", "authentication_error", "invalid_api_key")


async def _read_body(request: Request, limit: int) -> ChatCompletionRequest:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"request body over {limit} bytes", "invalid_request_error", "body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HTTPProblem(413, f"request body over {limit} bytes", "invalid_request_error", "body_too_large")
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPProblem(
            400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json"
        ) from exc
    except RecursionError as exc:  # e.g. 100k nested arrays: bad input, not a server fault
        raise HTTPProblem(400, "request body is nested too deeply", "invalid_request_error", "invalid_json") from exc
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise HTTPProblem(400, f"invalid request: {detail}", "invalid_request_error", "invalid_request") from exc


async def _cancel_on_disconnect(request: Request, token: CancelToken) -> None:
    """Cancel the request's work when its client goes away before the answer (the model stops for it).

    The body is read, so the next ASGI message is the disconnect: awaited, not polled (polling every
    request's connection costs a busy server a fifth of its throughput).
    """
    while (await request.receive())["type"] != "http.disconnect":
        pass
    token.cancel("the client disconnected")


async def _late_sse(
    answer: asyncio.Future[Any], name: str, keepalive_s: float, audit: bool, token: CancelToken, usage: bool
) -> AsyncIterator[bytes]:
    """An SSE stream opened before the verdict: keep-alive comments, then the answer (or an error event)."""
    try:
        while not answer.done():
            yield b": ecso is checking the answer\n\n"
            await asyncio.wait({answer}, timeout=keepalive_s)
    finally:
        if not answer.done():  # the stream was closed under us: the client is gone
            token.cancel("the client disconnected")
    try:
        reply = answer.result()
    except Exception as exc:  # the status line is sent: report in-band, as OpenAI does
        problem = _problem(exc)
        error = error_body(problem.message, problem.error_type, problem.code, problem.param)
        yield f"data: {json.dumps(error)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
    chunks = stream_bodies(reply, name, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), audit, usage)
    async for line in _sse(chunks):
        yield line


async def _progressive_sse(
    guard: ECSO,
    request: ChatRequest,
    name: str,
    audit: bool,
    usage: bool,
    budget: PixelBudget,
    pixels: int,
    timeout_s: float,
) -> AsyncIterator[bytes]:
    """The SSE stream of ``config.stream="progressive"``: deltas as the guard releases them.

    Each delta is checked-safe text or the eyes-closed answer; then the finish chunk with ``ecso``.
    Closing the stream (a client gone) or passing ``timeout_s`` stops the request's work; a timeout
    arrives as an in-band error event.
    """
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    events = guard.astream(request)
    deadline = time.monotonic() + timeout_s
    step: asyncio.Future[Any] | None = None
    try:
        yield _data(chunk_body(completion_id, name, created, {"role": "assistant", "content": ""}))
        try:
            while True:
                step = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({step}, timeout=max(deadline - time.monotonic(), 0.0))
                if not done:  # answer the client now; the step is stopped and awaited in the background
                    raise BackendTimeoutError(f"no complete answer within {timeout_s:g} s")
                try:
                    event = step.result()
                except StopAsyncIteration:
                    break
                step = None
                if isinstance(event, TextDelta):
                    yield _data(chunk_body(completion_id, name, created, {"content": event.text}))
                elif isinstance(event, StreamEnd):
                    reply = event.result.to_reply().model_copy(update={"text": ""})
                    for chunk in stream_bodies(reply, name, completion_id, created, audit, usage)[1:]:
                        yield _data(chunk)
        except Exception as exc:  # the status line is sent: report in-band, as OpenAI does
            problem = _problem(exc)
            yield _data(error_body(problem.message, problem.error_type, problem.code, problem.param))
        yield b"data: [DONE]\n\n"
    finally:
        # A timeout or a client gone mid-stream: stop the guard's work (its token is cancelled when the
        # pending step is) without keeping the client waiting for the step to unwind.
        closing = asyncio.ensure_future(_close_stream(events, step, budget, pixels))
        _BACKGROUND.add(closing)
        closing.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Future[Any]] = set()  # closings in flight (kept referenced until they end)


async def _close_stream(
    events: AsyncGenerator[Any, None], step: asyncio.Future[Any] | None, budget: PixelBudget, pixels: int
) -> None:
    """Cancel a pending step of a guard stream, let it unwind, close the stream, free its pixels."""
    try:
        if step is not None and not step.done():
            step.cancel()
            await asyncio.gather(step, return_exceptions=True)
        await events.aclose()
    finally:
        if pixels:
            budget.release(pixels)


def _data(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()


async def _sse(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"
