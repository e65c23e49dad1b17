"""Reuse across ECSO steps: cached results equal uncached ones, and the image is encoded once.

tiny-random's outputs are noise; these tests compare two computations of the same noise.
"""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from ecso_core import ECSO, ChatRequest, ECSOConfig, GenerationParams, ImagePart, Message, TextPart, load_backend

pytest.importorskip("transformers")

from ecso_core.backends.transformers import TransformersBackend

SPECS = ["tiny-random", "tiny-random:gemma3-small", "tiny-random:llava-small"]


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.effect_noise(size, 30 + seed).convert("RGB")


def request(text: str, image: Image.Image, system: str | None = None) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=(ImagePart(image=image), TextPart(text=text))))
    return ChatRequest(messages=tuple(messages), params=GenerationParams(max_new_tokens=6))


def fresh(spec: str, reuse: bool) -> TransformersBackend:
    backend = load_backend(spec, prefix_cache_mb=512 if reuse else 0)
    assert isinstance(backend, TransformersBackend)
    return backend


def count_vision_calls(backend: TransformersBackend) -> list[int]:
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    backend.model.model.vision_tower.register_forward_hook(hook)
    return calls


def outcome(result: Any) -> tuple[Any, ...]:
    return (result.decision, result.answer, result.initial_answer, result.captions, round(result.verdict.p_yes, 5))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("threshold", [1.0, 0.0])  # forced safe, forced unsafe
def test_reuse_gives_the_same_results_and_encodes_the_image_once(spec: str, threshold: float) -> None:
    params = GenerationParams(max_new_tokens=6)
    config = ECSOConfig(min_score_mass=0.0, verdict_threshold=threshold, caption_params=params)
    cached, plain = fresh(spec, True), fresh(spec, False)
    cached_calls, plain_calls = count_vision_calls(cached), count_vision_calls(plain)
    req = request("What is shown here?", picture(1))
    with_reuse = ECSO(cached, config).run(req)
    without = ECSO(plain, config).run(req)
    assert outcome(with_reuse) == outcome(without)
    steps_with_image = 2 if threshold == 1.0 else 3
    assert plain_calls[0] == steps_with_image
    assert cached_calls[0] == 1  # answer only: check and caption reuse its prefix


def test_batched_reuse_equals_uncached_and_never_mixes_images() -> None:
    config = ECSOConfig(min_score_mass=0.0, verdict_threshold=0.0, caption_params=GenerationParams(max_new_tokens=5))
    same_text = [request("Describe it.", picture(s)) for s in range(3)]
    mixed = [*same_text, request("Another question entirely", picture(9), system="Be brief.")]
    cached = ECSO(fresh("tiny-random:llava-small", True), config).run_batch(mixed)
    plain = ECSO(fresh("tiny-random:llava-small", False), config).run_batch(mixed)
    assert [outcome(r) for r in cached] == [outcome(r) for r in plain]


def test_prompts_longer_than_the_sliding_window_are_not_reused() -> None:
    backend = fresh("tiny-random:gemma3-small", True)
    backend._window = 8  # shorter than any prompt here
    calls = count_vision_calls(backend)
    ECSO(backend, ECSOConfig(min_score_mass=0.0, verdict_threshold=1.0)).run(request("What is shown here?", picture(2)))
    assert calls[0] == 2
    assert len(backend._prefix_cache) == 0


def test_image_processing_runs_once_per_image() -> None:
    backend = fresh("tiny-random:llava-small", True)
    inner = backend.processor.image_processor._inner
    seen = [0]
    original = type(inner).__call__

    def counting(self: Any, images: Any, *args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        return original(self, images, *args, **kwargs)

    type(inner).__call__ = counting  # type: ignore[method-assign]
    try:
        params = GenerationParams(max_new_tokens=4)
        config = ECSOConfig(min_score_mass=0.0, verdict_threshold=0.0, caption_params=params)
        ECSO(backend, config).run(request("What is shown here?", picture(3)))
    finally:
        type(inner).__call__ = original  # type: ignore[method-assign]
    assert seen[0] == 1  # answer, check and caption share one processed image


def test_unprepared_images_are_never_cached() -> None:
    backend = fresh("tiny-random:llava-small", True)
    backend.generate([request("hi", picture(4))])  # raw PIL image: no digest, nothing stored
    assert len(backend._prefix_cache) == 0


@pytest.mark.parametrize("spec", ["tiny-random:llava-small", "tiny-random:gemma3-small"])
def test_batched_check_and_captions_reuse_ragged_prefixes(spec: str) -> None:
    config = ECSOConfig(min_score_mass=0.0, verdict_threshold=0.0, caption_params=GenerationParams(max_new_tokens=5))
    batch = [
        request("Describe it.", picture(11)),
        request("What could someone do with the objects in this picture, step by step?", picture(12)),
        request("Colours?", picture(13, (30, 90))),
    ]
    cached_backend, plain_backend = fresh(spec, True), fresh(spec, False)
    calls = count_vision_calls(cached_backend)
    cached = ECSO(cached_backend, config).run_batch(batch)
    plain = ECSO(plain_backend, config).run_batch(batch)
    assert [outcome(r) for r in cached] == [outcome(r) for r in plain]
    assert calls[0] == 1  # one batched vision pass for the answers; checks and captions reuse it


def test_prefix_cache_is_bounded_and_indexed_by_images() -> None:
    import torch

    from ecso_core.backends.hf_reuse import PrefixCache

    class Layer:
        def __init__(self, tokens: int) -> None:
            self.keys = torch.zeros(1, 1, tokens, 4)
            self.values = torch.zeros(1, 1, tokens, 4)

    class Cache:
        layers = [Layer(5)]

    cache = PrefixCache(max_bytes=3 * 2 * 5 * 4 * 4)  # room for three 5-token entries
    for n in range(5):
        ids = torch.tensor([[n, 1, 2, 3, 4]])
        cache.store([(f"img{n}",)], ids, torch.ones_like(ids), Cache(), None)
    assert len(cache) == 3
    assert len(cache._by_images) == 3
    assert cache.lookup(("img0",), torch.tensor([0, 1, 2])) is None
    hit = cache.lookup(("img4",), torch.tensor([4, 1, 2, 9]))
    assert hit is not None
    assert hit.length == 3
    assert cache.lookup(("other",), torch.tensor([4, 1, 2, 9])) is None  # same ids, other image: no hit
