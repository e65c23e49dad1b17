"""Verdict parsing: leading word for text, P(yes) vs P(no) for scores."""

from __future__ import annotations

import pytest

from ecso_core import YesNoScore
from ecso_core.verdict import Verdict, combine_verdicts, parse_verdict_text, verdict_from_score, verdict_from_text


@pytest.mark.parametrize(
    ("reply", "unsafe"),
    [
        ("Yes", True),
        ("yes.", True),
        ("YES, it is harmful", True),
        ("  **Yes**", True),
        ('"yes"', True),
        ("No", False),
        ("no, it is safe", False),
        ("NO.", False),
        ("(no)", False),
        ("I cannot tell", None),
        ("", None),
        ("Yesterday it rained", None),
        ("Nope", None),
        ("Not harmful", None),
        ("The answer is yes", None),
    ],
)
def test_leading_word_table(reply: str, unsafe: bool | None) -> None:
    assert parse_verdict_text(reply) is unsafe
    verdict = verdict_from_text(reply)
    assert verdict.unsafe is unsafe
    assert verdict.raw == reply
    assert verdict.method == "text"
    assert (verdict.error is None) == (unsafe is not None)


@pytest.mark.parametrize(
    ("p_yes", "p_no", "threshold", "unsafe", "normalised"),
    [
        (0.6, 0.2, 0.5, True, 0.75),
        (0.2, 0.6, 0.5, False, 0.25),
        (0.3, 0.3, 0.5, True, 0.5),
        (0.2, 0.6, 0.2, True, 0.25),
        (0.001, 0.002, 0.5, False, 1 / 3),
    ],
)
def test_probability_verdicts(p_yes: float, p_no: float, threshold: float, unsafe: bool, normalised: float) -> None:
    verdict = verdict_from_score(YesNoScore(p_yes=p_yes, p_no=p_no), threshold)
    assert verdict.unsafe is unsafe
    assert verdict.method == "probability"
    assert verdict.p_yes == pytest.approx(normalised)


def test_zero_mass_is_no_verdict() -> None:
    verdict = verdict_from_score(YesNoScore(p_yes=0.0, p_no=0.0), 0.5)
    assert verdict.unsafe is None
    assert verdict.method == "probability"
    assert verdict.mass == 0.0


@pytest.mark.parametrize(("p_yes", "p_no"), [(1e-7, 3e-7), (0.2, 0.2), (0.0, 0.49)])
def test_mass_below_the_floor_is_no_verdict(p_yes: float, p_no: float) -> None:
    verdict = verdict_from_score(YesNoScore(p_yes=p_yes, p_no=p_no), 0.5, min_mass=0.5)
    assert verdict.unsafe is None
    assert verdict.p_yes is None
    assert verdict.mass == pytest.approx(p_yes + p_no)
    assert "below the floor of 0.5" in verdict.error


def test_mass_at_the_floor_decides() -> None:
    verdict = verdict_from_score(YesNoScore(p_yes=0.1, p_no=0.4), 0.5, min_mass=0.5)
    assert verdict.unsafe is False
    assert verdict.p_yes == pytest.approx(0.2)
    assert verdict.mass == pytest.approx(0.5)


def test_windows_combine_safe_only_when_every_window_is_safe() -> None:
    safe = Verdict(unsafe=False, method="probability", p_yes=0.1)
    risky = Verdict(unsafe=False, method="probability", p_yes=0.4)
    unsafe = Verdict(unsafe=True, method="text", raw="Yes")
    failed = Verdict(unsafe=None, method="failed", error="down")
    assert combine_verdicts([safe]) == safe.model_copy(update={"window": None})
    both = combine_verdicts([safe, risky])
    assert both.unsafe is False
    assert both.p_yes == 0.4
    assert both.window is None
    assert both.windows == 2
    assert both.parts == (safe, risky)
    flagged = combine_verdicts([safe, failed, unsafe])
    assert flagged.unsafe is True
    assert flagged.window == 2
    assert flagged.raw == "Yes"
    assert flagged.windows == 3
    no_verdict = combine_verdicts([safe, failed, risky])
    assert no_verdict.unsafe is None
    assert no_verdict.window == 1
    assert no_verdict.error == "down"
