"""Every supported VLM family, built offline as tiny-random, runs ECSO; its fast paths equal the plain path.

For each family: the whole flow (safe and unsafe), and prefix reuse on vs off giving the same answers,
the same P(yes) (within 1e-4) and the same captions, for a single request, a ragged batch of images of
different sizes, a split verdict (the caption batch smaller than the answer batch), interleaved requests
and a two-image request. A family whose reuse is not exact must report it off.
"""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

pytest.importorskip("transformers")

from ecso_core import ECSO, ChatRequest, ECSOConfig, GenerationParams, ImagePart, Message, TextPart
from ecso_core.backends.transformers import TransformersBackend

FAMILIES = [
    "llava-small",
    "gemma3-small",
    "qwen2-vl-small",
    "qwen2.5-vl-small",
    "qwen3-vl-small",
    "glm4v-small",
    "llava-next-small",
    "llava-onevision-small",
    "mistral3-small",
    "mllama-small",
    "smolvlm-small",
    "idefics3-small",
    "internvl-small",
    "paligemma-small",
]
# Fast paths a family cannot have exactly, and the reason describe() must give (found by the load-time probe).
REUSE_OFF = {
    "mllama-small": "cross-attention layers cache image states, not prompt positions",
    "paligemma-small": "next-token log-probabilities differ from the plain computation",  # prefix-LM, 1-based
}
IMAGE_CACHE_OFF = {
    "llava-onevision-small": "per-image processing differs from the processor's own for two images of one size",
}


@pytest.fixture(scope="module", params=FAMILIES)
def backend(request: pytest.FixtureRequest) -> TransformersBackend:
    from ecso_core import load_backend

    return load_backend(f"tiny-random:{request.param}")  # type: ignore[return-value]


def picture(width: int, height: int, seed: int) -> Image.Image:
    import torch

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    return Image.fromarray(pixels.numpy(), "RGB")


def ask(text: str, *images: Image.Image, tokens: int = 4) -> ChatRequest:
    parts = (*(ImagePart(image=i) for i in images), TextPart(text=text))
    return ChatRequest(messages=(Message(role="user", content=parts),), params=GenerationParams(max_new_tokens=tokens))


def config(threshold: float) -> ECSOConfig:
    short = GenerationParams(max_new_tokens=4)
    return ECSOConfig(verdict_threshold=threshold, min_score_mass=0.0, caption_params=short, eyes_closed_params=short)


def outcome(result: Any) -> tuple[Any, ...]:
    return (result.decision, result.answer, result.initial_answer, result.captions, round(result.verdict.p_yes, 4))


def both(backend: TransformersBackend, run: Any) -> tuple[Any, Any]:
    """``run()`` with prefix reuse (after clearing the caches) and without it."""
    backend._prefix_cache.clear()
    with backend.reuse_disabled():
        plain = run()
    backend._prefix_cache.clear()
    before = backend.reused_calls
    reused = run()
    return plain, reused, backend.reused_calls - before


def test_the_family_loads_without_torchvision_and_reports_its_fast_paths(backend: TransformersBackend) -> None:
    described = backend.describe()
    assert described["image_processor_class"].endswith("Pil")  # PIL processors: no torchvision needed
    family = backend.name.removeprefix("tiny-random:")
    assert described["fast_paths"]["image_cache"] == IMAGE_CACHE_OFF.get(family)
    reuse = described["fast_paths"]["prefix_reuse"]
    assert (reuse is None) == (family not in REUSE_OFF)
    assert (reuse or "").startswith(REUSE_OFF.get(family, ""))


@pytest.mark.parametrize("threshold", [1.0, 0.0], ids=["safe", "unsafe"])
def test_ecso_runs_the_whole_flow(backend: TransformersBackend, threshold: float) -> None:
    result = ECSO(backend, config(threshold)).run(ask("What is shown here?", picture(60, 40, 1), tokens=4))
    expected = ["answer", "check"] if threshold == 1.0 else ["answer", "check", "caption", "eyes_closed"]
    assert [s.name for s in result.steps] == expected
    assert result.decision == ("safe" if threshold == 1.0 else "unsafe")
    if threshold == 0.0:  # the eyes-closed answer is text only, through the model's own template
        assert not any(m.images for m in result.steps[-1].messages)
        assert result.steps[-1].usage.prompt_tokens > 0


def test_reuse_equals_plain_for_a_single_request(backend: TransformersBackend) -> None:
    guard = ECSO(backend, config(0.0))
    plain, reused, count = both(backend, lambda: outcome(guard.run(ask("Describe this.", picture(50, 50, 2)))))
    assert plain == reused
    assert (count > 0) == (backend.name.removeprefix("tiny-random:") not in REUSE_OFF)  # off means never used


def test_reuse_equals_plain_for_a_ragged_batch_of_image_sizes(backend: TransformersBackend) -> None:
    guard = ECSO(backend, config(0.0))
    requests = [
        ask("Hi.", picture(30, 60, 3)),
        ask("What could a person do with the objects here?", picture(90, 50, 4)),
        ask("Colours?", picture(56, 56, 5)),
    ]
    plain, reused, _ = both(backend, lambda: [outcome(r) for r in guard.run_batch(requests)])
    assert plain == reused


def test_reuse_equals_plain_when_verdicts_split(backend: TransformersBackend) -> None:
    requests = [ask(f"Question {i} about the picture?", picture(40 + 9 * i, 48, 10 + i)) for i in range(4)]
    with backend.reuse_disabled():
        scores = sorted(r.verdict.p_yes for r in ECSO(backend, config(1.0)).run_batch(requests))
    threshold = (scores[1] + scores[2]) / 2  # half of the batch goes on to captions
    guard = ECSO(backend, config(threshold))
    plain, reused, _ = both(backend, lambda: [outcome(r) for r in guard.run_batch(requests)])
    assert plain == reused
    assert sorted(d for d, *_ in reused) == ["safe", "safe", "unsafe", "unsafe"]


def test_reuse_equals_plain_for_interleaved_requests(backend: TransformersBackend) -> None:
    guard = ECSO(backend, config(0.0))
    first, second = ask("First?", picture(40, 40, 20)), ask("Second question, longer.", picture(70, 35, 21))
    plain, reused, _ = both(backend, lambda: [outcome(guard.run(r)) for r in (first, second, first)])
    assert plain == reused
    assert plain[0] == plain[2]


def test_reuse_equals_plain_for_two_images(backend: TransformersBackend) -> None:
    guard = ECSO(backend, config(0.0))
    request = ask("Compare the two pictures.", picture(40, 40, 30), picture(64, 32, 31))
    plain, reused, _ = both(backend, lambda: outcome(guard.run(request)))
    assert plain == reused
    assert len(plain[3]) == 2
