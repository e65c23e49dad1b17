"""Any LangChain chat model (or a Runnable around one) as an ecso backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeAlias

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.runnables.fallbacks import RunnableWithFallbacks

from ecso_core.backends.base import BackendBase, BackendCapabilities
from ecso_core.errors import CapabilityError, ConfigError, MissingDependencyError
from ecso_core.steps import current_step
from ecso_core.types import ChatReply, ChatRequest, ScoreWords, YesNoScore
from ecso_core.verdict import score_from_logprobs

from ._callbacks import from_context
from ._convert import reply_from_ai_message, to_langchain_messages

__all__ = ["ChatRunnable", "LangChainBackend", "chat_model_of", "model_name", "resolve_model", "with_tools"]

ChatRunnable: TypeAlias = Runnable[LanguageModelInput, BaseMessage]
"""What ecso guards: a LangChain chat model, or a Runnable around one (``with_retry``, ``with_fallbacks``,
``bind``, a configurable ``init_chat_model``)."""


def resolve_model(model: ChatRunnable | str) -> ChatRunnable:
    """The chat model to guard: a Runnable as given, or ``init_chat_model(model)`` for a string.

    Raises:
        ConfigError: ``model`` is neither a string nor a LangChain Runnable.
        MissingDependencyError: a string needs the ``langchain`` package (``init_chat_model``).

    """
    if isinstance(model, str):
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as exc:
            raise MissingDependencyError("langchain", "langchain") from exc
        return init_chat_model(model)
    if not isinstance(model, Runnable):
        raise ConfigError(f"model= must be a LangChain chat model, a Runnable around one or a string, not {model!r}")
    return model


def chat_model_of(model: ChatRunnable) -> BaseChatModel | None:
    """The chat model inside ``model``'s wrappers (``bind``, ``with_retry``, ``with_fallbacks``' primary).

    None for a Runnable that hides it (a configurable ``init_chat_model`` decides at call time).
    """
    current: Any = model
    for _ in range(64):  # wrappers nest a few deep; a cycle would be a bug upstream
        if isinstance(current, BaseChatModel):
            return current
        if isinstance(current, RunnableBindingBase):
            current = current.bound
        elif isinstance(current, RunnableWithFallbacks):
            current = current.runnable
        else:
            return None
    return None


def with_tools(model: ChatRunnable, tools: list[dict[str, Any]], **options: Any) -> ChatRunnable:
    """``model`` with ``tools`` bound to every chat model inside it, its wrappers kept.

    ``llm.with_retry().bind_tools(...)`` would drop the retry (the binding forwards to the bare model);
    here the tools go inside: retry, fallbacks (each fallback gets them too) and bound kwargs stay.

    Raises:
        CapabilityError: a model inside cannot bind tools.

    """
    if isinstance(model, RunnableBindingBase):
        return model.model_copy(update={"bound": with_tools(model.bound, tools, **options)})
    if isinstance(model, RunnableWithFallbacks):
        return model.model_copy(
            update={
                "runnable": with_tools(model.runnable, tools, **options),
                "fallbacks": [with_tools(fallback, tools, **options) for fallback in model.fallbacks],
            }
        )
    bind = getattr(model, "bind_tools", None)
    if bind is None:
        raise CapabilityError(f"{type(model).__name__} cannot bind tools")
    try:
        bound: ChatRunnable = bind(tools, **options)
    except NotImplementedError as exc:  # BaseChatModel's default: the model has no tool calling
        raise CapabilityError(f"{model_name(model)} does not support tools") from exc
    return bound


def model_name(model: ChatRunnable) -> str:
    """The name a LangChain chat model goes by (its model id when it has one, else its type)."""
    inner = chat_model_of(model)
    if inner is None:  # a configurable model: its default, if it has one
        default = getattr(model, "_default_config", None) or {}
        return str(default.get("model") or type(model).__name__)
    return str(getattr(inner, "model_name", None) or getattr(inner, "model", None) or inner._llm_type)


class LangChainBackend(BackendBase):
    """Calls a LangChain chat model for each ECSO step.

    Every call is tagged ``nostream`` (so LangGraph's ``stream_mode="messages"`` never shows an
    unchecked answer) and ``ecso:<step>``, and runs as a child of ``callbacks`` when given, so a trace
    shows answer -> check -> caption -> eyes-closed answer under the ECSO run.

    Args:
        model: the chat model (it must accept image content blocks for image requests), a Runnable
            around one (``with_retry``, ``with_fallbacks``, ``bind``, a configurable ``init_chat_model``)
            or an ``init_chat_model`` string such as ``"openai:gpt-4o"``.
        callbacks: the callback manager the inner runs are children of (set by ``ChatECSO``); default:
            the tracers of the enclosing run, never its stream handlers.
        logprobs: read the check from token log-probabilities: ``"auto"`` when the model was built
            with ``logprobs=True`` (e.g. ``ChatOpenAI(logprobs=True, top_logprobs=20)``), ``"never"``,
            or ``"always"``.
        max_images: declared image limit of the model (None: unknown).

    """

    def __init__(
        self,
        model: ChatRunnable | str,
        *,
        callbacks: Any = None,
        logprobs: Literal["auto", "always", "never"] = "auto",
        max_images: int | None = None,
    ) -> None:
        self.model = resolve_model(model)
        self.callbacks = callbacks
        self.name = model_name(self.model)
        self._logprobs = logprobs
        inner = chat_model_of(self.model)
        scores = logprobs == "always" or (logprobs == "auto" and bool(getattr(inner, "logprobs", False)))
        self.capabilities = BackendCapabilities(
            score_yes_no=scores, max_images=max_images, tools=True, call_options=True
        )
        self._no_logprobs = False  # learnt at run time: the model sends no log-probabilities

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """One reply per request; requests with the same tools and call options go as one ``batch``."""
        replies: dict[int, ChatReply] = {}
        config = self._config()
        with _isolated():
            for runnable, indices in self._groups(requests):
                inputs: list[LanguageModelInput] = [to_langchain_messages(requests[i]) for i in indices]
                outputs = (
                    runnable.batch(inputs, config=config) if len(inputs) > 1 else [runnable.invoke(inputs[0], config)]
                )
                for index, output in zip(indices, outputs, strict=True):
                    replies[index] = reply_from_ai_message(output)
        return [replies[i] for i in range(len(requests))]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Async :meth:`generate` (``abatch``)."""
        replies: dict[int, ChatReply] = {}
        config = self._config(asynchronous=True)
        with _isolated():
            groups = self._groups(requests)
            results = await asyncio.gather(
                *(
                    runnable.abatch([to_langchain_messages(requests[i]) for i in idx], config=config)
                    for runnable, idx in groups
                )
            )
        for (_, indices), outputs in zip(groups, results, strict=True):
            for index, output in zip(indices, outputs, strict=True):
                replies[index] = reply_from_ai_message(output)
        return [replies[i] for i in range(len(requests))]

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        """The model's own ``stream``: text deltas as it writes them, then the whole reply.

        Progressive streaming checks the answer between deltas; closing the iterator closes the model's
        stream (its HTTP response, for a provider).
        """
        config = self._config()
        ((runnable, _),) = self._groups([request])
        merged: Any = None
        chunks = runnable.stream(to_langchain_messages(request), config)
        try:
            while True:
                with _isolated():  # only around the model's own work: the consumer's code runs as it was
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                merged = chunk if merged is None else merged + chunk
                text = chunk.text if isinstance(chunk.text, str) else ""
                if text:
                    yield text
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        yield reply_from_ai_message(merged if merged is not None else AIMessage(content=""))

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Yes/no probabilities from the reply's ``logprobs``; None where the model sent none."""
        if self._no_logprobs:
            return [None] * len(requests)
        return [self._score(reply, r.score_words) for r, reply in zip(requests, self.generate(requests), strict=True)]

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Async :meth:`score_yes_no`."""
        if self._no_logprobs:
            return [None] * len(requests)
        replies = await self.agenerate(requests)
        return [self._score(reply, r.score_words) for r, reply in zip(requests, replies, strict=True)]

    def _score(self, reply: ChatReply, words: ScoreWords | None = None) -> YesNoScore | None:
        metadata = getattr(reply.raw, "response_metadata", None) or {}
        score = score_from_logprobs(metadata.get("logprobs"), reply.usage.prompt_tokens, words)
        if score is None and self._logprobs == "auto":  # none sent: later checks go straight to text
            self._no_logprobs = True
        return score

    def _groups(self, requests: Sequence[ChatRequest]) -> list[tuple[ChatRunnable, list[int]]]:
        keyed: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(
                [request.tools, request.tool_choice, request.params.stop, request.options], sort_keys=True, default=repr
            )
            keyed.setdefault(key, []).append(index)
        return [(self._runnable(requests[indices[0]]), indices) for indices in keyed.values()]

    def _runnable(self, request: ChatRequest) -> ChatRunnable:
        runnable: ChatRunnable = self.model
        if request.tools:
            options = {} if request.tool_choice is None else {"tool_choice": request.tool_choice}
            runnable = with_tools(self.model, list(request.tools), **options)
        if request.params.stop:
            runnable = runnable.bind(stop=list(request.params.stop))
        if request.options:  # the caller's own call kwargs (response_format, ...), verbatim
            runnable = runnable.bind(**request.options)
        return runnable

    def _config(self, asynchronous: bool = False) -> RunnableConfig:
        step = current_step() or "call"
        ambient = var_child_runnable_config.get() or {}
        config: RunnableConfig = {
            "tags": ["nostream", f"ecso:{step}"],
            "run_name": f"ecso:{step}",
            "metadata": {"ecso_step": step},
        }
        if ambient.get("configurable"):  # a configurable model reads its choice from the enclosing run
            config["configurable"] = dict(ambient["configurable"])
        # Always explicit: without callbacks LangChain would hand the call the enclosing runnable's
        # handlers, event streams included (see _callbacks).
        config["callbacks"] = self.callbacks if self.callbacks is not None else from_context(asynchronous)
        return config


@contextmanager
def _isolated() -> Iterator[None]:
    """Step calls see no ambient callbacks.

    A ``RunnableBinding`` (``bind_tools``, ``bind``, ``with_retry``) merges the enclosing run's config
    into its call, handlers included: an ``astream_events`` stream around ChatECSO would receive the
    step runs. The calls get their callbacks from :meth:`LangChainBackend._config` only.
    """
    ambient = var_child_runnable_config.get()
    kept = {k: v for k, v in (ambient or {}).items() if k != "callbacks"}
    token = var_child_runnable_config.set(kept or None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)
