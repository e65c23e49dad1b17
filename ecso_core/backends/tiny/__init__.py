"""``tiny-random``: small vision-language models built offline from configs, for plumbing and speed.

Each is a real transformers architecture with random weights, a real processor (built from the PIL
image processor: no torchvision), an in-memory byte-level BPE tokenizer trained on a fixed corpus, and
a chat template after the family's own. It is saved to a cache folder and loaded back through the
normal ``from_pretrained`` path, deterministic for a seed. The language model's q/k projections are
scaled up so that attention is sharp and a wrong position shows (tests prove fast paths exact on them).

Its answers are noise: tiny-random proves plumbing, batching and speed ratios, never safety. Each
declares a small ``max_new_tokens`` (:data:`TINY_MAX_NEW_TOKENS`) in its ``generation_config``: its random
weights never end an answer, and a first run should take seconds.

Variants (``tiny-random:<variant>``): a family name gives its realistic image geometry (LLaVA-1.5: 336 px
in 14 px patches = 576 image tokens; Gemma 3: 896 px pooled to 256; Qwen2/2.5-VL and GLM-4V: 448 px =
256; Qwen3-VL: 448 px = 196); ``<family>-small`` gives a handful of image tokens, for fast tests. The
safety judges (``llama-guard-4``, ``llama-guard-3-vision``, ``shieldgemma-2``) are small only. See
:data:`TINY_VARIANTS` and docs/models.md.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, MissingDependencyError

__all__ = ["FAMILIES", "TINY_MAX_NEW_TOKENS", "TINY_VARIANTS", "TinySpec", "build_tiny_model", "tiny_cache_dir"]

# Bump when a build recipe changes, so that stale cached models are rebuilt.
_RECIPE_VERSION = 4

TINY_MAX_NEW_TOKENS = 16
"""The ``max_new_tokens`` every tiny-random model declares in its saved ``generation_config``.

Random weights never emit an end-of-sequence token, so without a default of its own every call would
run to the paper's 1,024 tokens and a newcomer's first ``ecso ask`` would take minutes on a CPU. A
request that sets ``GenerationParams.max_new_tokens`` (``--max-new-tokens``) still gets what it asks."""


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


FAMILIES: dict[str, str] = {
    "llava": "llava:build_llava",
    "gemma3": "gemma:build_gemma3",
    "qwen2_vl": "qwen:build_qwen2_vl",
    "qwen2_5_vl": "qwen:build_qwen2_5_vl",
    "qwen3_vl": "qwen:build_qwen3_vl",
    "glm4v": "qwen:build_glm4v",
    "llava_next": "anyres:build_llava_next",
    "llava_onevision": "anyres:build_llava_onevision",
    "mistral3": "anyres:build_mistral3",
    "mllama": "mllama:build_mllama",
    "smolvlm": "idefics:build_smolvlm",
    "idefics3": "idefics:build_idefics3",
    "internvl": "internvl:build_internvl",
    "paligemma": "gemma:build_paligemma",
    # Safety judges: fine-tuned VLMs whose answers are verdicts ("safe" / "unsafe" + categories, "Yes" / "No").
    "llama_guard_4": "llama4:build_llama_guard_4",
    "llama_guard_3_vision": "llama_guard:build_llama_guard_3_vision",
    "shieldgemma2": "shieldgemma:build_shieldgemma2",
}
"""Architecture -> ``module:builder`` in this package (imported when first built)."""


def _small(arch: str, image_size: int, patch_size: int = 14, text_hidden: int = 64) -> TinySpec:
    return TinySpec(arch, image_size=image_size, patch_size=patch_size, image_tokens=4, text_hidden=text_hidden,
                    vision_hidden=32)  # fmt: skip


TINY_VARIANTS: dict[str, TinySpec] = {
    "llava": TinySpec("llava", image_size=336, patch_size=14, image_tokens=576),
    "gemma3": TinySpec("gemma3", image_size=896, patch_size=14, image_tokens=256),
    "llava-small": _small("llava", 28),
    "gemma3-small": _small("gemma3", 56),
    # M-RoPE families: dynamic resolution; `image_size` is the side whose square gives `image_tokens`.
    "qwen2-vl": TinySpec("qwen2_vl", image_size=448, patch_size=14, image_tokens=256),
    "qwen2.5-vl": TinySpec("qwen2_5_vl", image_size=448, patch_size=14, image_tokens=256),
    "qwen3-vl": TinySpec("qwen3_vl", image_size=448, patch_size=16, image_tokens=196),
    "glm4v": TinySpec("glm4v", image_size=448, patch_size=14, image_tokens=256),
    "qwen2-vl-small": _small("qwen2_vl", 56),
    "qwen2.5-vl-small": _small("qwen2_5_vl", 56),
    "qwen3-vl-small": _small("qwen3_vl", 64, patch_size=16),
    "glm4v-small": _small("glm4v", 56, text_hidden=128),  # half-rotary heads need head_dim 32
    # SmolVLM-256M's 64 image tokens per tile (here one 256 px tile in 16 px patches, pixel shuffle x2).
    "smolvlm": TinySpec("smolvlm", image_size=256, patch_size=16, image_tokens=64),
    "llava-next-small": _small("llava_next", 28),
    "llava-onevision-small": _small("llava_onevision", 28),
    "mistral3-small": _small("mistral3", 56),  # longest edge 56 px: at most 2x2 merged tokens
    "mllama-small": TinySpec("mllama", image_size=28, patch_size=14, image_tokens=5, text_hidden=64, vision_hidden=32),
    "smolvlm-small": _small("smolvlm", 56),
    "idefics3-small": _small("idefics3", 56),
    "internvl-small": _small("internvl", 56),
    "paligemma-small": _small("paligemma", 28),
    # Safety judges, small only: 14 px patches, 56 px tiles (Llama 4) or images (Gemma 3), mllama-small's geometry.
    "llama-guard-4": TinySpec("llama_guard_4", image_size=56, patch_size=14, image_tokens=4, text_hidden=64,
                              text_layers=4, vision_hidden=32),  # four layers: the fourth is Llama 4's NoPE layer
    "llama-guard-3-vision": TinySpec("llama_guard_3_vision", image_size=28, patch_size=14, image_tokens=5,
                                     text_hidden=64, vision_hidden=32),  # mllama-small's geometry
    "shieldgemma-2": _small("shieldgemma2", 56),
}  # fmt: skip


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
        processor, model = _builder(spec.arch)(spec)
        # A classifier around a generative model (ShieldGemma 2) has no generation config: its inner model's
        # is saved beside it, for the loader (which runs the inner model) to read.
        own = getattr(model, "generation_config", None)
        generation = own if own is not None else model.model.generation_config
        generation.max_new_tokens = TINY_MAX_NEW_TOKENS  # the model's own default
        model.save_pretrained(staging)
        if own is None:
            generation.save_pretrained(staging)
        processor.save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a concurrent builder may have won the race
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _builder(arch: str) -> Any:
    module, _, name = FAMILIES[arch].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
