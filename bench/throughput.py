"""Requests per second of ``ECSO.run_batch`` over N requests vs N sequential ``ECSO.run`` calls.

Both paths run the real guard (answer + check, and caption + eyes-closed answer where the verdict is
unsafe) on the same backend in one process, with never-seen images each time. Prints one JSON object.

    python bench/throughput.py --model tiny-random --requests 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import machine, requests

from ecso_core import ECSO, ECSOConfig, GenerationParams, load_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32, help="the backend's forward-pass batch size")
    args = parser.parse_args()

    backend = load_backend(args.model, max_batch_size=args.max_batch_size)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    guard = ECSO(backend, ECSOConfig(caption_params=params))
    seeds = iter(range(10_000, 20_000))
    guard.run_batch(requests(4, args.max_new_tokens, next(seeds)))  # warm-up
    sequential, batched = [], []
    decisions: Counter[str] = Counter()
    for _ in range(args.repeats):
        work = requests(args.requests, args.max_new_tokens, next(seeds))
        start = time.perf_counter()
        for request in work:
            guard.run(request)
        sequential.append(args.requests / (time.perf_counter() - start))
        work = requests(args.requests, args.max_new_tokens, next(seeds))
        start = time.perf_counter()
        results = guard.run_batch(work)
        batched.append(args.requests / (time.perf_counter() - start))
        decisions.update(r.decision for r in results)
    print(
        json.dumps(
            {
                "bench": "throughput",
                "model": args.model,
                "requests": args.requests,
                "repeats": args.repeats,
                "max_new_tokens": args.max_new_tokens,
                "max_batch_size": args.max_batch_size,
                "sequential_requests_per_s": round(statistics.median(sequential), 3),
                "batched_requests_per_s": round(statistics.median(batched), 3),
                "speedup": round(statistics.median(batched) / statistics.median(sequential), 3),
                "decisions": dict(decisions),
                "machine": machine(),
                "note": "tiny-random: random weights, real geometry; its verdicts are noise",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
