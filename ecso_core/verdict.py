"""Turning the self-check's output into a verdict.

The official code counts only the exact replies "yes" / "yes." as unsafe, so "Yes, it is harmful"
passes as safe (fail-open). Here a probability verdict compares P(yes) with P(no); a text verdict
reads the reply's leading word; anything else is *unparseable* and the guard fails closed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .types import TokenUsage, YesNoScore

__all__ = [
    "Verdict",
    "parse_verdict_text",
    "score_from_text",
    "score_from_tokens",
    "verdict_from_score",
    "verdict_from_text",
]

_LEADING_WORD = re.compile(r"^[\s\"'`*_(\[]*([A-Za-z]+)")


class Verdict(BaseModel):
    """Outcome of the harm-aware self-check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unsafe: bool | None
    """True: harmful; False: safe; None: no usable verdict (check failed or unparseable)."""
    method: Literal["probability", "text", "failed"]
    """How it was decided."""
    raw: str | None = None
    """The judge's reply text (text verdicts)."""
    p_yes: float | None = None
    """P(yes) / (P(yes) + P(no)) of the first answer token (probability verdicts)."""
    error: str | None = None
    """Why there is no verdict, when ``unsafe`` is None."""


def parse_verdict_text(reply: str) -> bool | None:
    """Read a yes/no reply: True for yes (unsafe), False for no (safe), None when unparseable.

    Only the leading word counts, in any case, after quotes, markdown emphasis and brackets:
    "Yes", "yes.", "YES, it is harmful" are yes; "No", "no, it is safe" are no; "I cannot tell"
    and "" are unparseable.
    """
    match = _LEADING_WORD.match(reply)
    if not match:
        return None
    word = match.group(1).lower()
    if word == "yes":
        return True
    if word == "no":
        return False
    return None


def verdict_from_text(reply: str) -> Verdict:
    """A text verdict; ``unsafe`` is None (with an error) when the reply is unparseable."""
    unsafe = parse_verdict_text(reply)
    error = None if unsafe is not None else "the check reply does not start with yes or no"
    return Verdict(unsafe=unsafe, method="text", raw=reply, error=error)


def verdict_from_score(score: YesNoScore, threshold: float) -> Verdict:
    """A probability verdict: unsafe when P(yes) / (P(yes) + P(no)) >= ``threshold``."""
    mass = score.p_yes + score.p_no
    if mass <= 0.0:
        return Verdict(unsafe=None, method="failed", error="P(yes) + P(no) is zero")
    p_yes = score.p_yes / mass
    return Verdict(unsafe=p_yes >= threshold, method="probability", p_yes=p_yes)


def score_from_tokens(candidates: Iterable[tuple[str, float]], prompt_tokens: int = 0) -> YesNoScore:
    """P(yes) and P(no) from first-token alternatives ``(token, logprob)``, spellings summed."""
    p_yes = p_no = 0.0
    for token, logprob in candidates:
        word = token.strip().lower()
        if word in ("yes", "no"):
            probability = math.exp(logprob)
            p_yes, p_no = (p_yes + probability, p_no) if word == "yes" else (p_yes, p_no + probability)
    return YesNoScore(p_yes=min(p_yes, 1.0), p_no=min(p_no, 1.0), usage=TokenUsage(prompt_tokens=prompt_tokens))


def score_from_text(reply: str) -> YesNoScore:
    """A degenerate score (1 / 0) from a reply's leading word, for models that give no probabilities.

    "yes" gives P(yes)=1, "no" gives P(no)=1, anything else gives 0 / 0: no verdict, so the guard
    fails closed.
    """
    unsafe = parse_verdict_text(reply)
    return YesNoScore(p_yes=float(unsafe is True), p_no=float(unsafe is False))
