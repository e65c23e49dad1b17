"""Summaries, tables and plots of an evaluation run (``summary.json``, ``report.md``, ``report.html``)."""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

__all__ = ["summarize", "write_report"]


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates before (undefended step-1 answer) and after ECSO, per scenario x image kind and overall."""
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
            by_label[record["meta"].get("label", "all")].append(record)
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
    return summary


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
    records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary = {**meta, **summarize(records)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plots = _plots(summary, out / "plots")
    markdown = _markdown(summary, [p.relative_to(out) for p in plots])
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(_html(summary, plots), encoding="utf-8")
    return summary


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    tables = []
    if "attack" in summary:
        rows = [
            [r["scenario"], r["image_kind"], r["n"], _pct(r["asr_before"]), _pct(r["asr_after"])]
            for r in summary["attack"]
        ]
        tables.append(
            ("Attack success rate (lower is better)", ["scenario", "image", "n", "before", "with ECSO"], rows)
        )
    if "over_refusal" in summary:
        rows = [
            [r["prompts"], r["n"], _pct(r["refusal_before"]), _pct(r["refusal_after"])] for r in summary["over_refusal"]
        ]
        tables.append(
            ("Refusal rate (on safe prompts, lower is better)", ["prompts", "n", "before", "with ECSO"], rows)
        )
    if "utility" in summary:
        u = summary["utility"]
        tables.append(
            (
                "Utility score (0-100)",
                ["n", "graded", "before", "with ECSO"],
                [[u["n"], u["graded"], u["score_before"], u["score_after"]]],
            )
        )
    tables.append(("Guard decisions", ["decision", "n"], [[k, v] for k, v in summary["decisions"].items()]))
    return tables


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _markdown(summary: dict[str, Any], plots: list[Path]) -> str:
    lines = [f"# ecso eval: {summary.get('benchmark')} on {summary.get('model')}", ""]
    lines.append(
        f"Judge: `{summary.get('judge')}` · cases: {summary['cases']} · errors: {summary['errors']} · "
        f"unparsed judgements: {summary['unparsed_judgements']}"
    )
    lines.append("")
    for title, header, rows in _tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        lines.append("")
    lines += [f"![{p.stem}]({p.as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


def _html(summary: dict[str, Any], plots: list[Path]) -> str:
    parts = [
        f"<h1>ecso eval: {html.escape(str(summary.get('benchmark')))} on {html.escape(str(summary.get('model')))}</h1>",
        f"<p>Judge: <code>{html.escape(str(summary.get('judge')))}</code>; cases {summary['cases']}; "
        f"errors {summary['errors']}</p>",
    ]
    for title, header, rows in _tables(summary):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>")
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
                [f"{r['scenario']}\n{r['image_kind']}" for r in rows],
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
                [r["prompts"] for r in rows],
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
        axes.set_xticks(list(positions), labels, fontsize=7)
        axes.set_ylim(0, 1.2)  # headroom for the legend above full bars
        axes.set_title(title)
        axes.legend(loc="upper right", ncol=2, fontsize=8)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
