"""``ScriptedChatModel``: a LangChain chat model that replies from a script, for tests and examples.

Unlike LangChain's fake chat models it supports ``bind_tools``, so agents (``create_agent``) and
``ECSOMiddleware`` can be tested with it, streams word by word like a provider (so event streams
see its tokens), and records every call with its keyword arguments and the ECSO step it served.
Script it by step with :func:`ecso_core.by_step`, as ``ScriptedBackend``::

    ScriptedChatModel(reply=by_step(answer="Sure, step 1...", check="Yes", caption="a list", eyes_closed="No."))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from ecso_core.backends.scripted import call_script
from ecso_core.steps import current_step
from ecso_core.types import StepName

__all__ = ["ScriptedChatModel"]

_WORDS = re.compile(r"\s+|\S+\s*")


def _default_reply(messages: list[BaseMessage]) -> str:
    return "Hello! This is a scripted answer."


class ScriptedChatModel(BaseChatModel):
    """Replies with ``reply(messages, **kwargs)``: a string or an ``AIMessage``.

    The script gets the call's keyword arguments its signature takes (all of them with ``**kwargs``;
    none for ``reply(messages)``); :func:`ecso_core.by_step` makes a script that answers by ECSO step.
    Every call is appended to :attr:`calls` as ``(messages, kwargs)``, and the ECSO step it served
    (None outside the guard) to :attr:`steps`; bound tools arrive in ``kwargs["tools"]``. Usage
    metadata is a rough count (characters / 4). ``logprobs=True`` marks the model as one that returns
    log-probabilities (put them in the reply's ``response_metadata``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reply: Callable[..., Any] = Field(default=_default_reply, exclude=True)
    """The script: a function of the messages (and keyword arguments); not serialised."""
    calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list, exclude=True)
    """Every call received, in order."""
    steps: list[StepName | None] = Field(default_factory=list, exclude=True)
    """The ECSO step each call served (None: called outside the guard), in the order of :attr:`calls`."""
    logprobs: bool = False
    """Declare that replies carry log-probabilities."""

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _resolve_model_profile(self) -> ModelProfile | None:
        # It stands in for a VLM with tool calling (pass profile=... to play another model).
        return ModelProfile(text_inputs=True, image_inputs=True, tool_calling=True, tool_choice=True)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Serialisable; a revived copy has the default script (functions do not serialise)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["langchain_ecso", "testing"]``."""
        return ["langchain_ecso", "testing"]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append((messages, {"stop": stop, **kwargs}))
        self.steps.append(current_step())
        out = call_script(self.reply, messages, kwargs)
        if isinstance(out, str):
            text = out
            if stop:
                for word in stop:
                    text = text.split(word)[0]
            out = AIMessage(content=text)
        tokens = sum(len(str(m.content)) for m in messages) // 4 + 1
        out.usage_metadata = {
            "input_tokens": tokens,
            "output_tokens": len(str(out.content)) // 4 + 1,
            "total_tokens": tokens + len(str(out.content)) // 4 + 1,
        }
        return ChatResult(generations=[ChatGeneration(message=out)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # Word by word, as a streaming provider does (LangChain streams when an event stream listens).
        message = self._generate(messages, stop, **kwargs).generations[0].message
        for piece in _WORDS.findall(str(message.content)):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(getattr(message, "tool_calls", []))
        ]
        last = AIMessageChunk(
            content="",
            tool_call_chunks=calls,
            usage_metadata=getattr(message, "usage_metadata", None),
            response_metadata=message.response_metadata,
        )
        yield ChatGenerationChunk(message=last)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Bind tools (converted to OpenAI format); they reach the script as ``kwargs["tools"]``."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)
