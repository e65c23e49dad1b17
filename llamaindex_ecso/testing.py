"""``ScriptedLLM``: a LlamaIndex function-calling LLM that replies from a script, for tests and examples."""

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

from ._convert import tool_selections, with_user_message

__all__ = ["ScriptedLLM"]


def _default_reply(messages: Sequence[ChatMessage], **kwargs: Any) -> str:
    return "Hello! This is a scripted answer."


class ScriptedLLM(FunctionCallingLLM):
    """Replies with ``reply(messages, **kwargs)``: a string or a ``ChatMessage`` (e.g. with ``ToolCallBlock``s).

    Every call is appended to :attr:`calls` as ``(messages, kwargs)``; tools given through
    ``chat_with_tools`` arrive in ``kwargs["tools"]``. It can stand in for any multimodal LLM.
    """

    reply: Callable[..., Any] = Field(default=_default_reply, exclude=True)
    calls: list[tuple[list[ChatMessage], dict[str, Any]]] = Field(default_factory=list, exclude=True)
    function_calling: bool = True

    @classmethod
    def class_name(cls) -> str:
        """Name for LlamaIndex."""
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """A chat model; function calling as configured."""
        return LLMMetadata(is_chat_model=True, is_function_calling_model=self.function_calling, model_name="scripted")

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Serve the script's reply."""
        self.calls.append((list(messages), kwargs))
        out = self.reply(list(messages), **kwargs)
        message = out if isinstance(out, ChatMessage) else ChatMessage(role=MessageRole.ASSISTANT, content=str(out))
        words = sum(len(str(m.content or "").split()) for m in messages)
        return ChatResponse(
            message=message,
            additional_kwargs={"prompt_tokens": words, "completion_tokens": len(str(message.content or "").split())},
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`."""
        return self.chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The whole reply as one chunk."""
        response = self.chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        response = self.chat(messages, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            yield ChatResponse(message=response.message, delta=response.message.content or "")

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Chat with the prompt as a user turn."""
        return CompletionResponse(text=self.chat([ChatMessage(role=MessageRole.USER, content=prompt)]).message.content)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        return self.complete(prompt, formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """The whole completion as one chunk."""
        response = self.complete(prompt, formatted, **kwargs)
        return iter([CompletionResponse(text=response.text, delta=response.text)])

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        response = self.complete(prompt, formatted, **kwargs)

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
        messages = with_user_message(chat_history, user_msg)
        return {"messages": messages, "tools": list(tools)}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's tool calls (its ``ToolCallBlock``s)."""
        return tool_selections(response, error_on_no_tool_call)
