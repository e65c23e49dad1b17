"""Wall time of ECSO vs the plain model on the same requests, in one process.

Benign path: the verdict is forced safe (``verdict_threshold=1.0``: the check still runs in full, its
outcome is ignored), so ECSO costs answer + check. Unsafe path: forced unsafe (threshold 0), so ECSO
costs answer + check + caption + eyes-closed answer. The modes take turns request by
request; prints one JSON object with the medians over ``--repeats`` runs (overheads: the median of each
run's ratio to the plain model).

    python bench/overhead.py --model tiny-random --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from PIL import Image

from ecso_core import ECSO, ChatRequest, ECSOConfig, GenerationParams, ImagePart, Message, TextPart, load_backend
from ecso_core.images import prepare_request

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    "What is on the table?",
    "List the steps shown in the image in detail.",
    "Describe the colours in this picture.",
    "What could a person do with the objects shown here?",
]


def requests(count: int, max_new_tokens: int, seed: int) -> list[ChatRequest]:
    """Image requests with pictures no earlier run has seen, so that no per-image cache is warm."""
    bases = [Image.open(ROOT / "examples/images/kitchen.png"), Image.open(ROOT / "examples/images/steps.png")]
    params = GenerationParams(max_new_tokens=max_new_tokens)
    out = []
    for i in range(count):
        image = bases[i % len(bases)].convert("RGB")
        image.paste((seed * 37 % 256, i * 53 % 256, 91), (0, 0, 24, 24))  # a mark unique to (seed, i)
        image.paste((i % 256, seed % 256, 7), (24, 0, 48, 24))
        parts = (ImagePart(image=image), TextPart(text=QUERIES[i % len(QUERIES)]))
        out.append(prepare_request(ChatRequest(messages=(Message(role="user", content=parts),), params=params)))
    return out


def machine() -> dict[str, object]:
    """Where a benchmark ran: interpreter, libraries, cores, threads, GPU."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def timed(function, items) -> float:
    start = time.perf_counter()
    for item in items:
        function(item)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt-set", default="ecso-paper")
    args = parser.parse_args()

    backend = load_backend(args.model)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    # tiny-random's random weights put little mass on yes/no: a floor of 0 times the probability
    # verdict a real model takes (with the floor, the check would fall back to text every time).
    common = {"prompt_set": args.prompt_set, "caption_params": params, "min_score_mass": 0.0}
    benign = ECSO(backend, ECSOConfig(verdict_threshold=1.0, **common))
    unsafe = ECSO(backend, ECSOConfig(verdict_threshold=0.0, **common))

    def plain(request: ChatRequest) -> None:
        backend.generate([request])

    step_latency: dict[str, list[float]] = {}

    def guarded_benign(request: ChatRequest) -> None:
        for step in benign.run(request).steps:
            step_latency.setdefault(step.name, []).append(step.latency_s)

    seeds = iter(range(1, 10_000))
    timed(plain, requests(1, args.max_new_tokens, next(seeds)))  # warm-up: first-call allocations, imports
    timed(benign.run, requests(1, args.max_new_tokens, next(seeds)))
    runs: dict[str, list[float]] = {"plain": [], "benign": [], "unsafe": []}
    modes = (("plain", plain), ("benign", guarded_benign), ("unsafe", unsafe.run))
    for _ in range(args.repeats):
        # Each mode gets its own never-seen images: no mode profits from another's caches. The modes
        # take turns request by request, so that the machine's drift (a shared VM) hits all of them alike.
        batches = {mode: requests(args.requests, args.max_new_tokens, next(seeds)) for mode, _ in modes}
        totals = dict.fromkeys(batches, 0.0)
        for index in range(args.requests):
            for mode, run in modes:
                totals[mode] += timed(run, [batches[mode][index]])
        for mode, total in totals.items():
            runs[mode].append(total)
    probe = requests(1, args.max_new_tokens, next(seeds))[0]
    decisions = {"benign": benign.run(probe).decision, "unsafe": unsafe.run(probe).decision}
    median = {k: statistics.median(v) for k, v in runs.items()}
    ratios = {  # per repeat: the modes ran side by side, so their ratio is steadier than a ratio of medians
        mode: statistics.median(a / b for a, b in zip(runs[mode], runs["plain"], strict=True))
        for mode in ("benign", "unsafe")
    }
    print(
        json.dumps(
            {
                "bench": "overhead",
                "model": args.model,
                "prompt_set": args.prompt_set,
                "requests": args.requests,
                "repeats": args.repeats,
                "max_new_tokens": args.max_new_tokens,
                "seconds_per_request": {k: round(v / args.requests, 5) for k, v in median.items()},
                "benign_overhead": round(ratios["benign"], 4),
                "benign_step_ms_median": {k: round(1000 * statistics.median(v), 2) for k, v in step_latency.items()},
                "unsafe_overhead": round(ratios["unsafe"], 4),
                "decisions": decisions,
                "all_runs_s": {k: [round(x, 4) for x in v] for k, v in runs.items()},
                "machine": machine(),
                "note": "tiny-random: random weights, real geometry; measures cost ratios, never safety",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
