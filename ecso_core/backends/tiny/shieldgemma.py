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
from .gemma import gemma3_config_parts, gemma3_tokenizer
from .llama_guard import JUDGE_WORDS

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
        ShieldGemma2Config,
        ShieldGemma2ForImageClassification,
        ShieldGemma2Processor,
    )

    tok = gemma3_tokenizer(spec, words=JUDGE_WORDS)
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
    config = ShieldGemma2Config(  # type: ignore[call-arg]  # yes/no indices: extra attributes the classifier reads
        **gemma3_config_parts(spec, tok, vision_use_head=False),
        yes_token_index=int(yes_id),
        no_token_index=int(no_id),
    )
    model = ShieldGemma2ForImageClassification(config)
    scale_qk(model.model.model.language_model)
    return processor, model.eval()
