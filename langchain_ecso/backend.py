"""Any LangChain chat model as an ecso backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig

from ecso_core.backends.base import BackendBase, BackendCapabilities
from ecso_core.guard import current_step
from ecso_core.types import ChatReply, ChatRequest, YesNoScore
from ecso_core.verdict import score_from_logprobs

from ._callbacks import from_context
from ._convert import reply_from_ai_message, to_langchain_messages

__all__ = ["LangChainBackend", "model_name"]


def model_name(model: BaseChatModel) -> str:
    """The name a LangChain chat model goes by (its model id when it has one, else its type)."""
    return str(getattr(model, "model_name", None) or getattr(model, "model", None) or model._llm_type)


class LangChainBackend(BackendBase):
    """Calls a LangChain chat model for each ECSO step.

    Every call is tagged ``nostream`` (so LangGraph's ``stream_mode="messages"`` never shows an
    unchecked answer) and ``ecso:<step>``, and runs as a child of ``callbacks`` when given, so a trace
    shows answer -> check -> caption -> eyes-closed answer under the ECSO run.

    Args:
        model: the chat model (it must accept image content blocks for image requests).
        callbacks: the callback manager the inner runs are children of (set by ``ChatECSO``); default:
            the tracers of the enclosing run, never its stream handlers.
        logprobs: read the check from token log-probabilities: ``"auto"`` when the model was built
            with ``logprobs=True`` (e.g. ``ChatOpenAI(logprobs=True, top_logprobs=20)``), ``"never"``,
            or ``"always"``.
        max_images: declared image limit of the model (None: unknown).

    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        callbacks: Any = None,
        logprobs: Literal["auto", "always", "never"] = "auto",
        max_images: int | None = None,
    ) -> None:
        self.model = model
        self.callbacks = callbacks
        self.name = model_name(model)
        self._logprobs = logprobs
        scores = logprobs == "always" or (logprobs == "auto" and bool(getattr(model, "logprobs", False)))
        self.capabilities = BackendCapabilities(
            score_yes_no=scores, max_images=max_images, tools=True, call_options=True
        )
        self._no_logprobs = False  # learnt at run time: the model sends no log-probabilities

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """One reply per request; requests with the same tools and stop words go as one ``batch``."""
        replies: dict[int, ChatReply] = {}
        for runnable, indices in self._groups(requests):
            inputs = [to_langchain_messages(requests[i]) for i in indices]
            outputs = (
                runnable.batch(inputs, config=self._config())
                if len(inputs) > 1
                else [runnable.invoke(inputs[0], config=self._config())]
            )
            for index, output in zip(indices, outputs, strict=True):
                replies[index] = reply_from_ai_message(output)
        return [replies[i] for i in range(len(requests))]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Async :meth:`generate` (``abatch``)."""
        replies: dict[int, ChatReply] = {}
        groups = self._groups(requests)
        results = await asyncio.gather(
            *(
                runnable.abatch([to_langchain_messages(requests[i]) for i in idx], config=self._config())
                for runnable, idx in groups
            )
        )
        for (_, indices), outputs in zip(groups, results, strict=True):
            for index, output in zip(indices, outputs, strict=True):
                replies[index] = reply_from_ai_message(output)
        return [replies[i] for i in range(len(requests))]

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Yes/no probabilities from the reply's ``logprobs``; None where the model sent none."""
        if self._no_logprobs:
            return [None] * len(requests)
        return [self._score(reply) for reply in self.generate(requests)]

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Async :meth:`score_yes_no`."""
        if self._no_logprobs:
            return [None] * len(requests)
        return [self._score(reply) for reply in await self.agenerate(requests)]

    def _score(self, reply: ChatReply) -> YesNoScore | None:
        metadata = getattr(reply.raw, "response_metadata", None) or {}
        score = score_from_logprobs(metadata.get("logprobs"), reply.usage.prompt_tokens)
        if score is None and self._logprobs == "auto":  # none sent: later checks go straight to text
            self._no_logprobs = True
        return score

    def _groups(self, requests: Sequence[ChatRequest]) -> list[tuple[Runnable[Any, Any], list[int]]]:
        keyed: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(
                [request.tools, request.tool_choice, request.params.stop, request.options], sort_keys=True, default=repr
            )
            keyed.setdefault(key, []).append(index)
        return [(self._runnable(requests[indices[0]]), indices) for indices in keyed.values()]

    def _runnable(self, request: ChatRequest) -> Runnable[Any, Any]:
        runnable: Runnable[Any, Any] = self.model
        if request.tools:
            options = {} if request.tool_choice is None else {"tool_choice": request.tool_choice}
            runnable = self.model.bind_tools(list(request.tools), **options)
        if request.params.stop:
            runnable = runnable.bind(stop=list(request.params.stop))
        if request.options:  # the caller's own call kwargs (response_format, ...), verbatim
            runnable = runnable.bind(**request.options)
        return runnable

    def _config(self) -> RunnableConfig:
        step = current_step() or "call"
        config: RunnableConfig = {
            "tags": ["nostream", f"ecso:{step}"],
            "run_name": f"ecso:{step}",
            "metadata": {"ecso_step": step},
        }
        # Always explicit: without callbacks LangChain would hand the call the enclosing runnable's
        # handlers, event streams included (see _callbacks).
        config["callbacks"] = self.callbacks if self.callbacks is not None else from_context(asynchronous=False)
        return config
