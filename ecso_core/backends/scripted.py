"""A backend that serves scripted replies, and :func:`by_step`: the test doubles for users' tests and ours.

A script says what the model replies at each ECSO step, not which prompt text it matches, so a changed
prompt template never breaks a script::

    backend = ScriptedBackend(by_step(answer="Sure, step 1...", check="Yes", caption="a list", eyes_closed="No."))

The same script drives LangChain's ``ScriptedChatModel`` and LlamaIndex's ``ScriptedLLM`` (in each
adapter's ``testing`` module): the guard marks every backend call with its step (see
:mod:`ecso_core.steps`), and :func:`by_step` reads it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

from ..errors import BackendError
from ..steps import current_step
from ..types import ChatReply, ChatRequest, StepName, YesNoScore
from .base import BackendBase, BackendCapabilities

__all__ = ["ScriptedBackend", "by_step", "call_script"]

Reply = Union[str, ChatReply, BaseException]
Score = Union[YesNoScore, tuple[float, float], None, BaseException]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def by_step(
    *,
    answer: Any = _UNSET,
    check: Any = _UNSET,
    caption: Any = _UNSET,
    eyes_closed: Any = _UNSET,
    default: Any = _UNSET,
) -> Callable[..., Any]:
    """A reply script that answers by the ECSO step being served (see :func:`ecso_core.steps.current_step`).

    Pass the result as the script of :class:`ScriptedBackend` (``replies``), of
    ``langchain_ecso.testing.ScriptedChatModel`` (``reply``) or of ``llamaindex_ecso.testing.ScriptedLLM``
    (``reply``).

    Args:
        answer: the reply to the first, normal answer (with the images).
        check: the reply to the harm-aware self-check (e.g. ``"No"`` for safe, ``"Yes"`` for unsafe).
        caption: the reply to the query-aware caption request (one call per distinct image).
        eyes_closed: the reply to the eyes-closed answer (also the harmless re-answer of a text-only
            request judged unsafe under ``check_text_only``).
        default: the reply to a step not given above, and to a call made outside the guard
            (``current_step()`` is None, e.g. an agent calling the inner model directly).

    Each value is what the double serves (a string; a :class:`ChatReply` for :class:`ScriptedBackend`;
    an ``AIMessage`` or ``ChatMessage`` for the adapters' doubles), an exception to raise, or a function
    of what the double passes its script (the :class:`ChatRequest`; the adapters' message list), which
    returns one of those. A function also gets the call's keyword arguments its signature names (or all
    of them, given ``**kwargs``).

    Returns:
        The script: a function of the double's argument (and keyword arguments).

    Raises:
        BackendError: (when the script runs) a call for a step that has no reply and no ``default``.

    """
    table: dict[StepName, Any] = {"answer": answer, "check": check, "caption": caption, "eyes_closed": eyes_closed}

    def script(subject: Any, /, **kwargs: Any) -> Any:
        step = current_step()
        value = default if step is None else table[step]
        if value is _UNSET:
            value = default
        if value is _UNSET:
            where = "a call outside the guard (no current step)" if step is None else f"the {step!r} step"
            raise BackendError(f"by_step has no reply for {where}; give it {step or 'default'}=...")
        if isinstance(value, BaseException):
            raise value
        return call_script(value, subject, kwargs) if callable(value) else value

    return script


def call_script(script: Callable[..., Any], subject: Any, kwargs: Mapping[str, Any]) -> Any:
    """Call a reply ``script`` with ``subject`` and those of ``kwargs`` that its signature takes.

    For test doubles: a script written as ``f(messages)`` and one written as ``f(messages, **kwargs)``
    (or naming a keyword, e.g. ``tools``) both work, and a ``TypeError`` raised inside a script is
    never mistaken for a signature mismatch.
    """
    try:
        parameters = list(inspect.signature(script).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): the subject only
        return script(subject)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return script(subject, **kwargs)
    named = {p.name for p in parameters[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return script(subject, **{key: value for key, value in kwargs.items() if key in named})


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

    Every :class:`ChatRequest` received (generated or scored) is appended to :attr:`requests`, and the
    ECSO step it served (None outside the guard) to :attr:`steps`; :attr:`batch_sizes` records the size of
    each call. A script that answers by step rather than in order: :func:`by_step`.

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
        self.steps: list[StepName | None] = []
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
        self.steps.append(current_step())
        if callable(script):
            return script(request)
        assert isinstance(script, list)
        if not script:
            raise BackendError(f"ScriptedBackend {self.name!r} has no {what} left for this request")
        return script.pop(0)
