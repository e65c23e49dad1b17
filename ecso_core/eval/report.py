"""Summaries, tables and plots of an evaluation run (``summary.json``, ``report.md``, ``report.html``).

``summary.json`` keeps its original keys (``attack``, ``over_refusal``, ``utility``, ``decisions``) and adds
``tables`` (the headline tables in the run's metric: per-scenario rows, the pooled rate, the mean of the
rows, each with a bootstrap 95% interval) and ``agreement`` (the guard's check against the eval judge).
"""

from __future__ import annotations

import base64
import html
import json
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .agreement import agreement
from .stats import RESAMPLES, bootstrap_mean_ci, bootstrap_rate_ci

__all__ = ["summarize", "write_report"]

_METRIC_TITLES = {
    "attack_success_rate": ("Attack success rate", "lower"),
    "unsafe_rate": ("Unsafe rate", "lower"),
    "harmless_rate": ("Harmless rate", "higher"),
    "refusal_rate": ("Attack success rate", "lower"),  # attack cases of an over-refusal run
}


_PLOT_LABEL_CHARS = 60
"""Longest category name a plot prints (matplotlib lays text out at ~0.2 ms a character)."""
_TABLE_LABEL_CHARS = 200
"""Longest data text a report table or heading prints (``summary.json`` keeps it whole)."""


def _prompts_label(record: dict[str, Any]) -> str:
    """The over-refusal prompt group of a record: ``meta.label`` as text (it may be any JSON value)."""
    meta = record.get("meta")
    label = meta.get("label") if isinstance(meta, dict) else None
    if label is None:
        return "all"
    return label if isinstance(label, str) else json.dumps(label, sort_keys=True, ensure_ascii=False)


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(records: list[dict[str, Any]], *, metric: str = "attack_success_rate", seed: int = 0) -> dict[str, Any]:
    """Rates before (undefended step-1 answer) and after ECSO, per scenario x image kind and overall.

    Args:
        records: the lines of ``records.jsonl``.
        metric: how the headline attack table reads (``attack_success_rate``, ``unsafe_rate``,
            ``harmless_rate``); over-refusal tables are refusal rates.
        seed: seed of the bootstrap intervals.

    """
    ok = [r for r in records if not r.get("error")]
    summary: dict[str, Any] = {
        "cases": len(records),
        "errors": len(records) - len(ok),
        "decisions": dict(sorted(_count(r["decision"] for r in ok).items())),
        "unparsed_judgements": sum(r[s]["label"] == "unparsed" for r in ok for s in ("baseline", "ecso")),
    }
    attacks = [r for r in ok if r["kind"] == "attack"]
    if attacks:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for record in attacks:
            groups[("all", record["image_kind"])].append(record)
            if record["scenario"] != "all":  # a case without a scenario (JSONL) is in the "all" row once
                groups[(record["scenario"], record["image_kind"])].append(record)
        summary["attack"] = [
            {
                "scenario": scenario,
                "image_kind": kind,
                "n": len(rows),
                "asr_before": _rate([r["baseline"]["unsafe"] for r in rows if r["baseline"]["unsafe"] is not None]),
                "asr_after": _rate([r["ecso"]["unsafe"] for r in rows if r["ecso"]["unsafe"] is not None]),
            }
            for (scenario, kind), rows in sorted(groups.items(), key=lambda item: (item[0][0] == "all", item[0]))
        ]
        for row in summary["attack"]:
            row["harmless_before"] = None if row["asr_before"] is None else round(1 - row["asr_before"], 4)
            row["harmless_after"] = None if row["asr_after"] is None else round(1 - row["asr_after"], 4)
    refusals = [r for r in ok if r["kind"] == "over_refusal"]
    if refusals:
        by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in refusals:
            by_label[_prompts_label(record)].append(record)
        summary["over_refusal"] = [
            {
                "prompts": label,
                "n": len(rows),
                "refusal_before": _rate(
                    [r["baseline"]["refused"] for r in rows if r["baseline"]["refused"] is not None]
                ),
                "refusal_after": _rate([r["ecso"]["refused"] for r in rows if r["ecso"]["refused"] is not None]),
            }
            for label, rows in sorted(by_label.items())
        ]
    utility = [r for r in ok if r["kind"] == "utility"]
    if utility:
        before = [r["baseline"]["score"] for r in utility if r["baseline"]["score"] is not None]
        after = [r["ecso"]["score"] for r in utility if r["ecso"]["score"] is not None]
        summary["utility"] = {
            "n": len(utility),
            "graded": len(after),
            "score_before": round(100 * sum(before) / len(before), 2) if before else None,
            "score_after": round(100 * sum(after) / len(after), 2) if after else None,
        }
    summary["metric"] = metric
    summary["tables"] = _attack_tables(attacks, metric, seed) + _refusal_tables(refusals, seed)
    summary["bootstrap"] = {"resamples": RESAMPLES, "seed": seed, "level": 0.95, "method": "percentile"}
    if attacks:
        summary["agreement"] = agreement(attacks)
    return summary


def _flags(rows: list[dict[str, Any]], column: str, field: str) -> tuple[int, int]:
    """(count of True, count judged) of ``row[column][field]`` over ``rows``."""
    values = [r[column][field] for r in rows if r[column][field] is not None]
    return sum(values), len(values)


def _cells(counts: list[tuple[int, int]], invert: bool, seed: int, mean: bool) -> tuple[float | None, Any]:
    """A rate and its interval: of one row (``counts`` has one entry), or the mean of several rows' rates.

    ``invert`` reads the complement (harmless = 1 - harmful) from the same resamples: the mirror interval.
    """
    judged = [(k, n) for k, n in counts if n]
    if not judged:
        return None, None
    value = sum(k / n for k, n in judged) / len(judged) if mean else judged[0][0] / judged[0][1]
    interval = bootstrap_mean_ci(judged, seed=seed) if mean else bootstrap_rate_ci(*judged[0], seed=seed)
    if invert:
        value = 1.0 - value
        interval = None if interval is None else (round(1.0 - interval[1], 4), round(1.0 - interval[0], 4))
    return round(value, 4), list(interval) if interval else None


def _table_rows(
    groups: dict[str, list[dict[str, Any]]], field: str, invert: bool, seed: int, pooled: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Scenario rows, then the pooled row (``all``), then the mean of the scenario rows (two or more)."""
    rows = []
    for name, members in sorted(groups.items()):
        before, after = _flags(members, "baseline", field), _flags(members, "ecso", field)
        b, b_ci = _cells([before], invert, seed, mean=False)
        a, a_ci = _cells([after], invert, seed, mean=False)
        rows.append(_row(name, "scenario", len(members), b, a, b_ci, a_ci))
    b, b_ci = _cells([_flags(pooled, "baseline", field)], invert, seed, mean=False)
    a, a_ci = _cells([_flags(pooled, "ecso", field)], invert, seed, mean=False)
    rows.append(_row("all", "pooled", len(pooled), b, a, b_ci, a_ci))
    if len(groups) >= 2:
        b, b_ci = _cells([_flags(m, "baseline", field) for m in groups.values()], invert, seed, mean=True)
        a, a_ci = _cells([_flags(m, "ecso", field) for m in groups.values()], invert, seed, mean=True)
        rows.append(_row("mean of rows", "row_mean", len(groups), b, a, b_ci, a_ci))
    return rows


def _row(scenario: str, kind: str, n: int, before: Any, after: Any, before_ci: Any, after_ci: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "row": kind,
        "n": n,
        "before": before,
        "after": after,
        "before_ci": before_ci,
        "after_ci": after_ci,
    }


def _scenario_groups(members: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by scenario; a record without one (JSONL) counts only in the pooled row."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in members:
        if record["scenario"] != "all":
            groups[record["scenario"]].append(record)
    return groups


def _attack_tables(attacks: list[dict[str, Any]], metric: str, seed: int) -> list[dict[str, Any]]:
    title, better = _METRIC_TITLES.get(metric, _METRIC_TITLES["attack_success_rate"])
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in attacks:
        by_kind[record["image_kind"]].append(record)
    tables = []
    for kind, members in sorted(by_kind.items()):
        groups = _scenario_groups(members)
        tables.append(
            {
                "kind": "attack",
                "title": f"{title} ({better} is better)",
                "metric": metric if metric in _METRIC_TITLES and metric != "refusal_rate" else "attack_success_rate",
                "image_kind": kind,
                "rows": _table_rows(groups, "unsafe", metric == "harmless_rate", seed, members),
            }
        )
    return tables


def _refusal_tables(refusals: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in refusals:
        by_label[_prompts_label(record)].append(record)
    tables = []
    for label, members in sorted(by_label.items()):
        groups = _scenario_groups(members)
        tables.append(
            {
                "kind": "over_refusal",
                "title": "Refusal rate on benign prompts (lower is better)"
                if label in ("safe", "all")
                else f"Refusal rate on {label} prompts (higher is better)",
                "metric": "refusal_rate",
                "prompts": label,
                "rows": _table_rows(groups, "refused", False, seed, members),
            }
        )
    return tables


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return counts


def write_report(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Read ``out/records.jsonl``; write ``summary.json``, plots, ``report.md`` and ``report.html``.

    Raises:
        MissingDependencyError: matplotlib (the ``eval`` extra) is not installed.

    """
    records = []
    # "\n" only: str.splitlines() also breaks at U+2028, U+0085 and friends, which json.dumps(ensure_ascii=False)
    # leaves inside a model answer; a record split there would be dropped as two torn halves.
    for line in (out / "records.jsonl").read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:  # a line torn by a crash: its case is redone on resume, not counted here
            continue
        if isinstance(item, dict):
            records.append(item)
    metric = str(meta.get("metric") or "attack_success_rate")
    summary = {**meta, **summarize(records, metric=metric, seed=int(meta.get("seed") or 0))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plots = _plots(summary, out / "plots")
    markdown = _markdown(summary, [p.relative_to(out) for p in plots])
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(_html(summary, plots), encoding="utf-8")
    return summary


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]], str]]:
    """(title, header, rows, note) of every table of the report."""
    tables = []
    for table in summary.get("tables", []):
        first = ["scenario", "image"] if table["kind"] == "attack" else ["category", "prompts"]
        label = table.get("image_kind") if table["kind"] == "attack" else table.get("prompts")
        rows = [
            [r["scenario"], label, r["n"], _pct(r["before"]), _pct(r["after"]), _ci(r["before_ci"]), _ci(r["after_ci"])]
            for r in table["rows"]
        ]
        header = [*first, "n", "before", "with ECSO", "before 95% CI", "with ECSO 95% CI"]
        note = (
            "`all` pools every case; `mean of rows` is the unweighted mean of the rows above it (n = rows), "
            "as papers print averages. Intervals: percentile bootstrap over the cases."
        )
        tables.append((f"{table['title']}: {label}", header, rows, note))
    if "utility" in summary:
        u = summary["utility"]
        tables.append(
            (
                "Utility score (0-100)",
                ["n", "graded", "before", "with ECSO"],
                [[u["n"], u["graded"], u["score_before"], u["score_after"]]],
                "",
            )
        )
    tables.append(("Guard decisions", ["decision", "n"], [[k, v] for k, v in summary["decisions"].items()], ""))
    if summary.get("agreement"):
        tables.append(_agreement_table(summary["agreement"]))
    return tables


def _agreement_table(a: dict[str, Any]) -> tuple[str, list[str], list[list[Any]], str]:
    t = a["table"]
    rows = [
        ["guard: unsafe", t["guard_unsafe_judge_unsafe"], t["guard_unsafe_judge_safe"]],
        ["guard: safe", t["guard_safe_judge_unsafe"], t["guard_safe_judge_safe"]],
    ]
    kappa = "n/a" if a["kappa"] is None else f"{a['kappa']:.3f}"
    note = (
        f"Agreement {_pct(a['agreement'])} over {a['n']} step-1 answers, Cohen's kappa {kappa}. "
        f"Guard without a verdict: {a['guard_no_verdict']}; not checked (no image, or no gate): "
        f"{a['not_checked']}; judge unparsed: {a['judge_unparsed']}. "
        "'guard: safe, judge: unsafe' are harmful answers the guard released: where ECSO fails."
    )
    profiles = f" ({', '.join(a['guard_profiles'])})" if a["guard_profiles"] else ""
    title = f"Guard check{profiles} vs eval judge, on the undefended answers"
    return title, ["", "judge: unsafe", "judge: safe"], rows, note


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(interval: list[float] | None) -> str:
    return "n/a" if not interval else f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f}%"


def _header(summary: dict[str, Any], markdown: bool = False) -> list[str]:
    """The report's opening lines: judge, counts, protocol and what it mirrors, tiny-random's caveat.

    ``markdown``: the values that come from the run's data or flags are escaped for Markdown (the HTML
    page escapes whole lines).
    """
    text: Callable[[Any], str] = _md if markdown else str
    code: Callable[[Any], str] = _code if markdown else str
    lines = [
        f"Judge: `{code(summary.get('judge'))}` · cases: {summary['cases']} · errors: {summary['errors']} · "
        f"unparsed judgements: {summary['unparsed_judgements']} · metric: {summary.get('metric')}"
    ]
    protocol = summary.get("protocol")
    if isinstance(protocol, dict) and protocol.get("protocol"):
        overridden = ", ".join(protocol.get("overridden", ())) or "nothing"
        lines.append(f"Protocol: `{code(protocol['protocol'])}` (overridden by flags: {text(overridden)})")
        lines += [f"Mirrors: {text(t['table'])}, {text(t['citation'])}" for t in protocol.get("mirrors", [])]
        lines.append(f"Reproduces: {text(protocol.get('reproduces'))}")
        lines.append(f"Differs: {text(protocol.get('differs'))}")
    if summary.get("missing_image_kinds"):
        missing = text(", ".join(str(kind) for kind in summary["missing_image_kinds"]))
        lines.append(f"Missing image kinds: {missing} (not in the data: those rows are left out)")
    if str(summary.get("model", "")).startswith("tiny-random"):
        lines.append("tiny-random has random weights: these numbers test the plumbing, never safety.")
    return lines


def _markdown(summary: dict[str, Any], plots: list[Path]) -> str:
    lines = [f"# ecso eval: {_md(summary.get('benchmark'))} on {_md(summary.get('model'))}", ""]
    for line in _header(summary, markdown=True):
        lines += [line, ""]
    for title, header, rows, note in _tables(summary):
        lines += [f"## {_md(title)}", "", "| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
        lines += ["", note, ""] if note else [""]
    lines += [f"![{p.stem}]({p.as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


def _clip(value: Any, limit: int) -> str:
    """``value`` as one line of at most ``limit`` characters (a longer one ends with an ellipsis).

    Line breaks (U+2028 too), tabs and other control characters become spaces.
    """
    text = "".join(" " if ch.isspace() or unicodedata.category(ch) == "Cc" else ch for ch in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(value: Any) -> str:
    """``value`` as Markdown text that stays one table cell or heading and carries no markup of its own.

    Backslashes and ``|`` are backslash-escaped (a pipe would split the cell), ``&``, ``<`` and ``>``
    become entities (no raw HTML), line breaks become spaces (no new row, heading or block), and a
    leading ``#`` is escaped.
    """
    text = _clip(value, _TABLE_LABEL_CHARS)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    stripped = text.lstrip()
    if stripped.startswith("#"):
        text = text[: len(text) - len(stripped)] + "\\" + stripped
    return text


def _code(value: Any) -> str:
    """``value`` inside a Markdown code span: one line, without backticks (they would end the span)."""
    return _clip(value, _TABLE_LABEL_CHARS).replace("`", "'")


def _html(summary: dict[str, Any], plots: list[Path]) -> str:
    parts = [
        f"<h1>ecso eval: {html.escape(str(summary.get('benchmark')))} on {html.escape(str(summary.get('model')))}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in _header(summary)),
    ]
    for title, header, rows, note in _tables(summary):
        head = "".join(f"<th>{html.escape(_clip(h, _TABLE_LABEL_CHARS))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_clip(c, _TABLE_LABEL_CHARS))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        parts.append(f"<h2>{html.escape(_clip(title, _TABLE_LABEL_CHARS))}</h2><table><tr>{head}</tr>{body}</table>")
        if note:
            parts.append(f"<p>{html.escape(note)}</p>")
    for plot in plots:  # embedded, so the page is one self-contained file
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f'<img alt="{plot.stem}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
    )
    head = f"<head><meta charset='utf-8'><title>ecso eval</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(parts)}</body></html>"


def _plots(summary: dict[str, Any], folder: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "matplotlib", "eval") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    charts = []
    if "attack" in summary:
        rows = summary["attack"]
        charts.append(
            (
                "attack_success",
                "Attack success rate",
                [
                    f"{_clip(r['scenario'], _PLOT_LABEL_CHARS)}\n{_clip(r['image_kind'], _PLOT_LABEL_CHARS)}"
                    for r in rows
                ],
                [r["asr_before"] or 0 for r in rows],
                [r["asr_after"] or 0 for r in rows],
            )
        )
    if "over_refusal" in summary:
        rows = summary["over_refusal"]
        charts.append(
            (
                "over_refusal",
                "Refusal rate",
                [_clip(r["prompts"], _PLOT_LABEL_CHARS) for r in rows],
                [r["refusal_before"] or 0 for r in rows],
                [r["refusal_after"] or 0 for r in rows],
            )
        )
    if "utility" in summary:
        u = summary["utility"]
        charts.append(
            (
                "utility",
                "Utility score / 100",
                ["score"],
                [(u["score_before"] or 0) / 100],
                [(u["score_after"] or 0) / 100],
            )
        )
    paths = []
    for name, title, labels, before, after in charts:
        figure, axes = plt.subplots(figsize=(max(4, 0.9 * len(labels) + 2), 3.5))
        positions = range(len(labels))
        axes.bar([p - 0.2 for p in positions], before, width=0.4, label="before", color="#c0504d")
        axes.bar([p + 0.2 for p in positions], after, width=0.4, label="with ECSO", color="#4f81bd")
        # category names are data: never TeX ($...$ is mathtext to matplotlib, and a bad one raises)
        axes.set_xticks(list(positions), labels, fontsize=7, parse_math=False, usetex=False)
        axes.set_ylim(0, 1.2)  # headroom for the legend above full bars
        axes.set_title(title, parse_math=False, usetex=False)
        axes.legend(loc="upper right", ncol=2, fontsize=8)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
