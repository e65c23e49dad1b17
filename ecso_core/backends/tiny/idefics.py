"""tiny-random Idefics-style families: SmolVLM and Idefics3 (pixel-shuffle connector, image tiles).

Small geometry: 56 px tiles in 14 px patches, pixel shuffle x2 -> 4 ``<image>`` tokens per tile, image
splitting off (one tile per image). SmolVLM-256M itself uses 512 px tiles of 64 tokens with splitting on
(``smolvlm`` below keeps the 64 tokens per tile, without splitting). SmolVLM's processor is built image-only
(its video processor needs torchvision) and needs ``num2words``, as the official one does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from ..hf_loading import image_only_processor
from ._text import scale_qk
from ._text import tokenizer as train_tokenizer

if TYPE_CHECKING:
    from . import TinySpec

__all__ = ["IDEFICS3_CHAT_TEMPLATE", "SMOLVLM_CHAT_TEMPLATE", "build_idefics3", "build_smolvlm"]

# SmolVLM(-256M/-500M/-Instruct) as HuggingFaceTB ships it: "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:".
# The <|im_start|> at the front is SmolVLM's BOS token; "User:" with no space when the turn starts with an image.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Idefics3-8B-Llama3: the same turn format behind Llama 3's BOS.
IDEFICS3_CHAT_TEMPLATE = "<|begin_of_text|>" + SMOLVLM_CHAT_TEMPLATE[len("<|im_start|>") :]


class _VisionKwargs(TypedDict):
    """The SigLIP-like vision config both families share (keyword arguments of its config class)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int


def _llama_text(spec: TinySpec, tokenizer: Any, eos_ids: list[int]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=2 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )


def _idefics_like(spec: TinySpec, arch: str, image_splitting: bool) -> tuple[Any, Any]:
    import transformers

    rows_cols = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    if arch == "smolvlm":
        bos, eos, pad, unk, add_bos = "<|im_start|>", "<end_of_utterance>", "<|im_end|>", "<|endoftext|>", False
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        template = SMOLVLM_CHAT_TEMPLATE
    else:
        bos, eos, pad, unk, add_bos = "<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<unk>", True
        specials = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<pad>"]
        template = IDEFICS3_CHAT_TEMPLATE
    specials += ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *rows_cols]
    extra = {
        "fake_image_token": "<fake_token_around_image>",
        "image_token": "<image>",
        "end_of_utterance_token": "<end_of_utterance>",
        "global_image_token": "<global-img>",
    }
    tokenizer = train_tokenizer(
        specials, spec.vocab_size, bos=bos, eos=eos, pad=pad, unk=unk, extra=extra, add_bos=add_bos
    )
    ids = tokenizer.convert_tokens_to_ids
    tile = spec.image_size
    image_kwargs = {
        "size": {"longest_edge": 2 * tile if image_splitting else tile},
        "max_image_size": {"longest_edge": tile},
        "do_image_splitting": image_splitting,
    }
    scale_factor = 2
    image_seq_len = (spec.image_size // spec.patch_size) ** 2 // scale_factor**2
    if image_seq_len != spec.image_tokens:
        raise ValueError(f"{arch}: spec.image_tokens={spec.image_tokens}, geometry gives {image_seq_len}")
    processor: transformers.ProcessorMixin
    if arch == "smolvlm":
        processor = image_only_processor(transformers.SmolVLMProcessor)(
            image_processor=transformers.SmolVLMImageProcessorPil(**image_kwargs),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=template,
        )
    else:
        processor = transformers.Idefics3Processor(
            image_processor=transformers.Idefics3ImageProcessorPil(**image_kwargs),
            tokenizer=tokenizer,
            image_seq_len=image_seq_len,
            chat_template=template,
        )
    eos_ids = [tokenizer.eos_token_id, ids("<end_of_utterance>")]
    eos_ids = list(dict.fromkeys(eos_ids))
    vision = _VisionKwargs(
        hidden_size=spec.vision_hidden,
        intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    text = _llama_text(spec, tokenizer, eos_ids)
    # pad_token_id is no declared field of these configs (so not in their signature); they accept and keep it
    model: transformers.SmolVLMForConditionalGeneration | transformers.Idefics3ForConditionalGeneration
    if arch == "smolvlm":
        smolvlm_config = transformers.SmolVLMConfig(  # type: ignore[call-arg]
            vision_config=transformers.SmolVLMVisionConfig(**vision),
            text_config=text,
            image_token_id=ids("<image>"),
            scale_factor=scale_factor,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = transformers.SmolVLMForConditionalGeneration(smolvlm_config).eval()
    else:
        idefics3_config = transformers.Idefics3Config(  # type: ignore[call-arg]
            vision_config=transformers.Idefics3VisionConfig(**vision),
            text_config=text,
            image_token_id=ids("<image>"),
            scale_factor=scale_factor,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = transformers.Idefics3ForConditionalGeneration(idefics3_config).eval()
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    scale_qk(model.model.text_model)  # Idefics-style models call their language model `text_model`
    return processor, model


def build_smolvlm(spec: TinySpec, image_splitting: bool = False) -> tuple[Any, Any]:
    """Tiny SmolVLM (Llama text model, SigLIP-like vision, pixel-shuffle connector)."""
    return _idefics_like(spec, "smolvlm", image_splitting)


def build_idefics3(spec: TinySpec, image_splitting: bool = False) -> tuple[Any, Any]:
    """Tiny Idefics3 (same architecture family as SmolVLM, Llama 3 style tokens)."""
    return _idefics_like(spec, "idefics3", image_splitting)
