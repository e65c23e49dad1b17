"""Any LlamaIndex LLM that accepts image blocks as an ecso backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM

from ecso_core.backends.base import BackendBase, BackendCapabilities
from ecso_core.steps import current_step
from ecso_core.types import ChatReply, ChatRequest, ScoreWords, YesNoScore
from ecso_core.verdict import score_from_tokens

from ._convert import reply_from_chat_response, to_llamaindex_messages
from ._withhold import install, withheld

__all__ = ["ECSOStepEndEvent", "ECSOStepStartEvent", "LlamaIndexBackend"]

dispatcher = get_dispatcher(__name__)


class ECSOStepStartEvent(BaseEvent):
    """An ECSO step's model call starts (one per request in the call)."""

    step: str
    model: str

    @classmethod
    def class_name(cls) -> str:
        """Event name."""
        return "ECSOStepStartEvent"


class ECSOStepEndEvent(BaseEvent):
    """An ECSO step's model call ended: how long it took and its token counts, never its text."""

    step: str
    model: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def class_name(cls) -> str:
        """Event name."""
        return "ECSOStepEndEvent"


class LlamaIndexBackend(BackendBase):
    """Calls a LlamaIndex LLM for each ECSO step, between start/end step events.

    The wrapped LLM's own instrumentation is withheld during the step (see ``_withhold``): its
    events would carry unchecked or flagged text.

    Args:
        llm: the LlamaIndex LLM (multimodal for image requests).
        tools: the LlamaIndex tools that requests may name (``BaseTool`` objects by name); requests
            carry OpenAI-format definitions, the LLM gets the objects back.
        logprobs: read the check from ``ChatResponse.logprobs``: ``"auto"`` when the LLM was built
            with ``logprobs=True``, ``"never"`` or ``"always"``.
        max_images: declared image limit (None: unknown).
        instrument_steps: let the wrapped LLM's own instrumentation of each step through (its events
            carry withheld text: only where every handler is operator-side).

    """

    def __init__(
        self,
        llm: LLM,
        *,
        tools: Sequence[Any] = (),
        logprobs: Literal["auto", "always", "never"] = "auto",
        max_images: int | None = None,
        instrument_steps: bool = False,
    ) -> None:
        install()
        self.llm = llm
        self.instrument_steps = instrument_steps
        self.tools = {tool.metadata.name: tool for tool in tools}
        self.name = str(llm.metadata.model_name)
        self._logprobs = logprobs
        scores = logprobs == "always" or (logprobs == "auto" and bool(getattr(llm, "logprobs", False)))
        self.capabilities = BackendCapabilities(
            score_yes_no=scores,
            max_images=max_images,
            tools=isinstance(llm, FunctionCallingLLM),
            call_options=True,
        )
        self._no_logprobs = False  # learnt at run time: the LLM sends no log-probabilities

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """One reply per request, in order."""
        return [self._call(request) for request in requests]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """All requests concurrently."""
        return list(await asyncio.gather(*(self._acall(request) for request in requests)))

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Yes/no probabilities from the first token's log-probabilities; None where the LLM sent none."""
        if self._no_logprobs:
            return [None] * len(requests)
        return [self._score(reply, r.score_words) for r, reply in zip(requests, self.generate(requests), strict=True)]

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Async :meth:`score_yes_no`."""
        if self._no_logprobs:
            return [None] * len(requests)
        replies = await self.agenerate(requests)
        return [self._score(reply, r.score_words) for r, reply in zip(requests, replies, strict=True)]

    def _call(self, request: ChatRequest) -> ChatReply:
        step, start = self._started()
        messages, tools = to_llamaindex_messages(request), self._tools(request)
        with withheld(not self.instrument_steps):
            if tools:
                response = self.llm.chat_with_tools(  # type: ignore[attr-defined]
                    tools,
                    chat_history=messages,
                    tool_required=request.tool_choice == "required",
                    **request.options,
                )
            else:
                response = self.llm.chat(messages, **request.options)
            reply = self._reply(response, bool(tools))
        return self._ended(step, start, reply)

    async def _acall(self, request: ChatRequest) -> ChatReply:
        step, start = self._started()
        messages, tools = to_llamaindex_messages(request), self._tools(request)
        with withheld(not self.instrument_steps):
            if tools:
                response = await self.llm.achat_with_tools(  # type: ignore[attr-defined]
                    tools,
                    chat_history=messages,
                    tool_required=request.tool_choice == "required",
                    **request.options,
                )
            else:
                response = await self.llm.achat(messages, **request.options)
            reply = self._reply(response, bool(tools))
        return self._ended(step, start, reply)

    def _started(self) -> tuple[str, float]:
        step = current_step() or "call"
        dispatcher.event(ECSOStepStartEvent(step=step, model=self.name))
        return step, time.perf_counter()

    def _ended(self, step: str, start: float, reply: ChatReply) -> ChatReply:
        usage = reply.usage
        latency = time.perf_counter() - start
        dispatcher.event(
            ECSOStepEndEvent(
                step=step,
                model=self.name,
                latency_s=latency,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        )
        return reply

    def _tools(self, request: ChatRequest) -> list[Any]:
        names = [tool.get("function", {}).get("name") for tool in request.tools]
        return [self.tools[name] for name in names if name in self.tools]

    def _reply(self, response: ChatResponse, with_tools: bool) -> ChatReply:
        calls: list[Any] = []
        if with_tools and isinstance(self.llm, FunctionCallingLLM):
            calls = self.llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
        return reply_from_chat_response(response, calls)

    def _score(self, reply: ChatReply, words: ScoreWords | None = None) -> YesNoScore | None:
        logprobs = getattr(reply.raw, "logprobs", None)
        if logprobs:
            return score_from_tokens(((c.token, c.logprob) for c in logprobs[0]), reply.usage.prompt_tokens, words)
        if self._logprobs == "auto":  # none sent: later checks go straight to text
            self._no_logprobs = True
        return None
