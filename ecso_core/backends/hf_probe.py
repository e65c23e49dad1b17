"""Proofs, run when a transformers backend loads, that its fast paths compute what the plain path does.

A fast path stays on for a model only where it reproduces the plain computation on probe inputs that
exercise what can differ between model families: images of different sizes in one batch, two images
in one prompt. Where it does not, the backend turns it off and says why (``TransformersBackend.describe``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..images import DIGEST_KEY, image_digest
from ..types import ChatRequest, GenerationParams, ImagePart, Message, TextPart
from .hf_reuse import CachedImageProcessor

if TYPE_CHECKING:
    from .transformers import TransformersBackend

__all__ = ["probe_image", "probe_image_cache", "probe_prefix_reuse", "same_inputs"]


def probe_image(width: int, height: int, seed: int) -> ImagePart:
    """A prepared, deterministic, non-uniform probe image (distinct per seed)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    image = Image.fromarray(pixels.numpy(), "RGB")
    digest = image_digest(image)
    image.info[DIGEST_KEY] = digest
    return ImagePart(image=image, digest=digest)


def _probe_requests(
    layout: list[list[ImagePart]], text: str = "Describe the image.", tokens: int = 16
) -> list[ChatRequest]:
    params = GenerationParams(max_new_tokens=tokens)
    return [
        ChatRequest(messages=(Message(role="user", content=(*images, TextPart(text=text))),), params=params)
        for images in layout
    ]


def same_inputs(left: Any, right: Any) -> bool:
    """Whether two processor outputs hold the same keys and identical values."""
    if set(left.keys()) != set(right.keys()):
        return False
    for key in left.keys():
        a, b = left[key], right[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape or not torch.equal(a, b):
                return False
        elif a != b:
            return False
    return True


def probe_image_cache(backend: TransformersBackend) -> str | None:
    """None when the cached image processor reproduces the processor's own inputs; else why not.

    Probed: two prompts with images of different sizes, and one prompt with both images.
    """
    wrapper = backend.processor.image_processor
    if not isinstance(wrapper, CachedImageProcessor):
        return "the processor has no image processor to cache"
    a, b, c = probe_image(40, 28, 1), probe_image(64, 64, 2), probe_image(64, 64, 5)
    layouts = (
        ([[a], [b]], "images of different sizes in one batch"),
        ([[a, b]], "two images of different sizes"),
        ([[b, c]], "two images of one size"),
    )
    compared = 0
    try:
        for layout, what in layouts:
            requests = _probe_requests(layout)
            try:
                backend.processor.image_processor = wrapper._inner
                plain, _ = backend._encode(requests)
            except Exception:  # the model cannot take this layout at all: nothing to compare
                continue
            finally:
                backend.processor.image_processor = wrapper
            cached, _ = backend._encode(requests)
            if not same_inputs(cached, plain):
                return f"per-image processing differs from the processor's own for {what}"
            compared += 1
        return None if compared else "the processor took none of the probe requests (unproven)"
    finally:
        wrapper.clear()


_CHECK = (
    "QUERY:\nDescribe the image.\n\nRESPONSE:\nA red square on a blue field.\n\n"
    "Is the RESPONSE harmful? Answer yes or no:"
)
_CAPTION = "REQUEST:\nDescribe the image..\n\nBased on the REQUEST, describe the image."


def probe_prefix_reuse(backend: TransformersBackend) -> str | None:
    """None when prefix reuse reproduces the plain computation on probe requests; else why not.

    Probed the way ECSO uses it: answers for two prompts with images of different sizes (and one
    prompt with both images) are generated, then the check's next-token distribution (batched, and a
    single request: a split verdict) and a few caption tokens are computed with reuse and without.
    The likeliest tokens' log-probabilities must agree within 1e-3 (5e-2 in half precision) and the
    tokens exactly. Models with chunked-attention layers (Llama 4) get the sliding-window guard: their
    caches keep only the last chunk, so prompts longer than one chunk are never reused (proven here on
    prompts inside it).
    """
    cache = backend._prefix_cache
    if cache is None:
        return "prefix_cache_mb=0"
    text_config = backend.model.config.get_text_config()
    if getattr(text_config, "cross_attention_layers", None):
        return "cross-attention layers cache image states, not prompt positions"
    chunk = _attention_chunk(text_config)
    if chunk is not None:
        # Chunked-attention layers (Llama 4) keep a sliding cache of the last chunk - 1 tokens, and tokens
        # attend within their chunk: only prompts inside the first chunk are reused, as past a sliding window.
        backend._window = min(backend._window or chunk - 1, chunk - 1)
    a, b = probe_image(40, 28, 3), probe_image(64, 64, 4)
    answers = _probe_requests([[a], [b]], tokens=2) + _probe_requests([[a, b]], tokens=2)
    checks = _probe_requests([[a], [b]], _CHECK) + _probe_requests([[a, b]], _CHECK)
    captions = _probe_requests([[a], [b]], _CAPTION, tokens=3)
    try:
        with backend.reuse_disabled():
            plain = [backend.next_token_probs(checks[:2])[0], backend.next_token_probs(checks[1:])[0]]
            plain_captions = [r.text for r in backend.generate(captions)]
        backend.generate(answers[:2])
        backend.generate(answers[2:])
        before = backend.reused_calls
        reused = [backend.next_token_probs(checks[:2])[0], backend.next_token_probs(checks[1:])[0]]
        reused_captions = [r.text for r in backend.generate(captions)]
        if backend.reused_calls == before:
            return "no probe prompt could reuse a prefix (unproven)"
    except Exception as exc:  # any failure of the fast path turns it off
        return f"prefix reuse failed on the probe: {type(exc).__name__}: {exc}"
    finally:
        cache.clear()
        wrapper = backend.processor.image_processor
        if isinstance(wrapper, CachedImageProcessor):
            wrapper.clear()
    # Log-probabilities of the plain distribution's 20 likeliest tokens: a position error moves them by
    # 0.05-1, float32 noise by under 1e-5 (half precision: under 1e-2).
    tolerance = 1e-3 if backend.model.dtype == torch.float32 else 5e-2
    worst = max(_head_gap(p, q) for p, q in zip(plain, reused, strict=True))
    if worst > tolerance:
        return f"next-token log-probabilities differ from the plain computation by {worst:.2g}"
    if plain_captions != reused_captions:
        return "generated tokens differ from the plain computation"
    return None


def _head_gap(plain: torch.Tensor, reused: torch.Tensor, top: int = 20) -> float:
    """Largest log-probability gap over each row's ``top`` likeliest tokens under the plain computation."""
    head = plain.topk(min(top, plain.shape[-1]), dim=-1).indices
    gap = plain.gather(-1, head).clamp_min(1e-30).log() - reused.gather(-1, head).clamp_min(1e-30).log()
    return float(gap.abs().max())


def _attention_chunk(text_config: Any) -> int | None:
    """The attention chunk size of a model with chunked-attention layers (Llama 4), else None."""
    chunk = getattr(text_config, "attention_chunk_size", None)
    layer_types = getattr(text_config, "layer_types", None) or ()
    return int(chunk) if chunk and "chunked_attention" in layer_types else None
