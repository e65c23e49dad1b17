"""tiny-random InternVL (InternVL3 layout: InternViT, pixel-shuffle MLP projector, Qwen2 text model).

Small geometry: 56 px tiles in 14 px patches, ``downsample_ratio`` 0.5 -> 4 ``<IMG_CONTEXT>`` tokens per
tile, one tile per image. The processor is built image-only (its video processor needs torchvision).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hf_loading import image_only_processor
from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["INTERNVL_CHAT_TEMPLATE", "build_internvl"]

# InternVL3-*-hf (Qwen2.5 ChatML turns); the image placeholder is the <IMG_CONTEXT> token, which the
# processor expands to "<img>" + "<IMG_CONTEXT>" * (tokens per tile * tiles) + "</img>".
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


def build_internvl(spec: TinySpec, max_patches: int = 1) -> tuple[Any, Any]:
    """Tiny InternVL3 (Qwen2 text model, InternViT vision, pixel-shuffle MLP projector).

    ``max_patches`` bounds the processor's tiling (``crop_to_patches`` is on by default in
    InternVLProcessor); 1 keeps one tile per image, more gives tiles + a thumbnail for non-square images.
    """
    import transformers

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<video>",
        "<quad>",
        "</quad>",
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
    ]
    extra = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    # Qwen2 tokenizers have no BOS and add none; <|endoftext|> pads, <|im_end|> ends a turn.
    tokenizer = train_tokenizer(
        specials, spec.vocab_size, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, extra=extra, add_bos=False
    )
    ids = tokenizer.convert_tokens_to_ids
    downsample_ratio = 0.5
    image_seq_length = int((spec.image_size // spec.patch_size) ** 2 * downsample_ratio**2)
    if image_seq_length != spec.image_tokens:
        raise ValueError(f"internvl: spec.image_tokens={spec.image_tokens}, geometry gives {image_seq_length}")
    image_processor = transformers.GotOcr2ImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size},
        crop_to_patches=max_patches > 1,
        min_patches=1,
        max_patches=max_patches,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = image_only_processor(transformers.InternVLProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    eos_ids = [ids("<|im_end|>"), ids("<|endoftext|>")]
    config = transformers.InternVLConfig(
        vision_config=transformers.InternVLVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=transformers.Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=None,
            eos_token_id=eos_ids[0],
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        ),
        image_token_id=ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=downsample_ratio,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        # InternVL3-1B ties its embeddings; untied here because a tied tiny random model just repeats the
        # last prompt token (its logits are dominated by e_last . e_j), which hides batching mistakes.
        tie_word_embeddings=False,
    )
    model = transformers.InternVLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    scale_qk(model.model.language_model)
    return processor, model
