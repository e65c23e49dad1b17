"""The service layer: concurrent requests are gathered into batches and answered by one backend.

The backend is usually an :class:`~ecso_core.guard.ECSO` guard (then every step of a batch is one
batched model call), or the bare model (``ecso serve --no-guard``, for A/B measurements).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from ..backends.base import VisionChatBackend
from ..errors import BackendTimeoutError
from ..guard import ECSO
from ..types import ChatReply, ChatRequest
from .metrics import Metrics

__all__ = ["ChatService"]


@dataclass
class _Pending:
    request: ChatRequest
    future: asyncio.Future[ChatReply]


@dataclass
class ChatService:
    """Answers requests through ``backend``, batching those that arrive together.

    Args:
        backend: the guard (or bare model) to serve.
        max_batch_size: most requests per batch.
        batch_window_s: how long the first request of a batch waits for company.
        max_concurrent_batches: batches in flight at once (HTTP backends overlap them).
        request_timeout_s: a request still unanswered after this gets a timeout error.

    """

    backend: VisionChatBackend
    max_batch_size: int = 16
    batch_window_s: float = 0.005
    max_concurrent_batches: int = 4
    request_timeout_s: float = 300.0
    metrics: Metrics = field(default_factory=Metrics.create)
    _queue: asyncio.Queue[_Pending] | None = None
    _worker: asyncio.Task[None] | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        """Start the batching worker (on the running loop)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """Let in-flight batches finish, then stop the worker."""
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.request_timeout_s)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def complete(self, request: ChatRequest) -> ChatReply:
        """Answer one request (joins a batch).

        Raises:
            BackendTimeoutError: not answered within ``request_timeout_s``.
            ECSOError: whatever the guard or backend raised for this request.

        """
        assert self._queue is not None, "ChatService.start() was not called"
        start = time.perf_counter()
        future: asyncio.Future[ChatReply] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(request, future))
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), self.request_timeout_s)
        except asyncio.TimeoutError:
            if request.cancel is not None:  # stop its work: later requests must not wait behind it
                request.cancel.cancel(f"no answer within {self.request_timeout_s:g} s")
            future.cancel()  # abandoned: its batch will not set an outcome nobody reads
            raise BackendTimeoutError(f"no answer within {self.request_timeout_s:.0f} s") from None
        except asyncio.CancelledError:
            if request.cancel is not None:
                request.cancel.cancel("the caller stopped waiting")
            future.cancel()
            raise
        self.metrics.observe(reply, time.perf_counter() - start)
        return reply

    async def _work(self) -> None:
        assert self._queue is not None
        gate = asyncio.Semaphore(self.max_concurrent_batches)

        def finished(task: asyncio.Task[None]) -> None:
            self._inflight.discard(task)
            gate.release()

        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.batch_window_s
            while len(batch) < self.max_batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)))
                except asyncio.TimeoutError:
                    break
            await gate.acquire()
            task = asyncio.create_task(self._answer(batch))
            self._inflight.add(task)
            task.add_done_callback(finished)
            del batch  # the next wait must not keep this batch (its images, its answers) alive

    async def _answer(self, batch: list[_Pending]) -> None:
        outcomes = await self._outcomes([p.request for p in batch])
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():  # timed out and abandoned by the caller
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _outcomes(self, requests: list[ChatRequest]) -> list[ChatReply | BaseException]:
        try:
            if isinstance(self.backend, ECSO):
                results = await self.backend.arun_batch(requests, return_exceptions=True)
                return [r if isinstance(r, BaseException) else r.to_reply() for r in results]
            return list(await self.backend.agenerate(requests))
        except Exception as exc:  # a failed batch must not take down the worker
            if len(requests) == 1:
                return [exc]
        # One bad request sank a bare-backend batch: answer one by one to isolate it.
        return [item for request in requests for item in await self._outcomes([request])]
