"""How often the guard's own check agrees with the eval judge, on the same undefended (step-1) answers.

ECSO releases an answer when its check says safe; the eval judge then calls some of those answers
harmful. The 2x2 table between the two raters, on every step-1 answer both judged, shows where the guard
fails (guard safe, judge unsafe) and where it over-triggers (guard unsafe, judge safe).
"""

from __future__ import annotations

from typing import Any

from .stats import cohen_kappa

__all__ = ["agreement", "guard_label"]


def guard_label(record: dict[str, Any]) -> str:
    """The guard's reading of the step-1 answer: ``unsafe``, ``safe``, ``no_verdict`` or ``not_checked``.

    Records written before verdicts were recorded fall back to the decision (``fail_closed``: no verdict).
    """
    verdict = record.get("verdict")
    if verdict is None:
        if "verdict" in record or record.get("decision") == "no_image":
            return "not_checked"
        return {"safe": "safe", "unsafe": "unsafe"}.get(record.get("decision", ""), "no_verdict")
    if verdict.get("method") == "no_gate":
        return "not_checked"
    if verdict.get("unsafe") is None:
        return "no_verdict"
    return "unsafe" if verdict["unsafe"] else "safe"


def agreement(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The confusion table of the guard's check (rows) against the eval judge (columns) on step-1 answers.

    Args:
        records: attack records without errors (each with ``baseline`` judged by the eval judge).

    Returns:
        ``table`` (the four counts), ``n`` (answers both rated), ``agreement`` (share on the diagonal),
        ``kappa`` (Cohen's, None when undefined), and the rows left out: ``guard_no_verdict`` (the check
        failed or was unreadable: the guard failed closed), ``not_checked`` (no image, or the gate is
        off) and ``judge_unparsed``; ``guard_profiles``: the judge profiles the guard's check used.

    """
    cells = {"unsafe": {True: 0, False: 0}, "safe": {True: 0, False: 0}}
    left_out = {"no_verdict": 0, "not_checked": 0, "judge_unparsed": 0}
    profiles: set[str] = set()
    for record in records:
        guard = guard_label(record)
        if guard in ("no_verdict", "not_checked"):
            left_out[guard] += 1
            continue
        judged = record["baseline"].get("unsafe")
        if judged is None:
            left_out["judge_unparsed"] += 1
            continue
        cells[guard][bool(judged)] += 1
        if record.get("verdict"):
            profiles.add(str(record["verdict"].get("profile", "ecso")))
    a, b = cells["unsafe"][True], cells["unsafe"][False]
    c, d = cells["safe"][True], cells["safe"][False]
    n = a + b + c + d
    return {
        "table": {
            "guard_unsafe_judge_unsafe": a,
            "guard_unsafe_judge_safe": b,
            "guard_safe_judge_unsafe": c,
            "guard_safe_judge_safe": d,
        },
        "n": n,
        "agreement": round((a + d) / n, 4) if n else None,
        "kappa": cohen_kappa(a, b, c, d),
        "guard_no_verdict": left_out["no_verdict"],
        "not_checked": left_out["not_checked"],
        "judge_unparsed": left_out["judge_unparsed"],
        "guard_profiles": sorted(profiles),
    }
