"""tiny-random Gemma 3 (and the Gemma family's PaliGemma)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = [
    "GEMMA3_CHAT_TEMPLATE",
    "GEMMA3_SPECIALS",
    "PALIGEMMA_CHAT_TEMPLATE",
    "build_gemma3",
    "build_paligemma",
    "gemma3_config_parts",
    "gemma3_tokenizer",
]

# Gemma 3's turn format: the system text is folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
"""Gemma 3's special tokens, in the tiny tokenizer's first ids."""


def gemma3_tokenizer(spec: TinySpec, words: Sequence[str] = ()) -> Any:
    """The tiny Gemma 3 tokenizer (a fine-tuned judge adds the ``words`` it answers with)."""
    return train_tokenizer(
        GEMMA3_SPECIALS,
        spec.vocab_size,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        add_bos=True,
        words=words,
    )


def gemma3_config_parts(spec: TinySpec, tok: Any, **vision: Any) -> dict[str, Any]:
    """The keyword arguments of a tiny Gemma 3 config: vision and text towers, image tokens.

    For ``Gemma3Config`` and for the configs that wrap one (ShieldGemma 2); ``vision`` adds SigLIP settings.
    """
    from transformers import Gemma3TextConfig, SiglipVisionConfig

    ids = tok.convert_tokens_to_ids
    return {
        "vision_config": SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            **vision,
        ),
        "text_config": Gemma3TextConfig(
            vocab_size=len(tok),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=4096,
            sliding_window=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=[tok.eos_token_id, ids("<end_of_turn>")],
            pad_token_id=tok.pad_token_id,
        ),
        "mm_tokens_per_image": spec.image_tokens,
        "boi_token_index": ids("<start_of_image>"),
        "eoi_token_index": ids("<end_of_image>"),
        "image_token_index": ids("<image_soft_token>"),
    }


def build_gemma3(spec: TinySpec) -> tuple[Any, Any]:
    """Gemma 3: SigLIP vision tower, pooled image tokens, sliding-window text layers, Gemma's turn template."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tok = gemma3_tokenizer(spec)
    image_processor = Gemma3ImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=spec.image_tokens,
    )
    config = Gemma3Config(**gemma3_config_parts(spec, tok))
    model = Gemma3ForConditionalGeneration(config)
    scale_qk(model.model.language_model)
    return processor, model.eval()


# PaliGemma has no official chat template: its prompt is "<image>"*n + "<bos>" + prefix + "\n" (the
# processor inserts the <bos> after the last <image> and appends the "\n"). This template emits all
# images first, then every message's text joined by "\n", and nothing for add_generation_prompt
# (the "\n" the processor appends is the prefix/answer separator).
PALIGEMMA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(text='') -%}"
    "{%- for message in messages -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif item['type'] == 'text' -%}"
    "{%- set ns.text = ns.text + ('\\n' if ns.text else '') + (item['text'] | trim) -%}"
    "{%- endif -%}{%- endfor -%}{%- endfor -%}"
    "{{ ns.text }}"
)


def build_paligemma(spec: TinySpec, version: int = 2) -> tuple[Any, Any]:
    """Tiny PaliGemma (``version=1``: Gemma text model; ``version=2``: Gemma 2, as PaliGemma 2).

    The text model attends bidirectionally over the prefix (image + prompt, token_type_ids == 0) and
    causally over the suffix; positions are 1-based.
    """
    import transformers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    tokenizer = train_tokenizer(
        specials,
        spec.vocab_size,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=False,  # the processor writes <bos> after the image tokens itself
    )
    image_seq_length = (spec.image_size // spec.patch_size) ** 2
    if image_seq_length != spec.image_tokens:
        raise ValueError(f"paligemma: spec.image_tokens={spec.image_tokens}, geometry gives {image_seq_length}")
    image_processor = transformers.SiglipImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    # PaliGemmaProcessor reads image_seq_length from its image processor; the SigLIP class does not declare it
    image_processor.image_seq_length = image_seq_length  # type: ignore[attr-defined]
    # Adds the 1024 <locNNNN> + 128 <segNNN> tokens to the tokenizer: build the processor before the config.
    processor = transformers.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=PALIGEMMA_CHAT_TEMPLATE
    )
    text_kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=2 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    text_config: transformers.GemmaConfig | transformers.Gemma2Config
    if version == 1:
        text_config = transformers.GemmaConfig(**text_kwargs)
    else:
        text_config = transformers.Gemma2Config(
            **text_kwargs,
            sliding_window=512,
            query_pre_attn_scalar=16,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
        )
    config = transformers.PaliGemmaConfig(
        vision_config=transformers.SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=spec.text_hidden,
        hidden_size=spec.text_hidden,
        vocab_size=len(tokenizer),
        # Real PaliGemma ties its embeddings; untied here because the tied tiny Gemma-1 variant only ever
        # repeats one token (logits dominated by the last input embedding), which hides batching mistakes.
        tie_word_embeddings=False,
    )
    model = transformers.PaliGemmaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    scale_qk(model.model.language_model)
    return processor, model
