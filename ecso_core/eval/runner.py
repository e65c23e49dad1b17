"""Run the guard over benchmark cases, judge the undefended and defended answers, append records.

One pass gives both columns: step 1 of ECSO is the undefended answer. Records are appended one batch
at a time to ``records.jsonl``; a rerun skips the cases already there, so an interrupted run resumes
without redoing work.

A case is known by its :func:`case_key`: its id and a hash of what it asks (query, image reference,
kind, scenario, meta), so a case that took an old case's id (a line inserted into a JSONL benchmark)
is not skipped. On resume, the rows of failed cases and of cases whose content changed leave
``records.jsonl`` for ``records.replaced.jsonl`` and are run again. :func:`claim_folder` keeps one run
per folder: ``run.json`` names its benchmark, model, judge, protocol and guard settings, and a rerun
with others is refused.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from .._jsonl import append_lines, read_lines, rewrite_lines
from .._progress import progress_bar
from ..errors import ConfigError
from ..guard import ECSO
from ..result import ECSOResult, Verdict
from .datasets import EvalCase
from .judges import Judge, case_request

__all__ = ["RECORDS", "REPLACED", "RUN", "case_key", "claim_folder", "run_eval", "select"]

RECORDS = "records.jsonl"
REPLACED = "records.replaced.jsonl"
"""Rows taken out of ``records.jsonl`` on resume (failed cases retried, cases whose content changed)."""
RUN = "run.json"
"""What run a folder holds (benchmark, model, judge, protocol, guard settings)."""


def select(cases: Sequence[EvalCase], limit: int | None, seed: int) -> list[EvalCase]:
    """A reproducible subset: shuffled with ``seed`` when limited, in order otherwise.

    Raises:
        ConfigError: a negative ``limit``.

    """
    if limit is not None and limit < 0:
        raise ConfigError(f"the limit must be 0 or more, got {limit}")
    chosen = list(cases)
    if limit is not None and limit < len(chosen):
        random.Random(seed).shuffle(chosen)
        chosen = sorted(chosen[:limit], key=lambda c: c.id)
    return chosen


def case_key(case: EvalCase) -> str:
    """The case's identity for resume: its id and a hash of its content.

    Images are referenced by their last two path parts (``SD_TYPO/12.jpg``), rendered ones by their
    recipe and text, so a data folder given by another path (relative, moved) still resumes.
    """
    image = case.image
    if isinstance(image, (str, PurePath)):
        reference: Any = PurePath(image).parts[-2:]
    elif image is None:
        reference = None
    else:
        reference = type(image).__name__
    content = [
        case.benchmark,
        case.kind,
        case.scenario,
        case.image_kind,
        case.query,
        reference,
        case.render[:2] if case.render else None,
        case.meta,
    ]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{case.id}#{digest[:16]}"


def claim_folder(out: Path, run: dict[str, Any]) -> None:
    """Make ``out`` the folder of ``run`` (JSON-able: benchmark, model, judge, ...), written to ``out/run.json``.

    A folder that already holds records of another run is refused: mixing two runs' records would
    report one benchmark's cases under another's name, or average two models. A folder with no
    records is taken over.

    Raises:
        ConfigError: ``out`` is not a folder, cannot be created, or holds records of another run.

    """
    _make_folder(out)
    wanted = json.loads(json.dumps(run, default=str))
    manifest = out / RUN
    if manifest.is_file() and any(read_lines(out / RECORDS)):
        try:
            held = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{out}: unreadable {RUN} ({exc}); use another --out folder") from exc
        if not isinstance(held, dict):
            raise ConfigError(f"{out}: {RUN} is not a JSON object; use another --out folder")
        differ = [key for key in sorted(set(held) | set(wanted)) if held.get(key) != wanted.get(key)]
        if differ:
            details = "; ".join(f"{key}: {held.get(key)!r} there, {wanted.get(key)!r} now" for key in differ)
            raise ConfigError(
                f"{out} holds the records of another run ({details}); use another --out folder "
                "(or the same settings to resume that run)"
            )
        return
    try:
        manifest.write_text(json.dumps(wanted, indent=2), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write {RUN} ({exc})") from exc


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out} ({exc})") from exc


def _resume(records: Path, cases: Sequence[EvalCase], keys: Sequence[str]) -> set[str]:
    """The keys of ``cases`` already recorded; rows of failed or changed cases move to ``records.replaced.jsonl``.

    Rows of cases not in ``cases`` (another ``--limit``) stay. Rows written before keys existed
    count for the case of their id when their query is the same.
    """
    current = set(keys)
    legacy = {case.id: (case.query, key) for case, key in zip(cases, keys, strict=True)}
    ids = set(legacy)
    kept: list[dict[str, Any]] = []
    replaced: list[dict[str, Any]] = []
    done: set[str] = set()
    for row in read_lines(records):
        key = row.get("key")
        if key is None and str(row.get("id")) in legacy:
            query, candidate = legacy[str(row.get("id"))]
            key = candidate if row.get("query") == query else None
        if key in current:
            if row.get("error") is not None or key in done:  # retried now / a duplicate row
                replaced.append(row)
                continue
            done.add(key)
        elif str(row.get("id")) in ids:  # the id now names a case with other content
            replaced.append(row)
            continue
        kept.append(row)
    if replaced:
        append_lines(records.with_name(REPLACED), replaced)  # first: a crash here loses no row
        rewrite_lines(records, kept)
    return done


def run_eval(
    cases: Sequence[EvalCase],
    guard: ECSO,
    judge: Judge,
    out: Path,
    *,
    concurrency: int = 8,
    progress: bool = True,
) -> Path:
    """Evaluate ``cases`` not yet in ``out/records.jsonl`` (failed ones again); return that file's path.

    Raises:
        ConfigError: ``concurrency`` below 1, or ``out`` is not a folder.

    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be 1 or more, got {concurrency}")
    _make_folder(out)
    records = out / RECORDS
    records.touch()  # there even when nothing is to be done: the report reads it
    keys = [case_key(case) for case in cases]
    done = _resume(records, cases, keys)  # a line torn by a crash is not counted: that case is redone
    todo = [(case, key) for case, key in zip(cases, keys, strict=True) if key not in done]
    bar = progress_bar(len(cases), len(cases) - len(todo), progress, desc="ecso eval")
    for start in range(0, len(todo), concurrency):
        batch = todo[start : start + concurrency]
        began = time.perf_counter()
        results = guard.run_batch([case_request(case) for case, _ in batch], return_exceptions=True)
        elapsed = (time.perf_counter() - began) / len(batch)
        answered = [(c, r) for (c, _), r in zip(batch, results, strict=True) if isinstance(r, ECSOResult)]
        verdicts = judge.judge([(c, r.initial_answer) for c, r in answered] + [(c, r.answer) for c, r in answered])
        before, after = verdicts[: len(answered)], verdicts[len(answered) :]
        judged = {id(c): (b, a) for (c, _), b, a in zip(answered, before, after, strict=True)}
        append_lines(
            records,
            (
                _record(c, k, r, judged.get(id(c)), judge.name, elapsed)
                for (c, k), r in zip(batch, results, strict=True)
            ),
        )
        bar.update(len(batch))
    bar.close()
    return records


def _record(case: EvalCase, key: str, result: Any, judged: Any, judge: str, seconds: float) -> dict[str, Any]:
    base = {
        "id": case.id,
        "key": key,
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
