"""tiny-random M-RoPE families: Qwen2-VL, Qwen2.5-VL, Qwen3-VL and GLM-4V (GLM-4.1V).

Dynamic resolution: ``spec.image_size`` is the side whose square image gives ``spec.image_tokens``;
``min_pixels = image_size**2`` (smaller images are scaled up to it) and ``max_pixels = (2 * image_size)**2``.
An HxW image gives ``round(H/f) * round(W/f)`` tokens with ``f = patch * merge`` (28; 32 for Qwen3-VL).
Processors are built image-only (their video processors need torchvision). The text after an image is
placed by 3-D rotary positions (``get_rope_index``), which the backend's prefix reuse reproduces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from ..hf_loading import image_only_processor
from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from . import TinySpec

__all__ = [
    "GLM4V_CHAT_TEMPLATE",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "build_glm4v",
    "build_qwen2_5_vl",
    "build_qwen2_vl",
    "build_qwen3_vl",
]

# Qwen2-VL / Qwen2.5-VL instruct template (identical for both): default system prompt when none is given.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL instruct template (tools / thinking parts left out): no default system prompt.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' + image_count.value|string + ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}{{- content['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# GLM-4.1V template: "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>text<|assistant|>\n"
GLM4V_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages -%}"
    "{%- if msg['role'] == 'system' -%}{{- '<|system|>\n' -}}"
    "{%- elif msg['role'] == 'user' -%}{{- '<|user|>\n' -}}"
    "{%- elif msg['role'] == 'assistant' -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
    "{%- if msg['content'] is string -%}{{- msg['content'] -}}"
    "{%- else -%}"
    "{%- for item in msg['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item -%}{{- '<|begin_of_image|><|image|><|end_of_image|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_EXTRA = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
_GLM_SPECIALS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<think>",
    "</think>",
]
_GLM_EXTRA = {"image_token": "<|image|>", "video_token": "<|video|>"}


def _mrope_section(freqs: int, interleaved: bool = False) -> list[int]:
    """The (t, h, w) split of the ``freqs`` rotary frequencies, in the official proportions.

    Qwen2/2.5-VL and GLM-4V: [16, 24, 24] of 64 (GLM: [8, 12, 12] of 32) -> 1/4, 3/8, 3/8.
    Qwen3-VL (interleaved t,h,w,t,h,w,...): [24, 20, 20] of 64 -> h = w = 5/16, t = the rest.
    """
    if interleaved:
        h = 5 * freqs // 16
        return [freqs - 2 * h, h, h]
    return [freqs // 4, 3 * freqs // 8, freqs - freqs // 4 - 3 * freqs // 8]


def _pixels(spec: TinySpec, temporal: int = 1) -> dict[str, int]:
    return {"shortest_edge": temporal * spec.image_size**2, "longest_edge": temporal * (2 * spec.image_size) ** 2}


def _qwentokenizer(spec: TinySpec) -> Any:
    return train_tokenizer(
        _QWEN_SPECIALS,
        spec.vocab_size,
        bos=None,  # Qwen has no BOS token
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        extra=dict(_QWEN_EXTRA),
        add_bos=False,
    )


def _text_kwargs(spec: TinySpec, tokenizer: Any) -> dict[str, object]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.text_hidden,
        "intermediate_size": 2 * spec.text_hidden,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": None,  # Qwen has no BOS (the config default 151643 is outside the tiny vocabulary)
        "eos_token_id": [ids("<|im_end|>"), ids("<|endoftext|>")],
        "pad_token_id": ids("<|endoftext|>"),
    }


class _QwenIds(TypedDict):
    """The vision token ids of a Qwen-VL config (keyword arguments of its config class)."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


def _qwen_ids(tokenizer: Any) -> _QwenIds:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _finish(model: PreTrainedModel, tokenizer: Any) -> PreTrainedModel:
    """Scale q/k, mirror eos/pad into the generation config, eval mode."""
    scale_qk(model.model.language_model)
    ids = tokenizer.convert_tokens_to_ids
    eos = [ids(t) for t in ("<|im_end|>", "<|endoftext|>")] if "<|im_end|>" in tokenizer.get_vocab() else None
    if eos is None:  # GLM
        eos = [ids("<|endoftext|>"), ids("<|user|>"), ids("<|observation|>")]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def build_qwen2_vl(spec: TinySpec) -> tuple[Any, Any]:
    """Qwen2-VL: its ViT with 2x2 patch merging, Qwen2 text model, M-RoPE."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    tokenizer = _qwentokenizer(spec)
    image_processor = Qwen2VLImageProcessorPil(size=_pixels(spec), patch_size=spec.patch_size, merge_size=2)
    processor = image_only_processor(Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE
    )
    text = _text_kwargs(spec, tokenizer)
    config = Qwen2VLConfig(
        text_config={
            **text,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(spec.text_hidden // 8),  # official [16, 24, 24] at head_dim 128
            },
        },
        vision_config={
            "depth": spec.vision_layers,
            "embed_dim": spec.vision_hidden,
            "hidden_size": spec.text_hidden,  # the merger's output = text hidden
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **_qwen_ids(tokenizer),
    )
    return processor, _finish(Qwen2VLForConditionalGeneration(config), tokenizer)


def build_qwen2_5_vl(spec: TinySpec) -> tuple[Any, Any]:
    """Qwen2.5-VL: windowed-attention ViT, Qwen2 text model, M-RoPE."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )

    tokenizer = _qwentokenizer(spec)
    image_processor = Qwen2VLImageProcessorPil(size=_pixels(spec), patch_size=spec.patch_size, merge_size=2)
    processor = image_only_processor(Qwen2_5_VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE
    )
    text = _text_kwargs(spec, tokenizer)
    config = Qwen2_5_VLConfig(
        text_config={
            **text,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(spec.text_hidden // 8),  # official [16, 24, 24] at head_dim 128
            },
        },
        vision_config={
            "depth": spec.vision_layers,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": 2 * spec.vision_hidden,
            "num_heads": 2,
            "out_hidden_size": spec.text_hidden,
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 2 * 2 * spec.patch_size,  # windows of 2x2 merged tokens (official: 112 = 4x4)
            "fullatt_block_indexes": [spec.vision_layers - 1],
        },
        **_qwen_ids(tokenizer),
    )
    return processor, _finish(Qwen2_5_VLForConditionalGeneration(config), tokenizer)


def build_qwen3_vl(spec: TinySpec) -> tuple[Any, Any]:
    """Qwen3-VL: deepstack ViT features, Qwen3 text model, interleaved M-RoPE."""
    from transformers import (
        Qwen2VLImageProcessorPil,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )

    tokenizer = _qwentokenizer(spec)
    image_processor = Qwen2VLImageProcessorPil(
        size=_pixels(spec),
        patch_size=spec.patch_size,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = image_only_processor(Qwen3VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN3_VL_CHAT_TEMPLATE
    )
    text = _text_kwargs(spec, tokenizer)
    text["head_dim"] = spec.text_hidden // 4
    config = Qwen3VLConfig(
        text_config={
            **text,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": _mrope_section(spec.text_hidden // 8, interleaved=True),  # [24, 20, 20] at 128
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": spec.vision_layers,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": 2 * spec.vision_hidden,
            "num_heads": 2,
            "out_hidden_size": spec.text_hidden,
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,  # 8x8 learned grid, bilinearly interpolated
            "deepstack_visual_indexes": list(range(min(spec.vision_layers, spec.text_layers))),
        },
        **_qwen_ids(tokenizer),
    )
    return processor, _finish(Qwen3VLForConditionalGeneration(config), tokenizer)


def build_glm4v(spec: TinySpec) -> tuple[Any, Any]:
    """GLM-4V (GLM-4.1V): its ViT, GLM text model with half-rotary heads, M-RoPE."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vImageProcessorPil, Glm4vProcessor

    tokenizer = train_tokenizer(
        _GLM_SPECIALS,
        spec.vocab_size,
        bos=None,  # the template writes "[gMASK]<sop>" itself
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        unk=None,
        extra=dict(_GLM_EXTRA),
        add_bos=False,
    )
    ids = tokenizer.convert_tokens_to_ids
    # GLM's smart_resize counts 2 temporal frames against min/max pixels
    image_processor = Glm4vImageProcessorPil(size=_pixels(spec, temporal=2), patch_size=spec.patch_size, merge_size=2)
    processor = image_only_processor(Glm4vProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=GLM4V_CHAT_TEMPLATE
    )
    head_dim = spec.text_hidden // 4
    config = Glm4vConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": 2 * spec.text_hidden,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": _mrope_section(head_dim // 4),  # rotary dim = head_dim / 2; official [8, 12, 12]
            },
            "eos_token_id": [ids("<|endoftext|>"), ids("<|user|>"), ids("<|observation|>")],
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": spec.vision_layers,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": 2 * spec.text_hidden,  # the merger's context dim (official: = text intermediate)
            "num_heads": 2,
            "out_hidden_size": spec.text_hidden,
            "image_size": 4 * spec.patch_size,  # learned 4x4 position grid, bicubically interpolated
            "patch_size": spec.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
    )
    return processor, _finish(Glm4vForConditionalGeneration(config), tokenizer)
