"""``ChatECSO``: ECSO as a LangChain chat model, usable wherever a chat model goes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, model_validator

from ecso_core.backends.base import VisionChatBackend
from ecso_core.config import ECSOConfig
from ecso_core.guard import ECSO, StreamEnd, TextDelta
from ecso_core.result import ECSOResult
from ecso_core.types import ChatRequest, GenerationParams

from ._callbacks import PARENT_KWARG, PENDING_RUN, StreamParent, from_run_manager, from_stream_parent
from ._convert import ai_message, final_chunk, to_ecso_request
from .backend import LangChainBackend, model_name

__all__ = ["ChatECSO"]


class ChatECSO(BaseChatModel):
    """A chat model guarded by ECSO ("Eyes Closed, Safety On").

    Wrap a LangChain chat model (``ChatECSO(model=ChatOpenAI(model="gpt-4o"))``) or an ecso backend
    (``ChatECSO(backend=load_backend("hf:..."))``) and use it anywhere a chat model goes. Every answer
    carries ``response_metadata["ecso"]`` (decision, verdict, steps: the result's client summary) and
    ``usage_metadata`` summed over all steps. Streaming emits text only after the verdict. Nothing a
    client or a UI handler sees carries withheld text (the step-1 answer when not released, captions,
    the check's reply); the step runs go to tracers only.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel | None = None
    """The LangChain chat model to guard."""
    backend: Any = None
    """Or: an ecso ``VisionChatBackend`` to guard."""
    judge: Any = None
    """Optional separate model (LangChain chat model or ecso backend) for the self-check."""
    config: ECSOConfig = Field(default_factory=ECSOConfig)
    """The guard's configuration (prompts, thresholds, fail mode, limits)."""
    max_tokens: int | None = None
    """Most new tokens per answer (ecso backends; a LangChain model keeps its own setting)."""
    temperature: float | None = None
    """Sampling temperature of the answers (ecso backends; default greedy)."""
    stop: list[str] | None = None
    """Stop sequences for the answers."""
    step_callbacks: list[Any] = Field(default_factory=list)
    """Handlers that also receive the step runs, withheld text included (operator-side tracing such as
    Langfuse). LangChain tracers (LangSmith, ``collect_runs``) receive them already; event streams and
    other handlers never do (see docs/langchain.md, "What tracers and streams see")."""
    audit: Any = None
    """Called with every :class:`~ecso_core.result.ECSOResult`, withheld text included (operator-side)."""

    @model_validator(mode="after")
    def _one_model(self) -> ChatECSO:
        if (self.model is None) == (self.backend is None):
            raise ValueError("ChatECSO needs exactly one of model= (a LangChain chat model) or backend=")
        if self.backend is not None and not isinstance(self.backend, VisionChatBackend):
            raise ValueError("backend= must be an ecso VisionChatBackend (see ecso_core.load_backend)")
        return self

    @property
    def _llm_type(self) -> str:
        return "ecso"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"guarded": self._inner_name, "prompt_set": self.config.prompt_set}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        name = kwargs["model"] if isinstance(kwargs.get("model"), str) else self._inner_name
        params = LangSmithParams(ls_provider="ecso", ls_model_name=name, ls_model_type="chat")
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @property
    def _inner_name(self) -> str:
        return model_name(self.model) if self.model is not None else str(self.backend.name)

    # ---- LangChain entry points ---------------------------------------------------------------

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        """Stream the guarded answer (after the verdict); the steps stay child runs of this run."""
        config, parent = _with_run_id(config)
        yield from super().stream(input, config, stop=stop, **{PARENT_KWARG: parent}, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:  # fmt: skip
        """Async :meth:`stream`."""
        config, parent = _with_run_id(config)
        async for chunk in super().astream(input, config, stop=stop, **{PARENT_KWARG: parent}, **kwargs):
            yield chunk

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        # LangChain may route an invoke to _stream (event streams attached) without handing it the run
        # manager; keep it for _stream, which runs next in this context.
        PENDING_RUN.set(run_manager)
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(PARENT_KWARG, None)  # private plumbing, not an invocation parameter to trace
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs.pop(PARENT_KWARG, None)
        PENDING_RUN.set(None)
        result = self._guard(from_run_manager(run_manager, self.step_callbacks, False)).run(
            self._request(messages, stop, kwargs)
        )
        return _chat_result(result, self._inner_name, self.config.in_band_audit)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs.pop(PARENT_KWARG, None)
        PENDING_RUN.set(None)
        result = await self._guard(from_run_manager(run_manager, self.step_callbacks, True)).arun(
            self._request(messages, stop, kwargs)
        )
        return _chat_result(result, self._inner_name, self.config.in_band_audit)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain itself reports each yielded chunk to the run's handlers (on_llm_new_token).
        guard = self._guard(self._step_callbacks(run_manager, kwargs, asynchronous=False))
        for event in guard.stream(self._request(messages, stop, kwargs)):
            chunk = self._chunk(event)
            if chunk is not None:
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        guard = self._guard(self._step_callbacks(run_manager, kwargs, asynchronous=True))
        async for event in guard.astream(self._request(messages, stop, kwargs)):
            chunk = self._chunk(event)
            if chunk is not None:
                yield chunk

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the guarded model (and the eyes-closed step) are called with them."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return super().bind(tools=formatted, tool_choice=_tool_choice(tool_choice), **kwargs)

    # ---- internals ----------------------------------------------------------------------------

    def _guard(self, callbacks: Any) -> ECSO:
        # A guard per call: cheap, and the inner LangChain runs become children of this run.
        backend = LangChainBackend(self.model, callbacks=callbacks) if self.model is not None else self.backend
        judge = self.judge
        if judge is not None and not isinstance(judge, VisionChatBackend):
            judge = LangChainBackend(judge, callbacks=callbacks)
        return ECSO(backend, self.config, judge=judge, audit=self.audit)

    def _step_callbacks(self, run_manager: Any, kwargs: dict[str, Any], asynchronous: bool) -> Any:
        """The step runs' callbacks for a streamed call: from the run manager, wherever LangChain left it."""
        parent = kwargs.pop(PARENT_KWARG, None)
        pending = PENDING_RUN.get()
        PENDING_RUN.set(None)
        if run_manager is None and parent is not None:
            return from_stream_parent(parent, self, self.step_callbacks, asynchronous)
        return from_run_manager(run_manager or pending, self.step_callbacks, asynchronous)

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatRequest:
        params = GenerationParams(
            max_new_tokens=kwargs.get("max_tokens") or self.max_tokens or GenerationParams().max_new_tokens,
            temperature=self.temperature or 0.0,
        )
        return to_ecso_request(
            messages,
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            stop=stop or self.stop,
            params=params,
        )

    def _chunk(self, event: Any) -> ChatGenerationChunk | None:
        if isinstance(event, TextDelta):
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        if isinstance(event, StreamEnd):
            return ChatGenerationChunk(message=final_chunk(event.result, self._inner_name, self.config.in_band_audit))
        return None  # step progress shows as child runs in the trace


def _chat_result(result: ECSOResult, name: str, audit: bool) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=ai_message(result, name, audit))])


def _with_run_id(config: RunnableConfig | None) -> tuple[RunnableConfig, StreamParent]:
    """``config`` with a run id fixed here, so that ``_stream`` can parent the step runs to it."""
    config = ensure_config(config)
    run_id = config.get("run_id") or uuid.uuid4()
    config = {**config, "run_id": run_id}
    return config, StreamParent(run_id=run_id, config=config)


def _tool_choice(choice: str | dict[str, Any] | bool | None) -> str | dict[str, Any] | None:
    """LangChain's tool_choice spellings in OpenAI form."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice
