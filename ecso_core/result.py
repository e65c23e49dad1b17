"""The outcome of one guarded request, with a trace of every model call it took."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ._model import ECSOModel
from .types import ChatReply, Decision, Message, StepName, TokenUsage, ToolCall

__all__ = ["Decision", "ECSOResult", "StepName", "StepTrace", "Verdict"]


class Verdict(ECSOModel):
    """Outcome of the harm-aware self-check (over every window of the answer)."""

    unsafe: bool | None
    """True: harmful; False: safe; None: no usable verdict (check failed, unparseable, or too little mass)."""
    method: Literal["probability", "text", "failed", "no_gate"]
    """How it was decided: first-token probabilities, the judge's reply text, not at all, or by
    configuration (``ECSOConfig.gate`` off: every request with images is answered eyes closed)."""
    profile: str = "ecso"
    """The judge profile that asked and read the check (see :mod:`ecso_core.judging`)."""
    categories: tuple[str, ...] = ()
    """The hazard categories or policies the judge named for an unsafe verdict (e.g. ``S1``, ``dangerous``)."""
    raw: str | None = None
    """The judge's reply text (text verdicts)."""
    p_yes: float | None = None
    """P(yes) / (P(yes) + P(no)) of the first answer token (probability verdicts)."""
    mass: float | None = None
    """P(yes) + P(no) of the first answer token: how much of the judge's belief the verdict rests on."""
    fallback: str | None = None
    """Why the verdict was read from text although probabilities were asked for (none given, low mass)."""
    error: str | None = None
    """Why there is no verdict, when ``unsafe`` is None."""
    window: int | None = None
    """Index of the answer window that decided an unsafe or failed verdict (None when safe)."""
    windows: int = 1
    """How many windows of the answer were judged."""
    parts: tuple[Verdict, ...] = ()
    """The verdict of each window, when there was more than one."""


class StepTrace(ECSOModel):
    """One model call made by the guard."""

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


class ECSOResult(ECSOModel):
    """What the guard decided and answered for one request."""

    answer: str
    """The text returned to the user."""
    decision: Decision
    initial_answer: str
    """The unguarded step-1 answer (tool calls serialised), kept in-process for audit and evaluation;
    never client-visible unless released (see :meth:`client_summary`)."""
    verdict: Verdict | None = None
    """The self-check's verdict; None when no check ran (``no_image``)."""
    captions: tuple[str, ...] = ()
    """The query-aware captions (sanitised), one per distinct image, on the unsafe path."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls of the final answer (step 1 when safe, the eyes-closed answer otherwise)."""
    steps: tuple[StepTrace, ...] = ()
    prompt_set: str = "ecso-paper"
    finish_reason: str | None = None
    released: ChatReply | None = Field(default=None, exclude=True, repr=False)
    """The model reply that was released (step 1 when safe, else the eyes-closed answer), with the
    provider's own object in ``raw`` (adapters carry its structured-output fields); in-process only,
    None when the guard answered itself (a refusal)."""

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

    def client_summary(self, audit: bool = False) -> dict[str, Any]:
        """What a client may see of this result: the decision and how it was reached.

        Containment: the withheld step-1 answer, the captions and the judge's reply text never leave
        through client-visible metadata unless ``audit`` is set (``ECSOConfig.in_band_audit``); the
        judge's reply is shown when the decision is ``safe`` (then the step-1 answer is the released
        answer). This object keeps everything in-process, for operator-side audit trails.
        """
        verdict = self.verdict
        shown: dict[str, Any] | None = None
        if verdict is not None:
            shown = verdict.model_dump(mode="json", include=_CLIENT_VERDICT_FIELDS)
            if self.decision == "safe" or audit:
                shown["raw"] = verdict.raw
        summary: dict[str, Any] = {
            "decision": self.decision,
            "verdict": shown,
            "prompt_set": self.prompt_set,
            "steps": [s.name for s in self.steps],
        }
        if audit:
            summary.update(
                initial_answer=self.initial_answer,
                captions=list(self.captions),
                verdict=verdict.model_dump(mode="json") if verdict else None,
            )
        return summary


_CLIENT_VERDICT_FIELDS = {
    "unsafe",
    "method",
    "profile",
    "categories",
    "p_yes",
    "mass",
    "fallback",
    "window",
    "windows",
}
