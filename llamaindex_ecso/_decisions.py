"""What the guarded calls made in a context decided or raised, for wrappers that report it.

``ECSOMultiModalLLM`` records the client summary of every guarded call (the dict it puts in
``ChatResponse.additional_kwargs["ecso"]``: no withheld text) with :func:`record`, and every
``ECSOError`` a call raises with :func:`raising`; a wrapper such as ``ECSOQueryEngine`` opens
:func:`collecting` around the work it reports on. A context variable holds the open collectors, so
concurrent queries never see each other's calls, while the threads and tasks LlamaIndex starts for one
query (which copy the context) report to it; nested collectors all receive.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ecso_core.errors import ECSOError

__all__ = ["Collected", "collecting", "raising", "record"]


@dataclass
class Collected:
    """The guarded calls of one piece of work, in the order they ended."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    """Client summaries of the calls that answered."""
    errors: list[ECSOError] = field(default_factory=list)
    """Errors the calls raised (whether or not the caller let them through)."""


_OPEN: ContextVar[tuple[Collected, ...]] = ContextVar("ecso_collected", default=())


@contextmanager
def collecting(into: Collected) -> Iterator[Collected]:
    """Report every guarded call made in this context to ``into`` while the block runs."""
    token = _OPEN.set((*_OPEN.get(), into))
    try:
        yield into
    finally:
        _OPEN.reset(token)


def record(summary: dict[str, Any]) -> None:
    """Report one guarded call's client summary to every open collector (none open: nothing happens)."""
    for into in _OPEN.get():
        into.calls.append(summary)


@contextmanager
def raising() -> Iterator[None]:
    """Report an ``ECSOError`` raised in the block to every open collector, and let it through."""
    try:
        yield
    except ECSOError as exc:
        for into in _OPEN.get():
            into.errors.append(exc)
        raise
