"""Who sees the ECSO steps' inner runs: tracers yes, UI streams no (containment).

Each ECSO step (answer, check, caption, eyes-closed answer) calls the wrapped model as a child run
of the ``ChatECSO`` run. Those runs carry text that has not been judged safe (the step-1 answer while
it is checked, a flagged answer, captions), so they go only to operator-side tracers: LangChain
tracers (``BaseTracer``: LangSmith's ``LangChainTracer``, ``collect_runs``, the console tracer) and
handlers named in ``ChatECSO(step_callbacks=[...])``. Streaming handlers — ``astream_events`` (v1,
v2, v3), ``astream_log``, LangGraph's ``messages`` stream — and plain user handlers (``on_llm_new_token``
UIs) never receive them; they see the ``ChatECSO`` run itself, whose output is only released text.

LangChain hands ``_stream`` no run manager, so :class:`StreamParent` carries the run's identity to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler, CallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.base import BaseTracer

try:  # private in langchain-core, used by LangGraph the same way
    from langchain_core.tracers._streaming import _StreamingCallbackHandler, _V2StreamingCallbackHandler
except ImportError:  # pragma: no cover - older langchain-core
    from langchain_core.tracers._streaming import _StreamingCallbackHandler

    class _V2StreamingCallbackHandler:  # type: ignore[no-redef]
        pass


__all__ = [
    "PARENT_KWARG",
    "PENDING_RUN",
    "StreamParent",
    "from_context",
    "from_run_manager",
    "from_stream_parent",
    "is_tracer",
    "step_callbacks",
]

PARENT_KWARG = "_ecso_parent"
"""Private call keyword through which ``ChatECSO.stream`` tells ``_stream`` which run it belongs to."""

PENDING_RUN: ContextVar[Any] = ContextVar("ecso_pending_run", default=None)
"""The run manager of an ``invoke`` that LangChain routes to ``_stream`` (set in ``_should_stream``)."""


def is_tracer(handler: BaseCallbackHandler) -> bool:
    """Whether ``handler`` is an operator-side tracer rather than a stream a client or UI reads."""
    streaming = isinstance(handler, (_StreamingCallbackHandler, _V2StreamingCallbackHandler))
    return isinstance(handler, BaseTracer) and not streaming


@dataclass(frozen=True)
class StreamParent:
    """The identity of a ``ChatECSO`` run started by ``stream``/``astream``: its id and call config."""

    run_id: uuid.UUID
    config: RunnableConfig = field(default_factory=dict)  # type: ignore[assignment]


def step_callbacks(
    handlers: Sequence[BaseCallbackHandler],
    *,
    parent_run_id: uuid.UUID | None,
    tags: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
    extra: Sequence[BaseCallbackHandler] = (),
    asynchronous: bool = False,
) -> CallbackManager | AsyncCallbackManager:
    """A callback manager for the step runs: children of ``parent_run_id``, tracers and ``extra`` only.

    Always a manager (possibly without handlers): an empty ``callbacks`` would let LangChain fall back
    to the enclosing runnable's callbacks, event streams included.
    """
    kept = [h for h in handlers if is_tracer(h)]
    kept += [h for h in extra if h not in kept]
    manager = (AsyncCallbackManager if asynchronous else CallbackManager)(handlers=[], parent_run_id=parent_run_id)
    manager.set_handlers(kept)
    manager.add_tags(list(tags))
    manager.add_metadata(dict(metadata or {}))
    return manager


def _children_of(
    manager: Any, parent_run_id: uuid.UUID | None, extra: Sequence[BaseCallbackHandler], asynchronous: bool
) -> Any:
    """Step callbacks inheriting ``manager``'s handlers, tags and metadata, under ``parent_run_id``."""
    return step_callbacks(
        manager.inheritable_handlers,
        parent_run_id=parent_run_id,
        tags=manager.inheritable_tags,
        metadata=manager.inheritable_metadata,
        extra=extra,
        asynchronous=asynchronous,
    )


def from_run_manager(run_manager: Any, extra: Sequence[BaseCallbackHandler], asynchronous: bool) -> Any:
    """Step callbacks for the run of ``run_manager`` (None: a manager with no handlers)."""
    if run_manager is None:
        return step_callbacks([], parent_run_id=None, extra=extra, asynchronous=asynchronous)
    return _children_of(run_manager, run_manager.run_id, extra, asynchronous)


def from_context(asynchronous: bool) -> Any:
    """Step callbacks under the enclosing runnable's run (a backend used outside ``ChatECSO``, e.g. in a node)."""
    config = var_child_runnable_config.get() or {}
    manager = CallbackManager.configure(config.get("callbacks"), None, False, config.get("tags"))
    return _children_of(manager, manager.parent_run_id, (), asynchronous)


def from_stream_parent(
    parent: StreamParent, model: Any, extra: Sequence[BaseCallbackHandler], asynchronous: bool
) -> Any:
    """Step callbacks for a run started by ``stream``: its handlers as LangChain configures them."""
    config = parent.config
    manager = CallbackManager.configure(
        config.get("callbacks"),
        model.callbacks,
        model.verbose,
        config.get("tags"),
        model.tags,
        config.get("metadata"),
        model.metadata,
    )
    return _children_of(manager, parent.run_id, extra, asynchronous)
