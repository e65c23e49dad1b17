"""tiny-random any-resolution families: LLaVA-NeXT (LLaVA-1.6), LLaVA-OneVision and Mistral3 (Pixtral vision).

Their image processors tile or size images per call (any-res patch counts, Pixtral's per-image H x W), so
images of different sizes cannot be processed one at a time and concatenated: the backend's load-time probe
finds that and processes such batches together. Tiny geometries: 28 px CLIP/SigLIP tiles with small
any-res pinpoint grids (4 base tokens + up to 20-42 any-res tokens), Pixtral's longest edge 56 px in
14 px patches merged 2x2 (at most 6 tokens with the [IMG_BREAK]/[IMG_END] markers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hf_loading import image_only_processor, pixtral_processor_class
from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = [
    "LLAVA_NEXT_CHAT_TEMPLATE",
    "LLAVA_ONEVISION_CHAT_TEMPLATE",
    "MISTRAL3_CHAT_TEMPLATE",
    "build_llava_next",
    "build_llava_onevision",
    "build_mistral3",
]

# llava-hf/llava-v1.6-mistral-7b-hf: Llama-2 style [INST] turns, images first, then text. It writes no BOS
# (the tokenizer adds it) and nothing for add_generation_prompt: the user turn already ends with " [/INST]".
# (The hub file spells the assistant end '<\\s> ', a known typo; this writes '</s> '.)
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

# llava-hf/llava-onevision-qwen2-*-ov-hf: ChatML with "<|im_start|>role " then images, videos, "\n" + text.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# mistralai/Mistral-Small-3.1-24B-Instruct-2503 (Mistral3): BOS, optional [SYSTEM_PROMPT], [INST]...[/INST] with
# the blocks in their order ([IMG] for an image), assistant text + EOS; nothing for add_generation_prompt.
# The official file puts a long default system prompt in when there is no system message; here it is empty.
MISTRAL3_CHAT_TEMPLATE = (
    "{%- set default_system_message = '' %}"
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') %}{%- endif %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_message = default_system_message %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- if system_message != '' %}{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if message['content'] is string %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' }}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{{- block['text'] }}"
    "{%- elif block['type'] in ['image', 'image_url'] %}{{- '[IMG]' }}"
    "{%- else %}{{- raise_exception('Only text and image blocks are supported in message content!') }}{%- endif %}"
    "{%- endfor %}{{- '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'system' %}"
    "{{- '[SYSTEM_PROMPT]' + message['content'][0]['text'] + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message['content'] is string %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- (message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(''))"
    " + eos_token }}{%- endif %}"
    "{%- else %}{{- raise_exception('Only user, system and assistant roles are supported!') }}{%- endif %}"
    "{%- endfor %}"
)


def _finish(model: Any, tokenizer: Any) -> Any:
    """Scale the language model's q/k projections, mirror eos / pad into the generation config."""
    scale_qk(model.model.language_model)
    model.generation_config.eos_token_id = model.config.get_text_config().eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def _pinpoints(tile: int, grid: list[tuple[int, int]]) -> list[list[int]]:
    return [[tile * h, tile * w] for h, w in grid]


def build_llava_next(spec: TinySpec) -> tuple[Any, Any]:
    """LLaVA-1.6 (Mistral text, CLIP vision, any-res tiles + image_newline)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = train_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        spec.vocab_size,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=True,
    )
    pinpoints = _pinpoints(spec.image_size, [(1, 2), (2, 1), (2, 2), (3, 1), (1, 3)])
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            projection_dim=spec.vision_hidden,
        ),
        text_config=MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=spec.text_hidden // 4,
            max_position_embeddings=4096,
            sliding_window=None,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=spec.image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return processor, _finish(LlavaNextForConditionalGeneration(config), tokenizer)


def build_llava_onevision(spec: TinySpec) -> tuple[Any, Any]:
    """LLaVA-OneVision (Qwen2 text, SigLIP vision, anyres_max_9; no video processor)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        spec.vocab_size,
        bos=None,  # Qwen2 has no BOS token
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        extra={"image_token": "<image>", "video_token": "<video>"},
        add_bos=False,
    )
    ids = tokenizer.convert_tokens_to_ids
    side = spec.image_size // spec.patch_size
    pinpoints = _pinpoints(spec.image_size, [(h, w) for h in (1, 2, 3) for w in (1, 2, 3)])
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = image_only_processor(LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=side * side,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            # Qwen2-0.5B ties its embeddings, but a tied tiny-random model just repeats its last input token.
            tie_word_embeddings=False,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    return processor, _finish(LlavaOnevisionForConditionalGeneration(config), tokenizer)


def build_mistral3(spec: TinySpec) -> tuple[Any, Any]:
    """Mistral Small 3.1 layout (Mistral text, Pixtral vision, 2 x 2 patch merger, [IMG]/[IMG_BREAK]/[IMG_END])."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessorPil,
        PixtralVisionConfig,
    )

    # The first ids as in the real tokenizer: [IMG] is id 10 (Mistral3Config's default image_token_index),
    # <pad> 11, [IMG_BREAK] 12, [IMG_END] 13.
    specials = [
        "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
        "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
        "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    ]  # fmt: skip
    tokenizer = train_tokenizer(
        specials,
        spec.vocab_size,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "[IMG]"},
        add_bos=True,
    )
    merge = 2
    image_processor = PixtralImageProcessorPil(
        size={"longest_edge": spec.image_size},
        patch_size={"height": spec.patch_size, "width": spec.patch_size},
    )
    processor = pixtral_processor_class()(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        spatial_merge_size=merge,
        chat_template=MISTRAL3_CHAT_TEMPLATE,
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )
    config = Mistral3Config(
        # head_dim is no declared field of PixtralVisionConfig (so not in its signature); it accepts and keeps it
        vision_config=PixtralVisionConfig(  # type: ignore[call-arg]
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            head_dim=spec.vision_hidden // 2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=spec.text_hidden // 4,
            max_position_embeddings=4096,
            sliding_window=None,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=merge,
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        tie_word_embeddings=False,
    )
    return processor, _finish(Mistral3ForConditionalGeneration(config), tokenizer)
