"""Admission of a request's images: within a deadline and a budget, never blocking the event loop for long.

A request's images are measured from their headers first; its decoded pixels must fit in a
server-wide budget (:class:`PixelBudget`) before any is decoded, and stay counted until the request is
answered, since the guard keeps them for its later steps. Work that can take long runs in worker
threads, so ``/health`` and other requests are served meanwhile: URL fetches, and decoding more than a
few megapixels. Small requests are read and decoded in place (milliseconds), which keeps concurrent
requests arriving at the batcher together.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..config import ImageLimits
from ..errors import BackendUnavailableError, ImageError
from ..images import decode_request, open_request
from ..types import ChatRequest

__all__ = ["PixelBudget", "admit_images", "return_freed_memory"]


class PixelBudget:
    """Decoded image pixels of the requests in flight, at most ``capacity``; acquire waits for room (FIFO-ish)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._room: asyncio.Condition | None = None  # bound to the serving loop on first use

    async def acquire(self, pixels: int, timeout: float) -> None:
        """Wait until ``pixels`` fit (a request larger than the whole budget waits for an empty server).

        Raises:
            BackendUnavailableError: no room within ``timeout`` seconds (the server is busy: 503).

        """
        room = self._condition()
        async with room:
            try:
                await asyncio.wait_for(
                    room.wait_for(lambda: self.used == 0 or self.used + pixels <= self.capacity), timeout
                )
            except asyncio.TimeoutError:
                raise BackendUnavailableError(
                    f"too many images in flight on this server (budget {self.capacity} pixels); retry later"
                ) from None
            self.used += pixels

    def release(self, pixels: int) -> None:
        """Give ``pixels`` back (call on the serving loop) and wake the waiters.

        After a large release the process's freed memory is handed back to the system (see
        :func:`return_freed_memory`), a moment later, once the request's objects are gone.
        """
        self.used -= pixels
        room = self._condition()

        async def notify() -> None:
            async with room:
                room.notify_all()

        loop = asyncio.get_running_loop()
        loop.create_task(notify())
        if pixels >= _TRIM_AFTER_PIXELS:
            loop.call_later(0.5, lambda: loop.create_task(asyncio.to_thread(return_freed_memory)))

    def _condition(self) -> asyncio.Condition:
        if self._room is None:
            self._room = asyncio.Condition()
        return self._room


_TRIM_AFTER_PIXELS = 50_000_000
# Decoding up to this many pixels takes a few milliseconds: done on the loop, so that concurrent requests
# still reach the batcher together; larger requests go to worker threads.
_INLINE_PIXELS = 4_000_000
# Images get threads of their own: in the loop's default executor they would queue with the model's calls.
_IMAGE_THREADS = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) // 2), thread_name_prefix="ecso-images")


def return_freed_memory() -> None:
    """Ask the C allocator to return freed memory to the system (glibc only; elsewhere nothing to do).

    Decoding big images in worker threads leaves gigabytes freed but kept in glibc's per-thread arenas:
    resident memory would stay at its peak after the request is answered.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


async def _off_loop(timeout: float, function: Any, *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_IMAGE_THREADS, function, *args), timeout)


async def admit_images(
    request: ChatRequest, limits: ImageLimits, allow_urls: bool, budget: PixelBudget, deadline_s: float
) -> tuple[ChatRequest, int]:
    """``request`` with its images prepared, and the pixels it holds in ``budget`` (release them when done).

    Raises:
        ImageError: a bad image, a limit exceeded, or images that took longer than ``deadline_s``.
        BackendUnavailableError: the server's pixel budget stayed full for ``deadline_s``.

    """
    if not request.images:
        return request, 0
    start = time.monotonic()

    def left() -> float:
        return max(deadline_s - (time.monotonic() - start), 0.0)

    try:
        # Without URL fetching, reading is bounded by the body size (base64 and headers): done here.
        opened = (
            await _off_loop(left(), open_request, request, limits, allow_urls)
            if allow_urls
            else open_request(request, limits, allow_urls)
        )
        await budget.acquire(opened.pixels, left())
        try:
            if opened.pixels <= _INLINE_PIXELS:  # a few milliseconds: keeps concurrent requests batching
                return decode_request(opened, limits), opened.pixels
            return await _off_loop(left(), decode_request, opened, limits), opened.pixels
        except BaseException:
            budget.release(opened.pixels)
            raise
    except asyncio.TimeoutError:
        raise ImageError(f"the request's images took longer than {deadline_s:g} s to read and decode") from None
