"""``tiny-random``: small vision-language models built offline from configs, for plumbing and speed.

Each is a real transformers architecture (LLaVA, Gemma 3) with random weights, a real processor, an
in-memory byte-level BPE tokenizer trained on a fixed corpus, and a chat template. It is saved to a
cache folder and loaded back through the normal ``from_pretrained`` path, deterministic for a seed.

Its answers are noise: tiny-random proves plumbing, batching and speed ratios, never safety.

Geometries:
- ``llava`` (default): LLaVA-1.5's 336 px images in 14 px patches = 576 image tokens.
- ``gemma3``: Gemma 3's 896 px images in 14 px patches pooled to 256 image tokens.
- ``llava-small`` / ``gemma3-small``: 28 px images and 4 image tokens, for fast tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingDependencyError

__all__ = ["TINY_VARIANTS", "TinySpec", "build_tiny_model", "tiny_cache_dir"]

# Bump when the build recipe changes, so that stale cached models are rebuilt.
_RECIPE_VERSION = 1


@dataclass(frozen=True)
class TinySpec:
    """The shape of one tiny-random variant."""

    arch: str
    image_size: int
    patch_size: int
    image_tokens: int
    text_hidden: int = 128
    text_layers: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    vocab_size: int = 2048


TINY_VARIANTS: dict[str, TinySpec] = {
    "llava": TinySpec("llava", image_size=336, patch_size=14, image_tokens=576),
    "gemma3": TinySpec("gemma3", image_size=896, patch_size=14, image_tokens=256),
    "llava-small": TinySpec("llava", image_size=28, patch_size=14, image_tokens=4, text_hidden=64, vision_hidden=32),
    "gemma3-small": TinySpec("gemma3", image_size=56, patch_size=14, image_tokens=4, text_hidden=64, vision_hidden=32),
}

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


def tiny_cache_dir() -> Path:
    """Where tiny-random models are saved: ``$ECSO_CACHE/tiny-random`` or ``~/.cache/ecso/tiny-random``."""
    root = os.environ.get("ECSO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ecso")
    return Path(root) / "tiny-random"


def build_tiny_model(variant: str = "llava", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Build (once) and return the folder of the tiny-random ``variant``, ready for ``from_pretrained``.

    Raises:
        ConfigError: unknown variant.
        MissingDependencyError: transformers / torch are not installed.

    """
    try:
        spec = TINY_VARIANTS[variant]
    except KeyError:
        raise ConfigError(f"unknown tiny-random variant {variant!r}; known: {sorted(TINY_VARIANTS)}") from None
    target = (cache_dir or tiny_cache_dir()) / f"{variant}-seed{seed}-r{_RECIPE_VERSION}"
    if (target / "config.json").is_file():
        return target
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "transformers", "hf") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=target.parent))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        torch.manual_seed(seed)
        processor, model = (_build_llava if spec.arch == "llava" else _build_gemma3)(spec)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a concurrent builder may have won the race
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _tokenizer(
    specials: list[str], vocab_size: int, bos: str, eos: str, pad: str, unk: str, extra: dict[str, str], add_bos: bool
):  # noqa: ANN202
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        padding_side="left",
        extra_special_tokens=extra,
    )


def _build_llava(spec: TinySpec):  # noqa: ANN202
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer(
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
        tokenizer=tokenizer,
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
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=spec.image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return processor, LlavaForConditionalGeneration(config).eval()


def _build_gemma3(spec: TinySpec):  # noqa: ANN202
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    specials = [
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
    tokenizer = _tokenizer(
        specials,
        spec.vocab_size,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        add_bos=True,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=spec.image_tokens,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(
            hidden_size=spec.vision_hidden,
            intermediate_size=2 * spec.vision_hidden,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=2,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
        ),
        text_config=Gemma3TextConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=2 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=4096,
            sliding_window=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=[tokenizer.eos_token_id, ids("<end_of_turn>")],
            pad_token_id=tokenizer.pad_token_id,
        ),
        mm_tokens_per_image=spec.image_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    return processor, Gemma3ForConditionalGeneration(config).eval()
