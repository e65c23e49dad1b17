"""Untrusted text as data: control tokens and forged turns neutralised to a fixpoint.

User text, step-1 answers and captions all end up inside prompts. A chat template turns literal
control tokens in them (``</s>``, ``<|im_start|>``, ``<end_of_turn>``) into real special ids, and plain
``ASSISTANT:`` headers forge turns in templates that spell roles as text (LLaVA-1.5). So:

- control tokens (a generic list of the common VLM families, plus a tokenizer's own when known) are
  replaced by a space *until nothing changes*, so nested spellings such as ``</<s>s>`` cannot
  reassemble after one pass;
- matching also looks at the NFKC form with invisible characters dropped, so ``ASSISTANT：``
  (full-width colon) and ``ASSISTANT`` + zero-width space + ``:`` are found; text in which nothing is
  found is returned byte for byte (benign prompts stay exactly the paper's), text in which something
  is found is returned normalised;
- with ``headers=True`` (text that is data inside ECSO's own prompts) ``ROLE:`` headers lose their colon;
  with ``tags=True`` (captions) every ``<tag>``-shaped token goes, not only known ones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from functools import lru_cache

__all__ = ["GENERIC_CONTROL_TOKENS", "control_token_pattern", "neutralize", "normal_view"]

GENERIC_CONTROL_TOKENS: tuple[str, ...] = (
    # Llama 2 / Mistral / LLaVA-1.5 (Vicuna) / sentencepiece
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<image>", "<video>", "<audio>",
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    # Mistral 3 / Pixtral
    "[IMG]", "[IMG_BREAK]", "[IMG_END]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CONTENT]", "[CALL_ID]", "[ARGS]", "[THINK]", "[/THINK]",
    # Gemma / PaliGemma
    "<start_of_turn>", "</start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
    "<image_soft_token>",
    # Idefics / SmolVLM / InternVL / GLM
    "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<img>", "</img>", "<IMG_CONTEXT>",
    "<image_start>", "<image_end>", "<begin_of_image>", "<end_of_image>", "[gMASK]", "<sop>", "<eop>",
)  # fmt: skip
"""Control tokens of the common VLM families, removed wherever untrusted text enters a prompt.

Tokens in ``<|...|>`` and ``<｜...｜>`` form (ChatML, Llama 3, Qwen, Phi, DeepSeek) and Idefics'
``<row_N_col_M>`` are matched by pattern, so they need not be listed."""

# Token shapes matched by pattern: <|...|> (ChatML, Llama 3, Qwen, Phi), DeepSeek's full-width bars, row tokens.
_TOKEN_SHAPES = (r"<\|[^<>|\s]{1,64}\|>", r"<\uff5c[^<>\s]{1,64}\uff5c>", r"<row_\d+_col_\d+>")
# Any tag-shaped token, for captions (no legitimate caption needs one).
_ANY_TAG = r"<\|?/?[A-Za-z_][A-Za-z0-9_.:\-]*\|?>"
_ROLE_HEADER = re.compile(r"\b(user|assistant|system|human|model|gpt|developer|tool)\s*:", re.IGNORECASE)
# Invisible code points (format characters, variation selectors, joiners, fillers) that can split a
# token or a header without showing.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
_MAX_ROUNDS = 32
_LAST_RESORT = re.compile(r"[<>|\[\]\uff5c]")


@lru_cache(maxsize=64)
def control_token_pattern(tokens: frozenset[str] = frozenset(), tags: bool = False) -> re.Pattern[str]:
    """One regex for the generic control tokens, ``tokens`` (e.g. a tokenizer's own) and the token shapes."""
    literals = sorted({t for t in (*GENERIC_CONTROL_TOKENS, *tokens) if t and not t.isspace()}, key=len, reverse=True)
    alternatives = [re.escape(t) for t in literals] + list(_TOKEN_SHAPES) + ([_ANY_TAG] if tags else [])
    return re.compile("|".join(alternatives))


def normal_view(text: str) -> str:
    """NFKC with invisible characters dropped: what a normalising tokenizer or a reader sees."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


def _clean_once(text: str, pattern: re.Pattern[str], headers: bool) -> str:
    # A removed token becomes a space, so its neighbours cannot join into a new one.
    text = pattern.sub(" ", text)
    return _ROLE_HEADER.sub(r"\1", text) if headers else text


def neutralize(text: str, tokens: Collection[str] = (), *, headers: bool = False, tags: bool = False) -> str:
    """Remove control tokens (and, with ``headers``, role-header colons) until nothing changes.

    Args:
        text: untrusted text.
        tokens: extra control tokens, e.g. the special and added tokens of the model's tokenizer.
        headers: also neutralise ``ROLE:`` headers (text embedded as data in ECSO's own prompts).
        tags: also remove every ``<tag>``-shaped token (captions).

    Returns:
        ``text`` unchanged when it holds nothing to neutralise; else its normalised, neutralised form.

    """
    pattern = control_token_pattern(frozenset(tokens), tags)
    current = text
    for _ in range(_MAX_ROUNDS):
        cleaned = _clean_once(current, pattern, headers)
        if cleaned == current:
            view = normal_view(current)
            if view == current or _clean_once(view, pattern, headers) == view:
                return current  # stable as written and as normalised
            cleaned = view  # something hides behind invisible or compatibility characters
        current = cleaned
    return _LAST_RESORT.sub(" ", current)  # pathological nesting: drop the characters tokens are made of
