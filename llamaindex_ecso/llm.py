"""``ECSOMultiModalLLM``: ECSO as a LlamaIndex LLM that takes ``ImageBlock``s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import ConfigDict, Field, SerializeAsAny, SkipValidation, model_validator

from ecso_core.backends.base import VisionChatBackend
from ecso_core.config import ECSOConfig
from ecso_core.guard import ECSO, StreamEnd, TextDelta
from ecso_core.result import ECSOResult
from ecso_core.types import ChatRequest, GenerationParams

from ._convert import chat_response, to_ecso_request, tool_selections, with_user_message
from ._decisions import raising, record
from .backend import LlamaIndexBackend

__all__ = ["ECSOMultiModalLLM"]


class ECSOMultiModalLLM(FunctionCallingLLM):
    """A LlamaIndex LLM guarded by ECSO ("Eyes Closed, Safety On").

    Wrap any LlamaIndex LLM (``ECSOMultiModalLLM(llm=OpenAI(model="gpt-4o"))``) or an ecso backend
    (``ECSOMultiModalLLM(backend=load_backend("hf:..."))``) and use it as ``Settings.llm``, in chat
    engines, multimodal query engines and agents. Images arrive as ``ImageBlock``s; the guard's image
    policy applies before anything reads them, and a text block holding a file's bytes (an image read
    as text, e.g. by ``SimpleDirectoryReader`` without ``llama-index-readers-file``) is a
    ``MessageError``. Responses carry ``additional_kwargs["ecso"]`` (the result's client summary: no
    withheld text); wrap a query engine in ``ECSOQueryEngine`` to get it in ``Response.metadata``.
    The wrapped LLM's instrumentation of the ECSO steps is withheld; handlers see
    ``ECSOStepStartEvent``/``ECSOStepEndEvent`` and this LLM's own events.

    It is a function-calling LLM: ``metadata.is_function_calling_model`` follows the wrapped model, so
    ``FunctionAgent`` works exactly when the wrapped LLM can call tools (``ReActAgent`` always works).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # llm, backend and judge: checked by _one_model and when the guard is built, not by pydantic, and
    # serialised as the objects they hold (an LLM subclass with all its fields)
    llm: Annotated[LLM | None, SkipValidation(), SerializeAsAny()] = Field(
        default=None, description="The LlamaIndex LLM to guard."
    )
    backend: Annotated[VisionChatBackend | None, SkipValidation(), SerializeAsAny()] = Field(
        default=None, description="Or: an ecso VisionChatBackend to guard."
    )
    judge: Annotated[LLM | VisionChatBackend | None, SkipValidation(), SerializeAsAny()] = Field(
        default=None, description="Optional separate LLM or backend for the self-check."
    )
    config: ECSOConfig = Field(default_factory=ECSOConfig, description="The guard's configuration.")
    max_tokens: int | None = Field(default=None, description="Most new tokens per answer (ecso backends).")
    instrument_steps: bool = Field(
        default=False,
        description="Let the wrapped LLM's own instrumentation of each ECSO step through. Its events carry "
        "withheld text (the step-1 answer while checked, flagged answers, captions): only where every "
        "instrumentation handler is operator-side.",
    )
    audit: Any = Field(
        default=None, description="Called with every ECSOResult, withheld text included (operator-side)."
    )

    @model_validator(mode="after")
    def _one_model(self) -> ECSOMultiModalLLM:
        if (self.llm is None) == (self.backend is None):
            raise ValueError("ECSOMultiModalLLM needs exactly one of llm= (a LlamaIndex LLM) or backend=")
        if self.llm is not None and not isinstance(self.llm, LLM):
            raise ValueError("llm= must be a LlamaIndex LLM")
        if self.backend is not None and not isinstance(self.backend, VisionChatBackend):
            raise ValueError("backend= must be an ecso VisionChatBackend (see ecso_core.load_backend)")
        return self

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation and tracing."""
        return "ECSOMultiModalLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The wrapped model's metadata, as a chat model, under an ``ecso(...)`` name."""
        if self.llm is not None:
            inner = self.llm.metadata
            return LLMMetadata(
                context_window=inner.context_window,
                num_output=inner.num_output,
                is_chat_model=True,
                is_function_calling_model=inner.is_function_calling_model,
                model_name=f"ecso({inner.model_name})",
            )
        assert self.backend is not None  # _one_model: a backend when there is no llm
        return LLMMetadata(
            is_chat_model=True,
            is_function_calling_model=self.backend.capabilities.tools,
            model_name=f"ecso({self.backend.name})",
        )

    # ---- chat -----------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded chat."""
        with raising():
            guard, request = self._prepare(messages, kwargs)
            return _released(guard.run(request), self.config.in_band_audit)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Guarded async chat."""
        with raising():
            guard, request = self._prepare(messages, kwargs)
            return _released(await guard.arun(request), self.config.in_band_audit)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Guarded streaming chat: nothing is emitted before the verdict."""
        with raising():
            guard, request = self._prepare(messages, kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            with raising():
                for event in guard.stream(request):
                    text, response = _streamed(event, text, self.config.in_band_audit)
                    if response is not None:
                        yield response

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Guarded async streaming chat."""
        with raising():
            guard, request = self._prepare(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            with raising():
                async for event in guard.astream(request):
                    text, response = _streamed(event, text, self.config.in_band_audit)
                    if response is not None:
                        yield response

        return gen()

    # ---- completion -------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Guarded completion of a text prompt (a single user turn)."""
        return _completion(self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        return _completion(await self.achat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Streaming :meth:`complete`."""
        responses = self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return (_completion(r) for r in responses)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """Async streaming :meth:`complete`."""
        responses = await self.astream_chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            async for response in responses:
                yield _completion(response)

        return gen()

    # ---- tools ------------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = with_user_message(chat_history, user_msg)
        return {"messages": messages, "tools": list(tools), "tool_required": tool_required, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's tool calls (its ``ToolCallBlock``s)."""
        return tool_selections(response, error_on_no_tool_call)

    # ---- internals --------------------------------------------------------------------------------

    def _prepare(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[ECSO, ChatRequest]:
        tools = list(kwargs.get("tools") or [])
        steps = self.instrument_steps
        backend: VisionChatBackend
        if self.llm is not None:
            backend = LlamaIndexBackend(self.llm, tools=tools, instrument_steps=steps)
        else:
            assert self.backend is not None  # _one_model: a backend when there is no llm
            backend = self.backend
        judge = self.judge
        if judge is not None and not isinstance(judge, VisionChatBackend):
            judge = LlamaIndexBackend(judge, instrument_steps=steps)
        params = GenerationParams(max_new_tokens=self.max_tokens or GenerationParams().max_new_tokens)
        request = to_ecso_request(
            messages,
            tools=[tool.metadata.to_openai_tool() for tool in tools],
            tool_choice="required" if kwargs.get("tool_required") else None,
            params=params,
        )
        return ECSO(backend, self.config, judge=judge, audit=self.audit), request


def _streamed(event: Any, text: str, audit: bool) -> tuple[str, ChatResponse | None]:
    """The text so far and the response to emit for one guard stream event (None for progress events)."""
    if isinstance(event, TextDelta):
        text += event.text
        return text, ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=event.text)
    if isinstance(event, StreamEnd):
        return text, _released(event.result, audit, delta="")
    return text, None


def _released(result: ECSOResult, audit: bool, delta: str | None = None) -> ChatResponse:
    """The response for a decided call; its client summary is reported to open collectors (``ECSOQueryEngine``)."""
    response = chat_response(result, delta=delta, audit=audit)
    record(response.additional_kwargs["ecso"])
    return response


def _completion(response: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        additional_kwargs=response.additional_kwargs,
        raw=response.raw,
    )
