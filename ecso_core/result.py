"""The outcome of one guarded request, with a trace of every model call it took."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .types import ChatReply, Message, TokenUsage, ToolCall
from .verdict import Verdict

__all__ = ["Decision", "ECSOResult", "StepName", "StepTrace"]

Decision = Literal["safe", "unsafe", "fail_closed", "no_image"]
StepName = Literal["answer", "check", "caption", "eyes_closed"]


class StepTrace(BaseModel):
    """One model call made by the guard."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StepName
    messages: tuple[Message, ...]
    """The exact messages sent."""
    output: str | None = None
    """The model's reply text (for a scored check: a summary of the probabilities)."""
    latency_s: float = 0.0
    """Wall time of the backend call that served this step (shared by a batched call)."""
    usage: TokenUsage = TokenUsage()
    error: str | None = None
    """Why the call failed, when it did."""


class ECSOResult(BaseModel):
    """What the guard decided and answered for one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: str
    """The text returned to the user."""
    decision: Decision
    initial_answer: str
    """The unguarded step-1 answer (tool calls serialised), kept for audit and evaluation."""
    verdict: Verdict | None = None
    """The self-check's verdict; None when no check ran (``no_image``)."""
    captions: tuple[str, ...] = ()
    """The query-aware captions (sanitised), one per distinct image, on the unsafe path."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls of the final answer (step 1 when safe, the eyes-closed answer otherwise)."""
    steps: tuple[StepTrace, ...] = ()
    prompt_set: str = "ecso-paper"
    finish_reason: str | None = None

    @property
    def usage(self) -> TokenUsage:
        """Token counts summed over all steps."""
        total = TokenUsage()
        for step in self.steps:
            total = total + step.usage
        return total

    def to_reply(self) -> ChatReply:
        """The result as a backend reply (``raw`` holds this result), so the guard can act as a backend."""
        return ChatReply(
            text=self.answer, tool_calls=self.tool_calls, usage=self.usage, finish_reason=self.finish_reason, raw=self
        )

    def summary(self) -> dict[str, Any]:
        """The short form the adapters attach to their outputs (``decision``, answers, captions)."""
        return {
            "decision": self.decision,
            "initial_answer": self.initial_answer,
            "captions": list(self.captions),
            "verdict": self.verdict.model_dump() if self.verdict else None,
            "prompt_set": self.prompt_set,
            "steps": [s.name for s in self.steps],
        }
