"""Run the guard over benchmark cases, judge the undefended and defended answers, append records.

One pass gives both columns: step 1 of ECSO is the undefended answer. Records are appended one batch
at a time to ``records.jsonl``; a rerun skips the ids already there, so an interrupted run resumes
without redoing work.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._jsonl import append_lines, recorded_ids
from .._progress import progress_bar
from ..guard import ECSO
from ..result import ECSOResult, Verdict
from .datasets import EvalCase
from .judges import Judge, case_request

__all__ = ["run_eval", "select"]


def select(cases: Sequence[EvalCase], limit: int | None, seed: int) -> list[EvalCase]:
    """A reproducible subset: shuffled with ``seed`` when limited, in order otherwise."""
    chosen = list(cases)
    if limit is not None and limit < len(chosen):
        random.Random(seed).shuffle(chosen)
        chosen = sorted(chosen[:limit], key=lambda c: c.id)
    return chosen


def run_eval(
    cases: Sequence[EvalCase],
    guard: ECSO,
    judge: Judge,
    out: Path,
    *,
    concurrency: int = 8,
    progress: bool = True,
) -> Path:
    """Evaluate ``cases`` not yet in ``out/records.jsonl``; return that file's path."""
    out.mkdir(parents=True, exist_ok=True)
    records = out / "records.jsonl"
    seen = recorded_ids(records)  # a line torn by a crash is not counted: that case is redone
    todo = [case for case in cases if case.id not in seen]
    bar = progress_bar(len(cases), len(cases) - len(todo), progress, desc="ecso eval")
    for start in range(0, len(todo), concurrency):
        batch = todo[start : start + concurrency]
        began = time.perf_counter()
        results = guard.run_batch([case_request(case) for case in batch], return_exceptions=True)
        elapsed = (time.perf_counter() - began) / len(batch)
        answered = [(c, r) for c, r in zip(batch, results, strict=True) if isinstance(r, ECSOResult)]
        verdicts = judge.judge([(c, r.initial_answer) for c, r in answered] + [(c, r.answer) for c, r in answered])
        before, after = verdicts[: len(answered)], verdicts[len(answered) :]
        judged = {c.id: (b, a) for (c, _), b, a in zip(answered, before, after, strict=True)}
        append_lines(
            records,
            (_record(c, r, judged.get(c.id), judge.name, elapsed) for c, r in zip(batch, results, strict=True)),
        )
        bar.update(len(batch))
    bar.close()
    return records


def _record(case: EvalCase, result: Any, judged: Any, judge: str, seconds: float) -> dict[str, Any]:
    base = {
        "id": case.id,
        "benchmark": case.benchmark,
        "kind": case.kind,
        "scenario": case.scenario,
        "image_kind": case.image_kind,
        "query": case.query,
        "meta": case.meta,
        "judge": judge,
        "seconds": round(seconds, 4),
    }
    if not isinstance(result, ECSOResult):
        return {**base, "error": f"{type(result).__name__}: {result}"}
    before, after = judged
    return {
        **base,
        "error": None,
        "decision": result.decision,
        "p_yes": result.verdict.p_yes if result.verdict else None,
        "verdict": _verdict(result.verdict),
        "captions": list(result.captions),
        "baseline_answer": result.initial_answer,
        "ecso_answer": result.answer,
        "baseline": before.model_dump(),
        "ecso": after.model_dump(),
    }


def _verdict(verdict: Verdict | None) -> dict[str, Any] | None:
    """The guard's check verdict on the step-1 answer, for the agreement report (None: no check ran)."""
    if verdict is None:
        return None
    return {
        "unsafe": verdict.unsafe,
        "method": verdict.method,
        "profile": getattr(verdict, "profile", "ecso"),
        "categories": list(getattr(verdict, "categories", ()) or ()),
        "p_yes": verdict.p_yes,
    }
