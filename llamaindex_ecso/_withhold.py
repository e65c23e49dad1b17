"""LlamaIndex instrumentation is withheld while an ECSO step calls the wrapped LLM (containment).

A wrapped LLM reports each call to every instrumentation handler: ``LLMChatStartEvent`` /
``LLMChatEndEvent`` / ``LLMChatInProgressEvent`` with the messages and the reply, spans with the call's
arguments and result, and the legacy ``CallbackManager`` payloads. During the ECSO steps those carry
text that has not been judged safe (the step-1 answer while it is checked, a flagged answer, captions).
LlamaIndex has one set of handlers for tracers and UIs alike, so the steps' own reports are dropped,
for this context only (a context variable: concurrent calls elsewhere are untouched). Handlers see
``ECSOStepStartEvent`` / ``ECSOStepEndEvent`` (step, model, latency, token counts) and the guarded
LLM's own events, whose text is only what was released. ``ECSOMultiModalLLM(instrument_steps=True)``
lets the steps' reports through, for setups whose every handler is operator-side.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.dispatcher import Dispatcher

__all__ = ["install", "withheld"]

_WITHHELD: ContextVar[bool] = ContextVar("ecso_withheld", default=False)
_installed = False
_lock = threading.Lock()


@contextmanager
def withheld(active: bool = True) -> Iterator[None]:
    """Drop instrumentation reports made in this context while the block runs (no-op if not ``active``)."""
    token = _WITHHELD.set(active or _WITHHELD.get())
    try:
        yield
    finally:
        _WITHHELD.reset(token)


def _gated(method: Callable[..., Any], dropped: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def gate(*args: Any, **kwargs: Any) -> Any:
        return dropped(*args, **kwargs) if _WITHHELD.get() else method(*args, **kwargs)

    return gate


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


async def _anothing(*args: Any, **kwargs: Any) -> None:
    return None


def _event_id(self: Any, event_type: Any, payload: Any = None, event_id: str | None = None, **kwargs: Any) -> str:
    return event_id or str(uuid.uuid4())


def install() -> None:
    """Gate the dispatchers and the legacy callback manager, once per process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        for name in ("event", "span_enter", "span_exit", "span_drop"):
            setattr(Dispatcher, name, _gated(getattr(Dispatcher, name), _nothing))
        Dispatcher.aevent = _gated(Dispatcher.aevent, _anothing)  # type: ignore[method-assign]
        CallbackManager.on_event_start = _gated(CallbackManager.on_event_start, _event_id)  # type: ignore[method-assign]
        CallbackManager.on_event_end = _gated(CallbackManager.on_event_end, _nothing)  # type: ignore[method-assign]
        _installed = True
