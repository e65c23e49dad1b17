"""Which ECSO step a backend call belongs to, for backends that label their calls (tracing, tests).

The guard sets it around each batched backend call; backends read it with :func:`current_step`. It
lives at the bottom of the package so that backends never import the guard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .types import StepName

__all__ = ["current_step", "running_step"]

_CURRENT_STEP: ContextVar[StepName | None] = ContextVar("ecso_current_step", default=None)


def current_step() -> StepName | None:
    """The ECSO step whose backend call is running in this context (None outside the guard).

    Backends may read it to label their calls, e.g. for tracing; the LangChain adapter tags each
    inner model run with it.
    """
    return _CURRENT_STEP.get()


@contextmanager
def running_step(step: StepName) -> Iterator[None]:
    """Mark the backend calls made inside the block as serving ``step``."""
    token = _CURRENT_STEP.set(step)
    try:
        yield
    finally:
        _CURRENT_STEP.reset(token)
