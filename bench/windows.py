"""Cost of judging a long answer in windows vs the paper's single (truncated) check, as JSON.

On a transformers model (default tiny-random, LLaVA-1.5 geometry: 576 image tokens), the answer prompt
is run once so that the image prefix is cached, as in a guarded request; then the check of a
4,000-character answer is timed two ways: the paper's single prompt over its first 1,927 characters,
and every window of the whole answer in one batched call (what ECSO does now). Medians of
``--repeats``; with the prefix cache on and off.

    python bench/windows.py --model tiny-random --chars 4000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from PIL import Image

from ecso_core import ChatRequest, ECSOConfig, GenerationParams, ImagePart, Message, TextPart, load_backend
from ecso_core.flow import answer_windows
from ecso_core.images import prepare_request
from ecso_core.prompts import get_prompt_set

ROOT = Path(__file__).resolve().parents[1]
QUERY = "List the steps shown in the image in detail."


def check_request(image: ImagePart, window: str, config: ECSOConfig) -> ChatRequest:
    text = get_prompt_set(config.prompt_set, config.prompt_overrides).render(
        "check", query=QUERY, response=window, fence=""
    )
    return ChatRequest(messages=(Message(role="user", content=(image, TextPart(text=text))),))


def answer_text(chars: int) -> str:
    sentences = [f"Step {i}: take the part marked {i} and fit it into the frame, then tighten it. " for i in range(999)]
    return "".join(sentences)[:chars]


def measure(model: str, chars: int, repeats: int, prefix_cache_mb: int) -> dict[str, object]:
    backend = load_backend(model, prefix_cache_mb=prefix_cache_mb)
    config = ECSOConfig()
    picture = Image.open(ROOT / "examples/images/steps.png").convert("RGB")
    request = prepare_request(
        ChatRequest(
            messages=(Message(role="user", content=(ImagePart(image=picture), TextPart(text=QUERY))),),
            params=GenerationParams(max_new_tokens=1),
        )
    )
    image = request.messages[0].content[0]
    backend.generate([request])  # the answer step: caches the image prefix, as in a guarded request
    answer = answer_text(chars)
    windows = answer_windows(answer, config.check_response_chars, config.check_window_overlap)
    single = [check_request(image, answer[: config.check_response_chars], config)]
    windowed = [check_request(image, window, config) for window in windows]
    timings: dict[str, list[float]] = {"single": [], "windows": []}
    for _ in range(repeats):
        for name, batch in (("single", single), ("windows", windowed)):
            start = time.perf_counter()
            backend.score_yes_no(batch)
            timings[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "prefix_cache_mb": prefix_cache_mb,
        "windows": len(windows),
        "single_check_ms": round(1000 * median["single"], 2),
        "windowed_check_ms": round(1000 * median["windows"], 2),
        "ratio": round(median["windows"] / median["single"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--chars", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    runs = [measure(args.model, args.chars, args.repeats, mb) for mb in (512, 0)]
    from overhead import machine

    print(
        json.dumps(
            {
                "bench": "windows",
                "model": args.model,
                "answer_chars": args.chars,
                "repeats": args.repeats,
                "with_prefix_cache": runs[0],
                "without_prefix_cache": runs[1],
                "machine": machine(),
                "note": "tiny-random: random weights, real geometry; measures cost ratios, never safety",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
