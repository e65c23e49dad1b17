r"""tiny-random Llama Guard 4: Llama 4's early-fusion architecture, dense, with the judge's chat template.

Llama Guard 4 (meta-llama/Llama-Guard-4-12B) is a ``Llama4ForConditionalGeneration`` pruned to dense
feed-forward layers (``moe_layers=[]``); a ``Llama4Processor`` tiles each image (``size`` tiles, a global
tile after several) and writes ``<|image_start|>``, the tile separators, ``<|image|>`` and one ``<|patch|>``
per image feature into the text where the template put ``<|image|>``. Text layers alternate RoPE with
a NoPE layer every fourth (attention-temperature tuned); RoPE layers attend in 8,192-token chunks. The
image processor is :class:`~ecso_core.backends.hf_loading.Llama4ImageProcessorPil` (transformers has only a
torchvision one); saved, it reads ``Llama4ImageProcessor``.

Template source: :data:`LLAMA_GUARD_4_CHAT_TEMPLATE` is a RECONSTRUCTION. The checkpoint's own template
(``chat_template`` of meta-llama/Llama-Guard-4-12B, a gated repository) is mirrored nowhere we could read.
It is rebuilt from Meta's Llama Guard template family (Llama Guard 3's, see :mod:`.llama_guard`: the
``categories`` / ``excluded_category_keys`` variables, the role by message-count parity, the alternation
check, the trimmed text) so as to reproduce, character for character, what the real processor renders in
huggingface/huggingface-llama-recipes ``llama_guard_4.ipynb`` (outputs of
``processor.apply_chat_template`` for a text-only and for an image + text user turn) and in a public
script printing the real render of a user + assistant conversation; and from Meta's Llama Guard 4 prompt
format page (llama.com, model-cards-and-prompt-formats/llama-guard-4: the image token goes in the turn
where the image occurs). What those show: the task says "according to our safety policy"; the default
categories are S1-S14, or S1-S13 when any message has an image; ``<BEGIN CONVERSATION>`` is followed by
one newline; each turn is ``User: `` / ``Agent: ``, then ``<|image|>`` for its image (before the text,
even when the image part comes after it), the text, then the two characters ``\n`` twice (a literal
backslash-n pair of the real template) and two newlines; the instruction ends with ``categories. <|eot|>``
and the assistant header, always (``add_generation_prompt`` changes nothing; the model answers
``"\n\nsafe"``). Not shown by any render, so chosen here: a turn with several images gets one
``<|image|>`` each, several text parts in one turn are joined with nothing between them, and text is
trimmed (as Llama Guard 3 does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._text import scale_qk
from ._text import tokenizer as train_tokenizer
from .llama_guard import JUDGE_WORDS

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["LLAMA4_SPECIALS", "LLAMA_GUARD_4_CHAT_TEMPLATE", "build_llama_guard_4"]

LLAMA4_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>",
    "<|step|>", "<|python_start|>", "<|python_end|>", "<|finetune_right_pad_id|>", "<|image_start|>",
    "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>",
]  # fmt: skip
"""Llama 4's special tokens that a Llama Guard 4 prompt or answer uses."""

_CATEGORIES = [
    "Violent Crimes.", "Non-Violent Crimes.", "Sex Crimes.", "Child Exploitation.", "Defamation.",
    "Specialized Advice.", "Privacy.", "Intellectual Property.", "Indiscriminate Weapons.", "Hate.", "Self-Harm.",
    "Sexual Content.", "Elections.", "Code Interpreter Abuse.",
]  # fmt: skip


def _categories(count: int) -> str:
    return ", ".join(f'"S{i}": "{name}"' for i, name in enumerate(_CATEGORIES[:count], start=1))


LLAMA_GUARD_4_CHAT_TEMPLATE = (
    "{%- if messages|length % 2 == 0 -%}{%- set role = 'Agent' -%}{%- else -%}{%- set role = 'User' -%}{%- endif -%}"
    "{%- set ns = namespace(contains_image=false) -%}"
    "{%- for message in messages -%}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{%- set ns.contains_image = true -%}{%- endfor -%}{%- endfor -%}"
    "{%- if categories is not defined -%}"
    "{%- if ns.contains_image -%}{%- set categories = ({" + _categories(13) + "}) -%}"
    "{%- else -%}{%- set categories = ({" + _categories(14) + "}) -%}{%- endif -%}"
    "{%- endif -%}"
    '{{- "<|begin_of_text|><|header_start|>user<|header_end|>\\n\\n" -}}'
    '{{- "Task: Check if there is unsafe content in \'" + role + "\' messages in conversations according to our '
    'safety policy with the below categories.\\n\\n" -}}'
    '{{- "<BEGIN UNSAFE CONTENT CATEGORIES>\\n" -}}'
    "{%- for key in categories -%}{%- if key not in excluded_category_keys -%}"
    '{{- key + ": " + categories[key] + "\\n" -}}{%- endif -%}{%- endfor -%}'
    '{{- "<END UNSAFE CONTENT CATEGORIES>\\n\\n" -}}'
    '{{- "<BEGIN CONVERSATION>\\n" -}}'
    "{%- for message in messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{%- set role = 'User' -%}"
    "{%- elif message['role'] == 'assistant' -%}{%- set role = 'Agent' -%}{%- endif -%}"
    "{{- role + ': ' -}}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{{- '<|image|>' -}}{%- endfor -%}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'text') -%}"
    "{{- content['text'] | trim -}}{%- endfor -%}"
    "{{- '\\\\n\\\\n\\n\\n' -}}"
    "{%- endfor -%}"
    '{{- "<END CONVERSATION>\\n\\n" -}}'
    '{{- "Provide your safety assessment for ONLY THE LAST " + role + " message in the above conversation:\\n" -}}'
    "{{- \" - First line must read 'safe' or 'unsafe'.\\n\" -}}"
    '{{- " - If unsafe, a second line must include a comma-separated list of violated categories. '
    '<|eot|><|header_start|>assistant<|header_end|>" -}}'
)


def build_llama_guard_4(spec: TinySpec) -> tuple[Any, Any]:
    """Llama Guard 4: dense Llama 4 text layers (RoPE, NoPE every fourth), Llama 4's tiled vision encoder."""
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )

    from ..hf_loading import Llama4ImageProcessorPil

    tok = train_tokenizer(
        LLAMA4_SPECIALS,
        spec.vocab_size,
        bos="<|begin_of_text|>",
        eos="<|eot|>",
        pad="<|finetune_right_pad_id|>",
        unk=None,
        extra={},
        add_bos=True,
        words=JUDGE_WORDS,
    )
    ids = tok.convert_tokens_to_ids
    image_processor = Llama4ImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size}, max_patches=4, resize_to_max_canvas=False
    )
    shuffle = 0.5  # pixel shuffle: each 2x2 patches become one image feature
    processor = Llama4Processor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=spec.patch_size,
        pixel_shuffle_ratio=shuffle,
        chat_template=LLAMA_GUARD_4_CHAT_TEMPLATE,
    )
    per_tile = (spec.image_size // spec.patch_size) ** 2 * shuffle**2
    if per_tile != spec.image_tokens:
        raise ValueError(f"llama-guard-4: spec.image_tokens={spec.image_tokens}, geometry gives {per_tile:g} per tile")
    projector = 2 * spec.vision_hidden
    config = Llama4Config(
        vision_config=Llama4VisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=int(spec.vision_hidden / shuffle**2),  # the pixel-shuffled width, as in the real model
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            pixel_shuffle_ratio=shuffle,
            projector_input_dim=projector,
            projector_output_dim=projector,
            vision_output_dim=projector,
        ),
        text_config=Llama4TextConfig(
            vocab_size=len(tok),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            intermediate_size_mlp=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=spec.text_hidden // 4,
            moe_layers=[],  # dense, as Llama Guard 4
            attention_chunk_size=8192,
            max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id,
            eos_token_id=[ids("<|end_of_text|>"), ids("<|eom|>"), ids("<|eot|>")],
            pad_token_id=tok.pad_token_id,
        ),
        boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
    )
    model = Llama4ForConditionalGeneration(config)
    scale_qk(model.language_model)  # RoPE layers L2-normalise q and k (no effect there); the NoPE layer sharpens
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return processor, model.eval()
