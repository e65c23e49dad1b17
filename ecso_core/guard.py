"""``ECSO``: the guard. Drives :func:`~ecso_core.flow.ecso_flow` for sync, async, stream and batch.

All modes share one lock-step scheduler (:meth:`ECSO._lockstep`): it advances many flows together,
so each round's calls reach the backend as one batched call per (backend, call kind). A single
request is a batch of one. The guard is itself a :class:`~ecso_core.backends.base.VisionChatBackend`,
so servers, adapters and other guards can wrap it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict

from .backends.base import BackendBase, BackendCapabilities, VisionChatBackend, check_capabilities
from .cancel import CancelToken, task_cancelling
from .config import ECSOConfig
from .errors import BackendError, ECSOError, MessageError, RequestCancelledError
from .flow import Flow, ModelCall, Outcome, check_flow, ecso_flow, judge_view
from .images import prepare_request
from .judging import get_judge_profile
from .progressive import Released, drive, progressive_stream
from .prompts import get_prompt_set
from .result import ECSOResult, StepName, Verdict
from .steps import running_step
from .types import ChatReply, ChatRequest, ImagePart, Message, TextPart

__all__ = ["ECSO", "ECSOStreamEvent", "StepEvent", "StreamEnd", "TextDelta", "chunk_text"]

_log = logging.getLogger("ecso")
Results = list[Union[ECSOResult, BaseException]]


class StepEvent(BaseModel):
    """Progress: the guard is about to run ``step``."""

    model_config = ConfigDict(frozen=True)
    type: Literal["step"] = "step"
    step: StepName


class TextDelta(BaseModel):
    """A chunk of the final answer (emitted only after the verdict)."""

    model_config = ConfigDict(frozen=True)
    type: Literal["delta"] = "delta"
    text: str


class StreamEnd(BaseModel):
    """The last event of a stream, carrying the whole result."""

    model_config = ConfigDict(frozen=True)
    type: Literal["end"] = "end"
    result: ECSOResult


ECSOStreamEvent = Union[StepEvent, TextDelta, StreamEnd]

_CHUNK = re.compile(r"\s+|\S+\s*")


def chunk_text(text: str) -> list[str]:
    """Split ``text`` into word-sized chunks whose concatenation is ``text``."""
    return _CHUNK.findall(text)


class ECSO(BackendBase):
    """Eyes Closed, Safety On: a training-free guard around a vision-language chat backend.

    Args:
        backend: the model to guard.
        config: behaviour (prompts, thresholds, fail mode, limits); defaults to the paper's.
        judge: optional separate backend for the self-check; default: ``backend`` itself.
        audit: called with every finished :class:`ECSOResult` (withheld text included), for
            operator-side audit trails, e.g. :class:`~ecso_core.audit.JsonlAuditLog`; its failures are
            logged and never affect the answer.

    """

    def __init__(
        self,
        backend: VisionChatBackend,
        config: ECSOConfig | None = None,
        judge: VisionChatBackend | None = None,
        audit: Callable[[ECSOResult], None] | None = None,
    ) -> None:
        self.backend = backend
        self.judge = judge or backend
        self.config = config or ECSOConfig()
        get_prompt_set(self.config.prompt_set, self.config.prompt_overrides)  # an unknown set: ConfigError now
        self.judge_profile = get_judge_profile(self.config.judge_profile)  # likewise an unknown profile
        self.audit = audit
        self.name = f"ecso({backend.name})"
        limits = [self.config.image_limits.max_images, backend.capabilities.max_images]
        self.capabilities = BackendCapabilities(
            max_images=min(x for x in limits if x is not None),
            tools=backend.capabilities.tools,
            call_options=backend.capabilities.call_options,
        )

    # ---- public API -------------------------------------------------------------------------

    def run(self, request: ChatRequest) -> ECSOResult:
        """Guard one request."""
        return _single(self.run_batch([request], return_exceptions=True))

    async def arun(self, request: ChatRequest) -> ECSOResult:
        """Guard one request without blocking the event loop."""
        return _single(await self.arun_batch([request], return_exceptions=True))

    def ask(self, query: str, images: Iterable[Any] = ()) -> ECSOResult:
        """Guard a single user turn: ``images`` (any accepted image source) then ``query``."""
        return self.run(_ask_request(query, images))

    def judge_answers(self, items: Sequence[tuple[ChatRequest, str]]) -> list[Verdict]:
        """The check alone: the verdict of the judge (with its profile) on each ``(request, answer)`` pair.

        Nothing is answered or captioned: for evaluating answers written elsewhere with this guard's
        judge (e.g. Llama Guard 4 as the judge of a benchmark run). A pair whose check fails gets a
        verdict without ``unsafe`` (``method="failed"``) rather than an exception; invalid input raises.

        Raises:
            MessageError: a request without a user message.
            ImageError: an image that cannot be read or is out of bounds.

        """
        for _, answer in items:
            if not isinstance(answer, str):
                raise MessageError(f"an answer to judge must be a string, not {type(answer).__name__}")
        can_score = self.judge.capabilities.score_yes_no

        def flow_for(request: ChatRequest, index: int) -> Flow:
            return check_flow(request, items[index][1], self.config, can_score=can_score)  # type: ignore[return-value]

        results = _raise_first(_drain(self._events([r for r, _ in items], flow_for)), False)
        return results  # type: ignore[return-value]

    def run_batch(self, requests: Sequence[ChatRequest], *, return_exceptions: bool = False) -> Results:
        """Guard many requests; each step runs as one batched backend call across the requests.

        Args:
            requests: the requests, answered in order.
            return_exceptions: put a failed request's exception in its slot instead of raising
                the first one (the other requests complete either way).

        """
        return _raise_first(_drain(self._events(requests)), return_exceptions)

    async def arun_batch(self, requests: Sequence[ChatRequest], *, return_exceptions: bool = False) -> Results:
        """Async :meth:`run_batch`."""
        sink: Results = []
        async for _ in self._aevents(requests, sink):
            pass
        return _raise_first(sink, return_exceptions)

    def stream(self, request: ChatRequest) -> Generator[ECSOStreamEvent, None, None]:
        """Step events, released text, then :class:`StreamEnd` with the result.

        ``config.stream="whole"``: the answer is released after the whole of it was checked; an
        eyes-closed answer streams as the model writes it. ``"progressive"``: see
        :mod:`ecso_core.progressive` (text leaves window by window, each checked safe first).
        """
        yield from self._stream_prepared(self._prepare(request))

    async def astream(self, request: ChatRequest) -> AsyncGenerator[ECSOStreamEvent, None]:
        """Async :meth:`stream`: the steps run in a worker thread, one event at a time.

        Cancelled (or closed early), it cancels the request's token first, so that the model stops at its
        next token, then lets the worker finish its step before closing the stream.
        """
        prepared = await asyncio.to_thread(self._prepare, request)
        token = prepared.cancel
        assert token is not None
        events = self._stream_prepared(prepared)
        # One context for every step: generators inside (LangChain's stream) set context variables in
        # one step and reset them in a later one, which needs the same context each time.
        context = contextvars.copy_context()
        idle = threading.Event()  # no step of ``events`` is running in a worker thread
        idle.set()

        def step() -> ECSOStreamEvent | None:
            idle.clear()
            try:
                return context.run(_next_or_none, events)
            finally:
                idle.set()

        try:
            while True:
                # Shielded: a cancelled caller must not leave the worker's step running unawaited.
                event = await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(step)))
                if event is None:
                    return
                yield event
        finally:
            if not idle.is_set():  # cancelled mid-step: stop the model, then close once the step ends
                token.cancel("the stream was cancelled")
                try:
                    await asyncio.to_thread(idle.wait)
                except asyncio.CancelledError:  # cancelled again (a loop shutting down): close from a thread
                    threading.Thread(target=_close_when_idle, args=(events, idle), daemon=True).start()
                    raise
            events.close()

    def _stream_prepared(self, prepared: ChatRequest) -> Generator[ECSOStreamEvent, None, None]:
        token = prepared.cancel
        assert token is not None
        finished = False
        try:
            result = yield from self._released(self._driver(prepared))
            finished = True
        finally:
            if not finished:  # the consumer left, or an error: the request's remaining work stops
                token.cancel("the stream was closed")
        self._record(result)
        yield StreamEnd(result=result)

    def _driver(self, prepared: ChatRequest) -> Generator[Any, None, ECSOResult]:
        """The single-request drive of :meth:`stream`: progressive where it applies, else the whole flow."""
        token = prepared.cancel
        assert token is not None

        def execute(calls: list[ModelCall]) -> list[Outcome]:
            if token.cancelled:
                raise RequestCancelledError(f"request cancelled: {token.reason}")
            return self._execute(calls)

        can_score = self.judge.capabilities.score_yes_no
        # Without the gate nothing is checked, so nothing can stream before the eyes-closed answer.
        progressive = self.config.stream == "progressive" and not prepared.tools and self.config.gate
        if progressive and (prepared.images or self.config.check_text_only):
            return (yield from progressive_stream(prepared, self.backend, execute, self.config, can_score))
        flow = ecso_flow(prepared, self.config, can_score=can_score)
        result: ECSOResult = yield from drive(flow, execute, streamed=self.backend)
        if not any(step.name == "eyes_closed" for step in result.steps):  # released whole: in word chunks
            for chunk in chunk_text(result.answer):
                yield Released(chunk)
        return result

    @staticmethod
    def _released(driver: Generator[Any, None, ECSOResult]) -> Generator[ECSOStreamEvent, None, ECSOResult]:
        """Stream events for a driver's items: a call about to run is a step event, released text a delta."""
        try:
            item = next(driver)
            while True:
                if isinstance(item, ModelCall):
                    yield StepEvent(step=item.step)
                else:
                    yield TextDelta(text=str(item))
                item = next(driver)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            driver.close()

    # ---- the guard as a backend -------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Guarded replies; ``ChatReply.raw`` holds each :class:`ECSOResult`."""
        return [r.to_reply() for r in self.run_batch(requests)]  # type: ignore[union-attr]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Async :meth:`generate`."""
        return [r.to_reply() for r in await self.arun_batch(requests)]  # type: ignore[union-attr]

    # ---- scheduling ---------------------------------------------------------------------------

    def _events(
        self, requests: Sequence[ChatRequest], flow_for: Callable[[ChatRequest, int], Flow] | None = None
    ) -> Generator[StepEvent, None, Results]:
        lockstep = self._lockstep(requests, flow_for)
        try:
            calls = next(lockstep)
            while True:
                yield from _step_events(calls)
                calls = lockstep.send(self._execute(calls))
        except StopIteration as stop:
            results: Results = stop.value
            return results
        finally:
            lockstep.close()  # stopped early (consumer gone, error): cancels the requests' remaining work

    async def _aevents(self, requests: Sequence[ChatRequest], sink: Results) -> AsyncIterator[StepEvent]:
        lockstep = self._lockstep(requests)
        try:
            calls = next(lockstep)
            while True:
                for event in _step_events(calls):
                    yield event
                calls = lockstep.send(await self._aexecute(calls))
        except StopIteration as stop:
            sink.extend(stop.value)
        finally:
            lockstep.close()  # cancelled or stopped early: work running in threads stops too

    def _lockstep(
        self, requests: Sequence[ChatRequest], flow_for: Callable[[ChatRequest, int], Flow] | None = None
    ) -> Generator[list[ModelCall], list[Outcome], Results]:
        """Advance one flow per request in rounds; yield each round's calls, all flows together.

        ``flow_for(prepared, index)`` makes each request's flow (default: the whole ECSO flow).

        A request whose token is cancelled leaves at the next round with :class:`RequestCancelledError`;
        if the driver stops before the end, every request's token is cancelled.
        """
        results: Results = [None] * len(requests)  # type: ignore[list-item]
        flows = {}
        tokens: dict[int, CancelToken] = {}
        pending: dict[int, list[ModelCall]] = {}
        for index, request in enumerate(requests):
            try:
                prepared = self._prepare(request)
                tokens[index] = prepared.cancel  # type: ignore[assignment]
                if flow_for is None:
                    flow = ecso_flow(prepared, self.config, can_score=self.judge.capabilities.score_yes_no)
                else:
                    flow = flow_for(prepared, index)
                pending[index] = next(flow)
                flows[index] = flow
            except StopIteration as stop:  # pragma: no cover - every flow makes a call
                results[index] = stop.value
            except Exception as exc:
                results[index] = exc
        finished = False
        try:
            while pending := self._drop_cancelled(pending, flows, tokens, results):
                order = [(index, call) for index, calls in pending.items() for call in calls]
                outcomes = yield [call for _, call in order]
                per_flow: dict[int, list[Outcome]] = {}
                for (index, _), outcome in zip(order, outcomes, strict=True):
                    per_flow.setdefault(index, []).append(outcome)
                pending = {}
                for index, flow_outcomes in self._drop_cancelled(per_flow, flows, tokens, results).items():
                    try:
                        pending[index] = flows[index].send(flow_outcomes)
                    except StopIteration as stop:
                        results[index] = stop.value
                        if isinstance(stop.value, ECSOResult):
                            self._record(stop.value)
                    except Exception as exc:
                        results[index] = exc
            finished = True
            return results
        finally:
            if not finished:
                for token in tokens.values():
                    token.cancel("the caller stopped waiting")

    @staticmethod
    def _drop_cancelled(
        pending: dict[int, Any], flows: dict[int, Flow], tokens: dict[int, CancelToken], results: Results
    ) -> dict[int, Any]:
        """``pending`` without the requests cancelled meanwhile; their flows end with RequestCancelledError."""
        kept = {}
        for index, value in pending.items():
            token = tokens[index]
            if token.cancelled:
                flows[index].close()
                results[index] = RequestCancelledError(f"request cancelled: {token.reason}")
            else:
                kept[index] = value
        return kept

    def _record(self, result: ECSOResult) -> None:
        if self.audit is None:
            return
        try:
            self.audit(result)
        except Exception:  # an audit sink must never change what the user gets
            _log.exception("ecso audit sink failed")

    def _prepare(self, request: ChatRequest) -> ChatRequest:
        """Validate up front: capabilities, then images (loaded, normalised, within limits); give it a token."""
        check_capabilities(self.backend.capabilities, request, self.backend.name)
        check_capabilities(self.judge.capabilities, judge_view(request, self.judge_profile), self.judge.name)
        prepared = prepare_request(request, self.config.image_limits, self.config.allow_image_urls)
        return prepared if prepared.cancel is not None else prepared.model_copy(update={"cancel": CancelToken()})

    def _execute(self, calls: list[ModelCall]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(calls)
        for backend, score, indices in self._groups(calls):
            batch = [calls[i].request for i in indices]
            start = time.perf_counter()
            try:
                with running_step(calls[indices[0]].step):
                    values: list[Any] = backend.score_yes_no(batch) if score else backend.generate(batch)
                error = None
            except (Exception, asyncio.CancelledError) as exc:
                values, error = [], _as_backend_error(exc, backend)
            _fill(outcomes, indices, values, error, time.perf_counter() - start)
        return outcomes  # type: ignore[return-value]

    async def _aexecute(self, calls: list[ModelCall]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(calls)
        for backend, score, indices in self._groups(calls):
            batch = [calls[i].request for i in indices]
            start = time.perf_counter()
            try:
                with running_step(calls[indices[0]].step):
                    values: list[Any] = await (backend.ascore_yes_no(batch) if score else backend.agenerate(batch))
                error = None
            except asyncio.CancelledError as exc:
                if task_cancelling():  # this task is being cancelled: stop the work, do not type it away
                    raise
                values, error = [], _as_backend_error(exc, backend)
            except Exception as exc:
                values, error = [], _as_backend_error(exc, backend)
            _fill(outcomes, indices, values, error, time.perf_counter() - start)
        return outcomes  # type: ignore[return-value]

    def _groups(self, calls: list[ModelCall]) -> list[tuple[VisionChatBackend, bool, list[int]]]:
        """Indices of ``calls`` per (target, scored?, step): each group becomes one batched call."""
        keyed: dict[tuple[str, bool, str], list[int]] = {}
        for index, call in enumerate(calls):
            keyed.setdefault((call.target, call.score, call.step), []).append(index)
        return [
            (self.judge if target == "judge" else self.backend, score, indices)
            for (target, score, _), indices in keyed.items()
        ]


def _fill(
    outcomes: list[Outcome | None], indices: list[int], values: list[Any], error: BaseException | None, latency: float
) -> None:
    if error is None and len(values) != len(indices):
        error = BackendError(f"the backend returned {len(values)} replies for {len(indices)} requests")
    for position, index in enumerate(indices):
        if error is not None:
            outcomes[index] = Outcome(error=error, latency_s=latency)
        else:
            outcomes[index] = Outcome(value=values[position], latency_s=latency)


def _as_backend_error(exc: BaseException, backend: VisionChatBackend) -> ECSOError:
    if isinstance(exc, ECSOError):
        return exc
    what = "was cancelled" if isinstance(exc, asyncio.CancelledError) else f"failed: {type(exc).__name__}: {exc}"
    error = BackendError(f"{backend.name} {what}")
    error.__cause__ = exc
    return error


def _step_events(calls: list[ModelCall]) -> Iterator[StepEvent]:
    for step in dict.fromkeys(call.step for call in calls):
        yield StepEvent(step=step)


def _close_when_idle(events: Generator[ECSOStreamEvent, None, None], idle: threading.Event) -> None:
    idle.wait()
    events.close()


def _next_or_none(events: Iterator[ECSOStreamEvent]) -> ECSOStreamEvent | None:
    return next(events, None)


def _drain(events: Generator[StepEvent, None, Results]) -> Results:
    """Run an event generator to its end and return its value."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            results: Results = stop.value
            return results


def _single(results: Results) -> ECSOResult:
    (result,) = results
    if isinstance(result, BaseException):
        raise result
    return result


def _raise_first(results: Results, return_exceptions: bool) -> Results:
    if not return_exceptions:
        for result in results:
            if isinstance(result, BaseException):
                raise result
    return results


def _ask_request(query: str, images: Iterable[Any]) -> ChatRequest:
    parts = [ImagePart(image=image) for image in images]
    return ChatRequest(messages=(Message(role="user", content=(*parts, TextPart(text=query))),))
