"""tiny-random Mllama (Llama 3.2 Vision): the image reaches the text through cross-attention layers.

Its cross-attention caches hold image states, not prompt positions, so a prompt's key/value prefix
cannot be reused like a self-attention cache: the backend's probe turns prefix reuse off for it. A fresh
Mllama has zero cross-attention gates (the image would have no effect); they are opened here, and the
cross-attention q/k norms scaled (q and k are normalised after their projections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["MLLAMA_CHAT_TEMPLATE", "MLLAMA_SPECIALS", "build_mllama"]

_QK_SCALE = 8.0
_GATE = 1.0

# meta-llama/Llama-3.2-11B-Vision-Instruct (tools left out): BOS; a system header (knowledge cutoff, date and
# the system text) only when there are NO images; images together with a system message raise, as in the
# official file. Content blocks are written in order, <|image|> for an image. (The official file reads the
# system text as messages[0]['content']|trim, which garbles list content; this joins the text blocks.)
MLLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- else %}{%- set system_message = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') | trim %}{%- endif %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- set image_ns = namespace(has_images=false) %}"
    "{%- for message in messages %}{%- if message['content'] is not string %}"
    "{%- for content in message['content'] %}{%- if content['type'] == 'image' %}"
    "{%- set image_ns.has_images = true %}{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}"
    "{%- if image_ns.has_images and not system_message == '' %}"
    "{{- raise_exception('Prompting with images is incompatible with system messages.') }}{%- endif %}"
    "{%- if not image_ns.has_images %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\n' }}"
    "{{- 'Today Date: ' + date_string + '\n\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)


def _finish(model: Any, tokenizer: Any) -> Any:
    """Scale the language model's q/k projections, mirror eos / pad into the generation config."""
    scale_qk(model.model.language_model)
    model.generation_config.eos_token_id = model.config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


MLLAMA_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>",
]  # fmt: skip
"""Llama 3's special tokens, in the tiny tokenizer's first ids (``<|image|>`` is appended after the vocabulary)."""


def build_mllama(
    spec: TinySpec, chat_template: str = MLLAMA_CHAT_TEMPLATE, words: Sequence[str] = ()
) -> tuple[Any, Any]:
    """Llama 3.2 Vision layout: tiled vision encoder, cross-attention layer(s) between self-attention layers.

    The text model has ``spec.text_layers + 1`` layers, the cross-attention one at index 1 (layer 0 stays a
    self-attention layer, as in the real model, whose first cross-attention layer is 3). As in the real
    tokenizer, ``<|image|>`` is the last id, equal to ``text_config.vocab_size`` (the embedding has 8 extra rows;
    the LM head cannot produce it). A fine-tuned variant (Llama Guard 3 Vision) passes its own
    ``chat_template`` and the ``words`` it answers with (whole tokens, before ``<|image|>``).
    """
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tokenizer = train_tokenizer(
        MLLAMA_SPECIALS,
        spec.vocab_size,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        unk=None,
        extra={"image_token": "<|image|>"},  # not among the trained specials: appended as the last id
        add_bos=True,
        words=words,
    )
    ids = tokenizer.convert_tokens_to_ids
    image_token_id = ids("<|image|>")
    assert image_token_id == len(tokenizer) - 1
    tiles = 4
    image_processor = MllamaImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size}, max_image_tiles=tiles
    )
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
    vision_layers = max(spec.vision_layers, 2)
    intermediate = [0, vision_layers - 1]
    config = MllamaConfig(
        vision_config=MllamaVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=vision_layers,
            num_global_layers=1,
            attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            max_num_tiles=tiles,
            intermediate_layers_indices=intermediate,
            vision_output_dim=spec.vision_hidden * (len(intermediate) + 1),
        ),
        text_config=MllamaTextConfig(
            vocab_size=image_token_id,
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers + 1,
            num_attention_heads=4,
            num_key_value_heads=2,
            cross_attention_layers=[1],
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=[ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")],
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=image_token_id,
    )
    model = MllamaForConditionalGeneration(config)
    import torch

    with torch.no_grad():
        for layer in model.model.language_model.layers:
            if hasattr(layer, "cross_attn_attn_gate"):
                layer.cross_attn_attn_gate.fill_(_GATE)
                layer.cross_attn_mlp_gate.fill_(_GATE)
                # Cross-attention RMS-normalises q and k after q_proj / k_proj, so the x8 on those does
                # nothing there; sqrt(8) on each norm weight is the same x8 on its attention logits.
                layer.cross_attn.q_norm.weight.mul_(_QK_SCALE**0.5)
                layer.cross_attn.k_norm.weight.mul_(_QK_SCALE**0.5)
    return processor, _finish(model, tokenizer)
