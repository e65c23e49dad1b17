"""Report statistics on hand-made records: pooled rate vs mean of rows, bootstrap intervals, agreement, kappa."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ecso_core.eval import agreement, summarize
from ecso_core.eval.agreement import guard_label
from ecso_core.eval.stats import bootstrap_mean_ci, bootstrap_rate_ci, cohen_kappa


def record(
    scenario: str,
    unsafe_before: bool | None,
    unsafe_after: bool | None = False,
    *,
    kind: str = "SD",
    verdict: Any = "same",
    decision: str = "unsafe",
) -> dict[str, Any]:
    """An attack record as the runner writes it (``verdict="same"``: the guard agrees with the judge)."""
    if verdict == "same":
        verdict = {"unsafe": bool(unsafe_before), "method": "text", "profile": "ecso", "categories": [], "p_yes": None}
    return {
        "id": f"{scenario}-{kind}-{id(object())}",
        "kind": "attack",
        "scenario": scenario,
        "image_kind": kind,
        "meta": {},
        "error": None,
        "decision": decision,
        "verdict": verdict,
        "baseline": {"label": "x", "unsafe": unsafe_before, "refused": None, "score": None},
        "ecso": {"label": "x", "unsafe": unsafe_after, "refused": None, "score": None},
    }


def rows_10_of_20_and_90_of_100() -> list[dict[str, Any]]:
    return (
        [record("01-A", True) for _ in range(10)]
        + [record("01-A", False) for _ in range(10)]
        + [record("02-B", True) for _ in range(90)]
        + [record("02-B", False) for _ in range(10)]
    )


def test_pooled_rate_and_mean_of_rows_differ_as_computed_by_hand() -> None:
    summary = summarize(rows_10_of_20_and_90_of_100())
    (table,) = summary["tables"]
    by_name = {row["scenario"]: row for row in table["rows"]}
    assert [row["row"] for row in table["rows"]] == ["scenario", "scenario", "pooled", "row_mean"]
    assert by_name["01-A"]["before"] == 0.5
    assert by_name["02-B"]["before"] == 0.9
    assert by_name["all"]["before"] == 0.8333  # 100 / 120
    assert by_name["all"]["n"] == 120
    assert by_name["mean of rows"]["before"] == 0.7  # (0.5 + 0.9) / 2
    assert by_name["mean of rows"]["n"] == 2
    assert by_name["mean of rows"]["after"] == 0.0
    # the legacy table is unchanged: the pooled row is its "all" row
    assert next(r for r in summary["attack"] if r["scenario"] == "all")["asr_before"] == 0.8333


def test_harmless_rate_inverts_values_and_intervals() -> None:
    records = rows_10_of_20_and_90_of_100()
    asr = {r["scenario"]: r for r in summarize(records)["tables"][0]["rows"]}
    harmless = summarize(records, metric="harmless_rate")["tables"][0]
    assert harmless["title"] == "Harmless rate (higher is better)"
    rows = {r["scenario"]: r for r in harmless["rows"]}
    assert rows["mean of rows"]["before"] == 0.3
    assert rows["all"]["before"] == 0.1667
    low, high = asr["all"]["before_ci"]
    assert rows["all"]["before_ci"] == pytest.approx([1 - high, 1 - low], abs=2e-4)


def test_unjudged_answers_are_left_out_of_rates_but_not_of_n() -> None:
    records = [record("01-A", True), record("01-A", None), record("01-A", False)]
    (row, pooled) = summarize(records)["tables"][0]["rows"]
    assert (row["n"], row["before"]) == (3, 0.5)
    assert pooled["row"] == "pooled"


def test_bootstrap_interval_is_deterministic_for_a_seed_and_contains_the_estimate() -> None:
    first = bootstrap_rate_ci(37, 120, seed=7)
    assert first == bootstrap_rate_ci(37, 120, seed=7)
    assert first is not None
    assert first[0] <= 37 / 120 <= first[1]
    assert first != bootstrap_rate_ci(37, 120, seed=8)
    for k, n in [(0, 5), (5, 5), (1, 2), (250, 1000)]:
        low, high = bootstrap_rate_ci(k, n)  # type: ignore[misc]
        assert low <= k / n <= high
    assert bootstrap_rate_ci(0, 5) == (0.0, 0.0)
    assert bootstrap_rate_ci(3, 0) is None
    # a binomial interval of about the textbook width: 1.96 * sqrt(p(1-p)/n) = 0.0268 at p = 0.25, n = 1000
    low, high = bootstrap_rate_ci(250, 1000)  # type: ignore[misc]
    assert high - low == pytest.approx(2 * 0.0268, abs=0.006)


def test_bootstrap_of_the_mean_of_rows_keeps_each_row_and_contains_the_mean() -> None:
    interval = bootstrap_mean_ci([(10, 20), (90, 100)], seed=0)
    assert interval == bootstrap_mean_ci([(10, 20), (90, 100)], seed=0)
    assert interval is not None
    assert interval[0] <= 0.7 <= interval[1]
    assert bootstrap_mean_ci([(1, 0)]) is None
    assert bootstrap_mean_ci([(0, 4), (4, 4)]) == (0.5, 0.5)  # degenerate rows: no spread at all


@pytest.mark.parametrize(
    ("cells", "kappa"),
    [
        ((20, 5, 10, 15), 0.4),  # po 0.7, pe 0.5 * 0.6 + 0.5 * 0.4 = 0.5
        ((10, 0, 0, 10), 1.0),
        ((0, 10, 10, 0), -1.0),
        ((5, 0, 0, 0), None),  # one label only: chance agreement is total
        ((0, 0, 0, 0), None),
    ],
)
def test_cohen_kappa(cells: tuple[int, int, int, int], kappa: float | None) -> None:
    assert cohen_kappa(*cells) == kappa


def test_agreement_table_counts_on_hand_made_records() -> None:
    no_verdict = {"unsafe": None, "method": "failed", "profile": "ecso", "categories": [], "p_yes": None}
    no_gate = {"unsafe": True, "method": "no_gate", "profile": "ecso", "categories": [], "p_yes": None}
    records = (
        [record("s", True) for _ in range(20)]  # both unsafe
        + [record("s", False, verdict={**no_verdict, "unsafe": True}) for _ in range(5)]  # guard unsafe, judge safe
        + [record("s", True, verdict={**no_verdict, "unsafe": False}) for _ in range(10)]  # released, judge unsafe
        + [record("s", False) for _ in range(15)]  # both safe
        + [record("s", True, verdict=no_verdict, decision="fail_closed") for _ in range(3)]
        + [record("s", True, verdict=no_gate) for _ in range(2)]
        + [record("s", True, verdict=None, decision="no_image")]
        + [record("s", None) for _ in range(4)]  # the judge's reply did not parse
    )
    result = agreement(records)
    assert result["table"] == {
        "guard_unsafe_judge_unsafe": 20,
        "guard_unsafe_judge_safe": 5,
        "guard_safe_judge_unsafe": 10,
        "guard_safe_judge_safe": 15,
    }
    assert (result["n"], result["agreement"], result["kappa"]) == (50, 0.7, 0.4)
    assert (result["guard_no_verdict"], result["not_checked"], result["judge_unparsed"]) == (3, 3, 4)
    assert result["guard_profiles"] == ["ecso"]


def test_agreement_reads_records_written_before_verdicts_were_recorded() -> None:
    old = record("s", True, decision="safe")
    del old["verdict"]
    assert guard_label(old) == "safe"
    assert guard_label({**old, "decision": "fail_closed"}) == "no_verdict"
    assert guard_label({**old, "decision": "no_image"}) == "not_checked"


def test_report_shows_pooled_row_mean_intervals_and_agreement(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ecso_core.eval import write_report

    out = tmp_path / "run"
    out.mkdir()
    lines = [json.dumps(r) for r in rows_10_of_20_and_90_of_100()]
    (out / "records.jsonl").write_text("\n".join(lines) + '\n{"id": "torn')
    meta = {"benchmark": "mm-safetybench", "model": "tiny-random:llava-small", "judge": "keyword", "seed": 3}
    summary = write_report(out, {**meta, "metric": "harmless_rate"})
    assert summary["bootstrap"] == {"resamples": 1000, "seed": 3, "level": 0.95, "method": "percentile"}
    report = (out / "report.md").read_text()
    assert "## Harmless rate (higher is better): SD" in report
    assert "| all | SD | 120 | 16.7% | 100.0% |" in report
    assert "| mean of rows | SD | 2 | 30.0% | 100.0% |" in report
    assert "tiny-random has random weights: these numbers test the plumbing, never safety." in report
    assert "| guard: unsafe | 100 | 0 |" in report
    assert "Agreement 100.0% over 120 step-1 answers, Cohen's kappa 1.000." in report
    assert json.loads((out / "summary.json").read_text())["agreement"]["n"] == 120
