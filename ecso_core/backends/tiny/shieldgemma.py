"""tiny-random ShieldGemma 2: a Gemma 3 image-text model saved as an image-safety classifier.

The checkpoint is what google/shieldgemma-2-4b-it is: ``ShieldGemma2ForImageClassification``
(``ShieldGemma2Config``, model type ``shieldgemma2``) around a ``Gemma3ForConditionalGeneration``, whose
``probabilities`` are the softmax of the next-token logits over ``[yes_token_index, no_token_index]``
(here the tokenizer's own "Yes" and "No" ids, found as the conversion script finds them: the second id of
``tokenizer(["Yes", "No"])``, after BOS); and a ``ShieldGemma2Processor`` with its three default policies
(dangerous, sexual, violence). The backend loads the classifier and runs its inner Gemma 3 model, with a
``Gemma3Processor`` of the same parts (see :mod:`ecso_core.backends.hf_loading`).

Template source: :data:`SHIELDGEMMA2_CHAT_TEMPLATE` is ``_CHAT_TEMPLATE`` of huggingface/transformers
``src/transformers/models/shieldgemma2/convert_shieldgemma2_weights_orbax_to_hf.py``, copied verbatim (the
script saves it as the checkpoint's chat template). Each content item opens a ``<start_of_turn>user`` turn:
the image one holds ``<start_of_image>``, the text one (the policy) the preamble "You are a policy expert
trying to help determine whether a generated or real image is in violation of the safety policy below. ...",
the policy between ``<BEGIN_SAFETY_POLICY>`` and ``</END_SAFETY_POLICY>``, and "Does the image violate the
above policy? Your Answer must start with 'Yes' or 'No'."; the template always ends with
``<start_of_turn>model`` (it ignores ``add_generation_prompt``). The template's own indentation between its
``{{ }}`` pieces is kept, as the real processor renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._text import scale_qk
from .llama_guard import judge_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["SHIELDGEMMA2_CHAT_TEMPLATE", "build_shieldgemma2"]

SHIELDGEMMA2_CHAT_TEMPLATE = """{{ bos_token }}
{%- for message in messages -%}
    {%- if message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {{ '<start_of_turn>user\n' }}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ 'You are a policy expert trying to help determine whether a generated or real image is in' }}
                {{ ' violation of the safety policy below. Your decision must very clearly follow the specific'}}
                {{ ' language used in the safety policy and should not include any interpretation outside of the' }}
                {{ ' safety policy.\n\n' }}
                {{ '<BEGIN_SAFETY_POLICY>\n' }}
                {{ item['text'] + '\n' }}
                {{ '</END_SAFETY_POLICY>\n\n' }}
                {{ 'Does the image violate the above policy? Your Answer must start with \\'Yes\\' or \\'No\\'.' }}
                {{ '<end_of_turn>\n' }}
            {%- endif -%}
        {%- endfor -%}
        {{'<start_of_turn>model\n'}}
    {%- else -%}
        {{ raise_exception("Conversation messages must contain iterable content containing images and policy definitions in text.") }}
    {%- endif -%}
{%- endfor -%}
"""  # noqa: E501


def build_shieldgemma2(spec: TinySpec) -> tuple[Any, Any]:
    """ShieldGemma 2: the tiny Gemma 3 (SigLIP tower, pooled image tokens) as ``ShieldGemma2ForImageClassification``."""
    from transformers import (
        Gemma3ImageProcessorPil,
        Gemma3TextConfig,
        ShieldGemma2Config,
        ShieldGemma2ForImageClassification,
        ShieldGemma2Processor,
        SiglipVisionConfig,
    )

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    specials += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = judge_tokenizer(
        specials,
        spec.vocab_size,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        add_bos=True,
    )
    # As the conversion script: the ids after BOS of "Yes" and "No".
    yes_id, no_id = (ids[1] for ids in tok(["Yes", "No"])["input_ids"])
    image_processor = Gemma3ImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        resample=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )  # BILINEAR, as the conversion script
    processor = ShieldGemma2Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=SHIELDGEMMA2_CHAT_TEMPLATE,
        image_seq_length=spec.image_tokens,
    )
    ids = tok.convert_tokens_to_ids
    config = ShieldGemma2Config(  # type: ignore[call-arg]  # yes/no indices: extra attributes the classifier reads
        vision_config=SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        text_config=Gemma3TextConfig(
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
        mm_tokens_per_image=spec.image_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        yes_token_index=int(yes_id),
        no_token_index=int(no_id),
    )
    model = ShieldGemma2ForImageClassification(config)
    scale_qk(model.model.model.language_model)
    return processor, model.eval()
