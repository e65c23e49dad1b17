"""``ScriptedLLM``: a LlamaIndex function-calling LLM that replies from a script, for tests and examples.

Its methods take the arguments of LlamaIndex's own ``FunctionCallingLLM`` (``chat_with_tools`` passes
``tool_required``, ``allow_parallel_tool_calls`` and any provider keyword on to ``chat``, as real
integrations do), so what a test sees is what a provider would get. Script it by step with
:func:`ecso_core.by_step`, as ``ScriptedBackend``::

    ScriptedLLM(reply=by_step(answer="Sure, step 1...", check="Yes", caption="a list", eyes_closed="No."))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field

from ecso_core.backends.scripted import call_script
from ecso_core.steps import current_step
from ecso_core.types import StepName

from ._convert import tool_selections, with_user_message

__all__ = ["ScriptedLLM"]


def _default_reply(messages: Sequence[ChatMessage], **kwargs: Any) -> str:
    return "Hello! This is a scripted answer."


class ScriptedLLM(FunctionCallingLLM):
    """Replies with ``reply(messages, **kwargs)``: a string or a ``ChatMessage`` (e.g. with ``ToolCallBlock``s).

    The script gets the call's keyword arguments its signature takes (all of them with ``**kwargs``;
    none for ``reply(messages)``); :func:`ecso_core.by_step` makes a script that answers by ECSO step.
    Every call is appended to :attr:`calls` as ``(messages, kwargs)``, and the ECSO step it served (None
    outside the guard) to :attr:`steps`. Through ``chat_with_tools`` the kwargs hold ``tools``,
    ``tool_required``, ``allow_parallel_tool_calls`` and the caller's other keywords. It can stand in for
    any multimodal LLM.
    """

    reply: Callable[..., Any] = Field(default=_default_reply, exclude=True)
    """The script: a function of the messages (and keyword arguments); not serialised."""
    calls: list[tuple[list[ChatMessage], dict[str, Any]]] = Field(default_factory=list, exclude=True)
    """Every call received, in order."""
    steps: list[StepName | None] = Field(default_factory=list, exclude=True)
    """The ECSO step each call served (None: called outside the guard), in the order of :attr:`calls`."""
    function_calling: bool = True
    """Declare function calling (``metadata.is_function_calling_model``)."""

    @classmethod
    def class_name(cls) -> str:
        """Name for LlamaIndex."""
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """A chat model; function calling as configured."""
        return LLMMetadata(is_chat_model=True, is_function_calling_model=self.function_calling, model_name="scripted")

    def _respond(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        """Record the call and serve the script's reply (every public method goes through here once)."""
        self.calls.append((list(messages), kwargs))
        self.steps.append(current_step())
        out = call_script(self.reply, list(messages), kwargs)
        message = out if isinstance(out, ChatMessage) else ChatMessage(role=MessageRole.ASSISTANT, content=str(out))
        words = sum(len(str(m.content or "").split()) for m in messages)
        return ChatResponse(
            message=message,
            additional_kwargs={"prompt_tokens": words, "completion_tokens": len(str(message.content or "").split())},
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Serve the script's reply."""
        return self._respond(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`."""
        return self._respond(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The whole reply as one chunk."""
        response = self._respond(messages, kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        response = self._respond(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return gen()

    def _complete(self, prompt: str, kwargs: dict[str, Any]) -> CompletionResponse:
        response = self._respond([ChatMessage(role=MessageRole.USER, content=prompt)], kwargs)
        return CompletionResponse(text=response.message.content or "", additional_kwargs=response.additional_kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Chat with the prompt as a user turn."""
        return self._complete(prompt, kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        return self._complete(prompt, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """The whole completion as one chunk."""
        response = self._complete(prompt, kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        response = self._complete(prompt, kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()

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
        # As a provider integration does: the tool options and every other keyword reach ``chat``.
        return {
            "messages": with_user_message(chat_history, user_msg),
            "tools": list(tools),
            "tool_required": tool_required,
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's tool calls (its ``ToolCallBlock``s)."""
        return tool_selections(response, error_on_no_tool_call)
