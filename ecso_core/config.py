"""Typed, frozen configuration of the guard. Unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._model import ECSOModel
from .errors import ConfigError
from .types import GenerationParams, ImageLimits

__all__ = ["ECSOConfig", "FailMode", "ImageLimits"]

FailMode = Literal["closed", "refuse", "raise"]
"""What to do when the self-check call fails or its reply cannot be parsed:
``"closed"`` takes the unsafe path (caption + eyes-closed answer), ``"refuse"`` answers with
``refusal_message``, ``"raise"`` raises :class:`~ecso_core.errors.CheckFailedError`."""


class ECSOConfig(ECSOModel):
    """Everything that changes how the guard behaves. Frozen; build a new one to change it."""

    invalid = ConfigError

    prompt_set: str = "ecso-paper"
    """Name of the prompt set (see :data:`ecso_core.prompts.PROMPT_SETS`); resolved, and checked, when a
    guard is built (:class:`~ecso_core.guard.ECSO` raises ``ConfigError`` for an unknown set)."""
    prompt_overrides: dict[str, str] = Field(default_factory=dict)
    """Replace single templates of the set, e.g. ``{"check": "..."}``."""
    judge_profile: str = "ecso"
    """How the check asks its judge and reads the reply (see :data:`ecso_core.judging.JUDGE_PROFILES`):
    ``ecso`` (the paper's yes/no self-check), ``llama-guard-4``, ``llama-guard-3-vision``,
    ``shieldgemma-2``, ``classifier``, or one registered with ``register_judge_profile``; resolved, and
    checked, when a guard is built."""
    gate: bool = True
    """Off: no check runs and every request with images is captioned and answered eyes closed (the
    "no gate" ablation some follow-up papers compare against; costs the unsafe path on every request)."""
    verdict_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """Unsafe when P(yes) / (P(yes) + P(no)) >= this value (probability verdicts only)."""
    use_scores: bool = True
    """Decide from yes/no token probabilities when the judge backend can score."""
    min_score_mass: float = Field(default=0.5, ge=0.0, le=1.0)
    """A score is a verdict only when P(yes) + P(no) reaches this floor: a judge whose first token is
    mostly something else ("I", "The") has not answered yes or no."""
    score_fallback: Literal["text", "fail_closed"] = "text"
    """Below the floor: ask the judge again for text and read its leading word, or fail closed at once."""
    fail_mode: FailMode = "closed"
    refusal_message: str = "I'm sorry, but I can't help with that request."
    """The answer given when ``fail_mode="refuse"`` applies."""
    check_text_only: bool = False
    """Also self-check requests without images (ECSO is for images; off by default)."""
    check_response_chars: int = Field(default=1927, ge=1)
    """Most answer characters inside one check prompt (the official code's cut). Longer answers are
    judged in overlapping windows of this size, all of them, and released only if every one is safe."""
    check_window_overlap: int = Field(default=200, ge=0)
    """Characters that consecutive windows share, so text cut at a window edge is also judged whole."""
    max_caption_chars: int = Field(default=2000, ge=1)
    """Captions are untrusted: longer ones are cut before they enter the hints prompt."""
    answer_params: GenerationParams | None = None
    """Decoding of step 1; ``None`` uses the request's own parameters."""
    check_params: GenerationParams = GenerationParams(max_new_tokens=16)
    """Decoding of the self-check when it is read from text (only the leading word matters)."""
    caption_params: GenerationParams = GenerationParams()
    """Decoding of the query-aware caption (paper: greedy, 1,024 new tokens; by default the model's own
    ``max_new_tokens``, which is 1,024 for a checkpoint that declares none)."""
    eyes_closed_params: GenerationParams | None = None
    """Decoding of the eyes-closed answer; ``None`` uses the request's own parameters."""
    image_limits: ImageLimits = ImageLimits()
    allow_image_urls: bool = False
    """Fetch ``http(s)`` image URLs (bounded in size and time, private addresses blocked)."""
    stream: Literal["whole", "progressive"] = "whole"
    """How ``stream``/``astream`` release text. ``"whole"``: after the whole answer is checked (the
    paper's order). ``"progressive"``: the answer streams from the model and is checked at window
    boundaries; each piece is released once a check over the answer so far says safe, and a flagged
    window stops the answer at once and hands over to the eyes-closed answer (see docs/concepts.md)."""
    stream_window_chars: int = Field(default=256, ge=16)
    """Progressive streaming: characters generated between two checks (and so held back at most)."""
    stream_separator: str = "\n\n"
    """Progressive streaming: what goes out between text already released and the eyes-closed answer
    that replaces the rest, when a later window is flagged."""
    in_band_audit: bool = False
    """Put the withheld step-1 answer, the captions and the check output into client-visible metadata
    (the server's ``ecso`` field, LangChain ``response_metadata``, LlamaIndex ``additional_kwargs``)
    even when the answer was not released. Off by default; only for setups whose every client may read
    flagged text (evaluation). Operator-side audit trails need no such flag: see ``ECSO(audit=...)``."""

    @model_validator(mode="after")
    def _consistent(self) -> ECSOConfig:
        if 2 * self.check_window_overlap > self.check_response_chars:  # else windows multiply without bound
            raise ValueError("check_window_overlap must be at most half of check_response_chars")
        return self
