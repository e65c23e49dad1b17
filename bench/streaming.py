"""Time to first token and total time: plain streaming, ECSO "whole" and "progressive" streaming.

Benign: the check runs in full and its verdict is forced safe (``verdict_threshold=1.0``); flagged: forced
unsafe at the first window (threshold 0). Each mode gets never-seen images; modes take turns request by
request. Prints one JSON object with medians.

    python bench/streaming.py --model tiny-random --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

from overhead import machine, requests

from ecso_core import ECSO, ECSOConfig, GenerationParams, TextDelta, load_backend


def timed_stream(events: Iterator[Any], is_text: Any) -> tuple[float, float, Any]:
    """(time to first text, total time, last event)."""
    start = time.perf_counter()
    first = None
    last = None
    for event in events:
        if first is None and is_text(event):
            first = time.perf_counter() - start
        last = event
    return first if first is not None else float("nan"), time.perf_counter() - start, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--window-chars", type=int, default=256)
    args = parser.parse_args()

    backend = load_backend(args.model)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    common: dict[str, Any] = {"caption_params": params, "min_score_mass": 0.0, "stream_window_chars": args.window_chars}
    guards = {
        "whole": ECSO(backend, ECSOConfig(verdict_threshold=1.0, **common)),
        "progressive": ECSO(backend, ECSOConfig(verdict_threshold=1.0, stream="progressive", **common)),
        "progressive_flagged": ECSO(backend, ECSOConfig(verdict_threshold=0.0, stream="progressive", **common)),
    }
    is_delta = lambda e: isinstance(e, TextDelta) and e.text  # noqa: E731
    seeds = iter(range(1, 10_000))
    warm = requests(1, args.max_new_tokens, next(seeds))[0]
    list(backend.stream_generate(warm))
    list(guards["progressive"].stream(requests(1, args.max_new_tokens, next(seeds))[0]))
    runs: dict[str, dict[str, list[float]]] = {
        m: {"ttft": [], "total": [], "checks": [], "check_s": []} for m in ("plain", *guards)
    }
    batches = {mode: requests(args.requests, args.max_new_tokens, next(seeds)) for mode in runs}
    for index in range(args.requests):
        ttft, total, _ = timed_stream(
            iter(backend.stream_generate(batches["plain"][index])), lambda e: isinstance(e, str)
        )
        runs["plain"]["ttft"].append(ttft)
        runs["plain"]["total"].append(total)
        for mode, guard in guards.items():
            ttft, total, end = timed_stream(guard.stream(batches[mode][index]), is_delta)
            checks = [s for s in end.result.steps if s.name == "check"]
            runs[mode]["ttft"].append(ttft)
            runs[mode]["total"].append(total)
            runs[mode]["checks"].append(len(checks))
            runs[mode]["check_s"].append(sum(s.latency_s for s in checks))
    median = {m: {k: round(statistics.median(v), 4) for k, v in r.items() if v} for m, r in runs.items()}
    plain = median["plain"]
    print(
        json.dumps(
            {
                "bench": "streaming",
                "model": args.model,
                "max_new_tokens": args.max_new_tokens,
                "window_chars": args.window_chars,
                "requests": args.requests,
                "median_s": median,
                "progressive_ttft_over_plain": round(median["progressive"]["ttft"] / plain["ttft"], 2),
                "progressive_total_over_plain": round(median["progressive"]["total"] / plain["total"], 3),
                "whole_ttft_over_plain": round(median["whole"]["ttft"] / plain["ttft"], 2),
                "progressive_check_share": round(median["progressive"]["check_s"] / median["progressive"]["total"], 3),
                "machine": machine(),
                "note": "tiny-random: random weights, real geometry; measures cost ratios, never safety",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
