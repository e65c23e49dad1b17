"""Turning the self-check's output into a verdict.

The official code counts only the exact replies "yes" / "yes." as unsafe, so "Yes, it is harmful"
passes as safe (fail-open). Here a probability verdict compares P(yes) with P(no) when the two carry
enough of the first token's mass; a text verdict reads the reply's leading word; anything else is no
verdict and the guard fails closed. A long answer is judged in windows, and is safe only when every
window is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import BackendError
from .result import Verdict
from .types import ScoreWords, TokenUsage, YesNoScore

__all__ = [
    "Verdict",
    "combine_verdicts",
    "parse_verdict_text",
    "score_from_logprobs",
    "score_from_tokens",
    "starts_word",
    "verdict_from_score",
    "verdict_from_text",
    "worst_verdict",
]

_LEADING_WORD = re.compile(r"^[\s\"'`*_(\[]*([A-Za-z]+)")


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


def verdict_from_score(score: YesNoScore, threshold: float, min_mass: float = 0.0) -> Verdict:
    """A probability verdict: unsafe when P(yes) / (P(yes) + P(no)) >= ``threshold``.

    When P(yes) + P(no) is zero or below ``min_mass`` the judge's first token was mostly something
    else ("I", "The", ...): the score is no verdict (``unsafe`` None, ``method="probability"``) and the
    guard reads the judge's text instead, or fails closed, as configured.
    """
    mass = score.p_yes + score.p_no
    if mass <= 0.0 or mass < min_mass:
        error = f"P(yes) + P(no) = {mass:.3g}, below the floor of {min_mass:g}"
        return Verdict(unsafe=None, method="probability", mass=mass, error=error)
    p_yes = score.p_yes / mass
    return Verdict(unsafe=p_yes >= threshold, method="probability", p_yes=p_yes, mass=mass)


def _deciding(verdicts: Sequence[Verdict]) -> tuple[int, bool]:
    """Index of the verdict that decides a set, and whether it is unsafe or failed.

    The first unsafe one, else the first without a verdict, else the safe one most inclined to "yes".
    """
    deciding = next((i for i, v in enumerate(verdicts) if v.unsafe is True), None)
    if deciding is None:
        deciding = next((i for i, v in enumerate(verdicts) if v.unsafe is None), None)
    if deciding is None:
        return max(range(len(verdicts)), key=lambda i: verdicts[i].p_yes or 0.0), False
    return deciding, True


def _categories(verdicts: Sequence[Verdict]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for v in verdicts if v.unsafe is True for c in v.categories))


def worst_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict over the requests of one check (one per image, or per image and policy).

    Unsafe if any is, no verdict if any has none, else safe; the categories of every unsafe one are kept.
    """
    index, _ = _deciding(verdicts)
    return verdicts[index].model_copy(update={"categories": _categories(verdicts)})


def combine_verdicts(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict over the windows of an answer: safe only when every window is safe.

    The first unsafe window decides; else the first window without a verdict (the guard fails
    closed); else the answer is safe and the verdict shown is the window most inclined to "yes".
    The categories are those of every unsafe window.
    """
    count = len(verdicts)
    deciding, flagged = _deciding(verdicts)
    return verdicts[deciding].model_copy(
        update={
            "window": deciding if flagged else None,
            "windows": count,
            "parts": tuple(verdicts) if count > 1 else (),
            "categories": _categories(verdicts),
        }
    )


def starts_word(piece: str, word: str) -> bool:
    """Whether a first token ``piece`` stands for ``word``.

    The word itself, or (two characters or more) its start, as a tokenizer without the whole word
    writes it ("un" of "unsafe").
    """
    return piece == word or (len(piece) >= 2 and word.startswith(piece))


def _side(token: str, unsafe: tuple[str, ...], safe: tuple[str, ...]) -> str | None:
    """Which side a first token stands for, if any: a word of one side, or the start of words of one side only."""
    if token in unsafe:
        return "unsafe"
    if token in safe:
        return "safe"
    starts_unsafe = any(starts_word(token, w) for w in unsafe)
    starts_safe = any(starts_word(token, w) for w in safe)
    return "unsafe" if starts_unsafe and not starts_safe else "safe" if starts_safe and not starts_unsafe else None


def score_from_tokens(
    candidates: Iterable[tuple[str, float]], prompt_tokens: int = 0, words: ScoreWords | None = None
) -> YesNoScore:
    """P(yes) and P(no) from first-token alternatives ``(token, logprob)``, spellings summed.

    ``words`` (unsafe spellings, safe spellings) replaces yes/no (Llama Guard's ``unsafe`` / ``safe``):
    tokens are compared with them exactly, surrounding space aside (a profile lists the casings it
    accepts); yes/no are compared in any case. A token of two characters or more that starts words of
    one side only counts for that side (the first piece of a word split in two).

    Raises:
        BackendError: impossible log-probabilities (positive, infinite or NaN, or alternatives whose
            probabilities sum past 1): a judge that sends them is broken, and the check fails closed.

    """
    fold = str.lower if words is None else str  # yes/no in any case; a profile's spellings exactly
    unsafe_words, safe_words = (("yes",), ("no",)) if words is None else words
    unsafe = tuple(fold(w.strip()) for w in unsafe_words)
    safe = tuple(fold(w.strip()) for w in safe_words)
    p_yes = p_no = total = 0.0
    for token, logprob in candidates:
        if math.isnan(logprob) or logprob > 1e-6:
            raise BackendError(f"the judge sent an impossible log-probability ({logprob})")
        probability = math.exp(logprob)
        total += probability
        side = _side(fold(token.strip()), unsafe, safe)
        if side == "unsafe":
            p_yes += probability
        elif side == "safe":
            p_no += probability
    if total > 1.0 + 1e-3:
        raise BackendError(f"the judge's first-token alternatives sum to {total:.3f} > 1")
    return YesNoScore(p_yes=min(p_yes, 1.0), p_no=min(p_no, 1.0), usage=TokenUsage(prompt_tokens=prompt_tokens))


def score_from_logprobs(logprobs: Any, prompt_tokens: int = 0, words: ScoreWords | None = None) -> YesNoScore | None:
    """P(yes) and P(no) from an OpenAI ``logprobs`` object (its first token's ``top_logprobs``).

    Spellings are summed ("Yes", " yes", "YES" ...; or ``words``, see :func:`score_from_tokens`). None
    when there are no log-probabilities.
    """
    try:
        first = logprobs["content"][0]
        candidates = list(first.get("top_logprobs") or [])
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not any(c.get("token") == first.get("token") for c in candidates):
        candidates.append(first)  # the token actually written counts, listed among the alternatives or not
    pairs = ((str(c.get("token", "")), float(c.get("logprob", -math.inf))) for c in candidates)
    return score_from_tokens(pairs, prompt_tokens, words)
