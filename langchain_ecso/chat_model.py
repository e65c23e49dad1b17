"""``ChatECSO``: ECSO as a LangChain chat model, usable wherever a chat model goes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, model_validator

from ecso_core.backends.base import VisionChatBackend
from ecso_core.config import ECSOConfig
from ecso_core.guard import ECSO, StreamEnd, TextDelta
from ecso_core.result import ECSOResult
from ecso_core.types import ChatRequest, GenerationParams

from ._convert import ai_message, final_chunk, to_ecso_request
from .backend import LangChainBackend, model_name

__all__ = ["ChatECSO"]


class ChatECSO(BaseChatModel):
    """A chat model guarded by ECSO ("Eyes Closed, Safety On").

    Wrap a LangChain chat model (``ChatECSO(model=ChatOpenAI(model="gpt-4o"))``) or an ecso backend
    (``ChatECSO(backend=load_backend("hf:..."))``) and use it anywhere a chat model goes. Every answer
    carries ``response_metadata["ecso"]`` (decision, initial answer, captions, verdict, steps) and
    ``usage_metadata`` summed over all steps. Streaming emits text only after the verdict.
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

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = self._guard(_child(run_manager)).run(self._request(messages, stop, kwargs))
        return _chat_result(result, self._inner_name)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await self._guard(_achild(run_manager)).arun(self._request(messages, stop, kwargs))
        return _chat_result(result, self._inner_name)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        guard = self._guard(_child(run_manager))
        for event in guard.stream(self._request(messages, stop, kwargs)):
            chunk = self._chunk(event)
            if chunk is None:
                continue
            if run_manager is not None and isinstance(event, TextDelta):
                run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        guard = self._guard(_achild(run_manager))
        async for event in guard.astream(self._request(messages, stop, kwargs)):
            chunk = self._chunk(event)
            if chunk is None:
                continue
            if run_manager is not None and isinstance(event, TextDelta):
                await run_manager.on_llm_new_token(event.text, chunk=chunk)
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
        return ECSO(backend, self.config, judge=judge)

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
            return ChatGenerationChunk(message=final_chunk(event.result, self._inner_name))
        return None  # step progress shows as child runs in the trace


def _chat_result(result: ECSOResult, name: str) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=ai_message(result, name))])


def _tool_choice(choice: str | dict[str, Any] | bool | None) -> str | dict[str, Any] | None:
    """LangChain's tool_choice spellings in OpenAI form."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def _child(run_manager: Any, manager_class: type = CallbackManager) -> Any:
    """A child callback manager of this run (LLM run managers do not offer ``get_child``)."""
    if run_manager is None:
        return None
    manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _achild(run_manager: AsyncCallbackManagerForLLMRun | None) -> AsyncCallbackManager | None:
    return _child(run_manager, AsyncCallbackManager)
