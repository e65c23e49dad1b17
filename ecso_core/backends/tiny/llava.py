"""tiny-random LLaVA-1.5 (and the LLaVA family's any-resolution successors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._text import scale_qk, tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["LLAVA_CHAT_TEMPLATE", "build_llava"]

# The LLaVA-1.5 conversation template as llava-hf ships it ("USER: <image>\n... ASSISTANT:").
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_llava(spec: TinySpec) -> tuple[Any, Any]:
    """LLaVA-1.5: CLIP vision tower, Llama text model, the llava-hf chat template."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        spec.vocab_size,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=True,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS position, dropped by the "default" strategy
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            projection_dim=spec.vision_hidden,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=spec.image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    scale_qk(model.model.language_model)
    return processor, model.eval()
