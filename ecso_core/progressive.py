"""Progressive streaming: the answer streams from the model, and text leaves only once checked safe.

The step-1 answer is generated as a stream. Every ``stream_window_chars`` characters (and at the end) the
answer so far is judged with the paper's check prompt — the windows of the whole-answer check that hold
text not yet released — and that text is released only when every judged window is safe. Text after the
last check is held back, so nothing unchecked ever leaves. A flagged (or failed) check stops the
generation at once; the guard then captions the images and streams the eyes-closed answer, after
``stream_separator``. A request that has tools, or nothing to check, streams as in ``"whole"`` mode.

The algorithm's steps are the flow's own (:func:`~ecso_core.flow.begin`,
:func:`~ecso_core.flow.check_answer`, :func:`~ecso_core.flow.after_answer`); this module only drives
them around a streamed answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from .backends.base import VisionChatBackend, whole_answer_stream
from .errors import CheckFailedError
from .flow import FlowContext, ModelCall, Outcome, after_answer, begin, check_answer
from .result import ECSOResult, StepTrace, Verdict
from .steps import running_step
from .types import ChatReply, ChatRequest, TokenUsage

__all__ = ["Released", "drive", "progressive_stream", "stream_reply"]

Execute = Callable[[list[ModelCall]], list[Outcome]]


class Released(str):
    """Text the driver may send to the client (checked safe, or the eyes-closed answer)."""


def stream_reply(backend: VisionChatBackend, request: ChatRequest) -> Generator[str | ChatReply, None, None]:
    """``backend.stream_generate(request)`` when it streams, else its whole answer as one delta.

    Lazy: the backend is called at the first ``next()``; closing it closes the backend's stream.
    """
    stream = getattr(backend, "stream_generate", None)
    pieces: Iterator[str | ChatReply] = stream(request) if stream is not None else whole_answer_stream(backend, request)
    try:
        yield from pieces
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def progressive_stream(
    request: ChatRequest, backend: VisionChatBackend, execute: Execute, config: Any, can_score: bool
) -> Generator[Released | ModelCall, None, ECSOResult]:
    """Drive one prepared request; yield released text (and the calls about to run); return the result.

    Args:
        request: the request, validated and with images prepared (``ECSO._prepare``).
        backend: the guarded model (it streams the answers).
        execute: runs a round of model calls (the guard's batched executor).
        config: the guard's :class:`~ecso_core.config.ECSOConfig`.
        can_score: the judge can score yes/no tokens.

    """
    context = begin(request, config, can_score=can_score)
    answer_request = context.answer_request
    start = time.perf_counter()
    text, released, verdict = "", 0, None
    final: ChatReply | None = None
    yield ModelCall("answer", answer_request)
    with running_step("answer"):
        pieces = stream_reply(backend, answer_request)
    try:
        while True:
            with running_step("answer"):
                piece = next(pieces, None)
            if piece is None or isinstance(piece, ChatReply):
                final = piece
                break
            text += piece
            if len(text) - released >= config.stream_window_chars:
                verdict = yield from _judge(context, text, released, execute)
                if verdict.unsafe is not False:
                    break  # flagged or failed: stop the answer now (closing the stream stops generation)
                yield Released(text[released:])
                released = len(text)
    finally:
        pieces.close()
    answer = _answer_reply(text, final, verdict)
    context.steps.insert(0, _answer_trace(answer_request, answer, time.perf_counter() - start))
    if verdict is None or verdict.unsafe is False:  # ended: judge whatever is still held back, spaces too
        if len(text) > released or released == 0:
            verdict = yield from _judge(context, text, released, execute)
    if verdict is not None and verdict.unsafe is False:
        if len(text) > released:
            yield Released(text[released:])
        result: ECSOResult = yield from drive(after_answer(context, answer, verdict), execute)
        return result.model_copy(update={"answer": text})
    if verdict is not None and verdict.unsafe is None and config.fail_mode == "raise":
        raise CheckFailedError(f"the safety check gave no verdict ({verdict.method})")
    # Flagged: the rest is replaced by the eyes-closed answer, streamed after the separator.
    prefix = text[:released]
    if prefix:
        yield Released(config.stream_separator)
    result = yield from drive(after_answer(context, answer, verdict), execute, streamed=backend)
    assert isinstance(result, ECSOResult)
    if not any(step.name == "eyes_closed" for step in result.steps):  # the guard's own refusal
        yield Released(result.answer)
    separator = config.stream_separator if prefix else ""
    return result.model_copy(update={"answer": prefix + separator + result.answer})


def _judge(
    context: FlowContext, text: str, released: int, execute: Execute
) -> Generator[Released | ModelCall, None, Verdict]:
    """Check the windows of ``text`` holding unreleased text; a window's index counts from the start."""
    verdict = yield from drive(check_answer(context, text, released), execute)
    assert isinstance(verdict, Verdict)
    return verdict


def drive(flow: Generator[list[ModelCall], list[Outcome], Any], execute: Execute, streamed: Any = None) -> Any:
    """Run a flow part to its end with ``execute``; stream a lone eyes-closed call when ``streamed``."""
    try:
        calls = next(flow)
        while True:
            yield from calls
            if streamed is not None and len(calls) == 1 and calls[0].step == "eyes_closed":
                outcome = yield from _stream_call(streamed, calls[0])
                calls = flow.send([outcome])
            else:
                calls = flow.send(execute(calls))
    except StopIteration as stop:
        return stop.value


def _stream_call(backend: VisionChatBackend, call: ModelCall) -> Generator[Released, None, Outcome]:
    """Stream the eyes-closed answer to the client as it is written (it is what the guard releases)."""
    start = time.perf_counter()
    text = ""
    reply: ChatReply | None = None
    with running_step("eyes_closed"):
        pieces = stream_reply(backend, call.request)
    try:
        while True:
            with running_step("eyes_closed"):
                try:
                    piece = next(pieces, None)
                except Exception as exc:
                    return Outcome(error=exc, latency_s=time.perf_counter() - start)
            if piece is None or isinstance(piece, ChatReply):
                reply = piece
                break
            text += piece
            yield Released(piece)
    finally:
        pieces.close()
    reply = reply or ChatReply(text=text, finish_reason="stop")
    return Outcome(value=reply.model_copy(update={"text": text}), latency_s=time.perf_counter() - start)


def _answer_reply(text: str, final: ChatReply | None, verdict: Verdict | None) -> ChatReply:
    stopped = verdict is not None and verdict.unsafe is not False
    usage = final.usage if final is not None else TokenUsage()
    reason = "stopped" if stopped else (final.finish_reason if final is not None else "stop")
    return ChatReply(text=text, usage=usage, finish_reason=reason)


def _answer_trace(request: ChatRequest, answer: ChatReply, latency: float) -> StepTrace:
    return StepTrace(
        name="answer", messages=request.messages, output=answer.text, latency_s=latency, usage=answer.usage
    )
