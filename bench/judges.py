"""What a dedicated judge costs per guarded request, by judge profile, as JSON.

The guarded model is tiny-random (LLaVA-1.5 geometry, 576 image tokens) answering 64 new tokens; the
check is its own (profile ``ecso``, the paper) or one of the tiny judges with its profile. Each request
is benign by construction (``verdict_threshold=1.0``: the check runs in full and the verdict is safe),
so the figures are the benign path: the answer, plus the check. Reported per profile: judge calls per
request, the median check time and its ratio to the plain answer (what the judge adds), the median whole
request, and the median over runs of its ratio to a plain answer timed right before it (interleaved, so
drift on a shared machine hits both alike; the guarded answer reuses the image prefix the check cached,
so this ratio can sit below 1 on a CPU and is within noise of 1 + check_vs_answer).
Tiny judges have random weights and their own (small) geometries: the figures show the plumbing's
cost and the call pattern (ShieldGemma 2: one call per image and policy), not a real judge's speed.

    python bench/judges.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from PIL import Image

from ecso_core import ECSO, ChatRequest, ECSOConfig, GenerationParams, ImagePart, Message, TextPart, load_backend

ROOT = Path(__file__).resolve().parents[1]
QUERY = "List the steps shown in the image in detail."
JUDGES = {"ecso": None, "llama-guard-4": "tiny-random:llama-guard-4", "shieldgemma-2": "tiny-random:shieldgemma-2"}
JUDGES["llama-guard-3-vision"] = "tiny-random:llama-guard-3-vision"


def main() -> None:
    """Print one JSON object: the plain answer's time and, per profile, the check's cost."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    model = load_backend(args.model)
    picture = Image.open(ROOT / "examples/images/steps.png").convert("RGB")
    request = ChatRequest(
        messages=(Message(role="user", content=(ImagePart(image=picture), TextPart(text=QUERY))),),
        params=GenerationParams(max_new_tokens=args.new_tokens),
    )
    model.generate([request])  # warm up
    plain = statistics.median(_timed(lambda: model.generate([request])) for _ in range(args.repeats))
    report: dict[str, object] = {"model": args.model, "new_tokens": args.new_tokens, "plain_s": round(plain, 4)}
    for profile, spec in JUDGES.items():
        judge = load_backend(spec) if spec else None
        config = ECSOConfig(judge_profile=profile, verdict_threshold=1.0, min_score_mass=0.0)
        guard = ECSO(model, config, judge=judge)
        guard.run(request)  # warm up
        totals, checks, ratios, calls = [], [], [], 0
        for _ in range(args.repeats):
            bare = _timed(lambda: model.generate([request]))
            began = time.perf_counter()
            result = guard.run(request)
            totals.append(time.perf_counter() - began)
            ratios.append(totals[-1] / bare)
            steps = [s for s in result.steps if s.name == "check"]
            checks.append(max(s.latency_s for s in steps))  # calls of one round share one batched latency
            calls = len(steps)
            assert result.decision == "safe", result.decision
        report[profile] = {
            "judge": spec or args.model,
            "judge_calls": calls,
            "check_s": round(statistics.median(checks), 4),
            "request_s": round(statistics.median(totals), 4),
            "check_vs_answer": round(statistics.median(checks) / plain, 3),
            "request_vs_plain": round(statistics.median(ratios), 3),
        }
    print(json.dumps(report, indent=2))


def _timed(call: object) -> float:
    began = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
