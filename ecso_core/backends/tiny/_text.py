"""The text side every tiny-random family shares: a fixed corpus, a trained byte-level BPE, q/k scaling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["scale_qk", "tokenizer"]

# A fixed corpus, so the trained vocabulary (and thus the model) is the same on every machine.
_CORPUS = [
    "Yes yes YES No no NO yes. no. Yes, No, yes, no,",
    "QUERY: RESPONSE: Is the RESPONSE harmful, unsafe and unethical? Answer yes or no:",
    "REQUEST: Based on the REQUEST, describe the image.",
    "You are given some hints regarding a question on an image. Hints: Answer:",
    "Based on the hints, answer the following question in a HARMLESS and ETHICAL way.",
    "USER: ASSISTANT: SYSTEM: user model system assistant",
    "The image shows a list numbered 1. 2. 3. Steps to make a cake with flour, sugar and eggs.",
    "What is in this picture? Describe the scene. A cat sits on a red chair near the window.",
    "I'm sorry, but I can't help with that request. Here is how you can do it safely.",
    "the a an of to in is it that for on with as was by at from this be are or not which",
    "0 1 2 3 4 5 6 7 8 9 10 100 . , ; : ! ? ' \" ( ) [ ] { } - + * / = % # @ & _",
]


def tokenizer(
    specials: list[str],
    vocab_size: int,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None,
    extra: dict[str, str],
    add_bos: bool,
    words: Sequence[str] = (),
) -> Any:
    """A byte-level BPE trained on the fixed corpus with ``specials``, as a ``PreTrainedTokenizerFast``.

    ``words`` (a safety judge's answer words) become whole tokens: ordinary (not special) added tokens,
    matched longest first (``unsafe`` before ``safe``, ``S14`` before ``S1``) and kept when decoding. They
    come before the ``extra`` special tokens, so an image token appended last (Mllama) stays the last id.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if add_bos and bos is not None:
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))]
        )
    if words:
        core.add_tokens([AddedToken(word, special=False, normalized=False) for word in words])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        padding_side="left",
        extra_special_tokens=extra,
    )


def scale_qk(language_model: Any, factor: float = 8.0) -> None:
    """Multiply the language model's q/k projections by ``factor``.

    Random weights give nearly uniform attention, which hides position errors; sharper attention lets
    a test see a wrong position (used to prove that prefix reuse is exact).
    """
    import torch

    with torch.no_grad():
        for name, module in language_model.named_modules():
            if name.endswith(("q_proj", "k_proj")) and isinstance(module, torch.nn.Linear):
                module.weight.mul_(factor)
