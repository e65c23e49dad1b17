"""Cancellation of one request's work, from any thread: a deadline passed, the client went away.

A :class:`CancelToken` rides on :attr:`ChatRequest.cancel`; the guard hands it to every step's request,
stops a cancelled request's flow before its next step, and backends stop the work already running
(the transformers backend ends the row's generation at the next token, the OpenAI-compatible backend
drops the HTTP request). Other requests of the same batch go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["CancelToken", "task_cancelling"]


def task_cancelling() -> bool:
    """Whether the running asyncio task has been asked to cancel (as opposed to a callee's own cancellation).

    Where Python cannot tell (before 3.11), assume it has: stopping work is the safe side.
    """
    task = asyncio.current_task()
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)
    return cancelling() > 0 if cancelling is not None else True


class CancelToken:
    """Set once; whoever holds it can ask whether the request was cancelled, or be called when it is."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []
        self.reason: str | None = None
        """Why it was cancelled (None while it is not)."""

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel the request (idempotent; the first reason is kept) and run the registered callbacks."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` when cancelled (at once if already); returns a function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled}, reason={self.reason!r})"
