"""A backend that serves scripted replies: the test double for users' tests and ours."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from ..errors import BackendError
from ..types import ChatReply, ChatRequest, YesNoScore
from .base import BackendBase, BackendCapabilities

__all__ = ["ScriptedBackend"]

Reply = Union[str, ChatReply, BaseException]
Score = Union[YesNoScore, tuple[float, float], None, BaseException]


class ScriptedBackend(BackendBase):
    """Serve replies from a script and record every request.

    Args:
        replies: strings (or :class:`ChatReply` objects, or exceptions to raise) served in order,
            or a function of the request that returns one of those.
        scores: optional yes/no scores for :meth:`score_yes_no`, in order or as a function; giving
            them turns the ``score_yes_no`` capability on. A ``(p_yes, p_no)`` tuple is accepted;
            None plays a backend that could not score that request.
        name: model name to report.
        max_images: declared image limit (None: unlimited).
        tools: declare tool support.
        call_options: declare that provider call options (``ChatRequest.options``) are accepted.

    Every :class:`ChatRequest` received (generated or scored) is appended to :attr:`requests`;
    :attr:`batch_sizes` records the size of each call.

    """

    def __init__(
        self,
        replies: Iterable[Reply] | Callable[[ChatRequest], Reply],
        *,
        scores: Iterable[Score] | Callable[[ChatRequest], Score] | None = None,
        name: str = "scripted",
        max_images: int | None = None,
        tools: bool = True,
        call_options: bool = True,
    ) -> None:
        self.name = name
        self.capabilities = BackendCapabilities(
            score_yes_no=scores is not None, max_images=max_images, tools=tools, call_options=call_options
        )
        self._replies = replies if callable(replies) else list(replies)
        self._scores = scores if (scores is None or callable(scores)) else list(scores)
        self.requests: list[ChatRequest] = []
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Serve the next scripted reply for each request; raise a scripted exception as is."""
        items = self._serve(self._replies, requests, "reply")
        return [i if isinstance(i, ChatReply) else ChatReply(text=str(i), finish_reason="stop") for i in items]

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Serve the next scripted score for each request."""
        if self._scores is None:
            return super().score_yes_no(requests)
        items = self._serve(self._scores, requests, "score")
        return [i if i is None or isinstance(i, YesNoScore) else YesNoScore(p_yes=i[0], p_no=i[1]) for i in items]

    def _serve(self, script: object, requests: Sequence[ChatRequest], what: str) -> list[Any]:
        # Under the lock, so concurrent callers get replies in a consistent order.
        with self._lock:
            self.batch_sizes.append(len(requests))
            items = [self._next(script, request, what) for request in requests]
        for item in items:
            if isinstance(item, BaseException):
                raise item
        return items

    def _next(self, script: object, request: ChatRequest, what: str) -> object:
        self.requests.append(request)
        if callable(script):
            return script(request)
        assert isinstance(script, list)
        if not script:
            raise BackendError(f"ScriptedBackend {self.name!r} has no {what} left for this request")
        return script.pop(0)
