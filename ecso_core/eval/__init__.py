"""The evaluation harness: benchmark loaders, judges, the runner and the report (``ecso eval``)."""

from __future__ import annotations

from .datasets import BENCHMARKS, PAPER_SCENARIOS, EvalCase, data_dir, load_cases
from .judges import Judge, Judgement, KeywordJudge, LLMJudge
from .report import summarize, write_report
from .runner import run_eval, select

__all__ = [
    "BENCHMARKS",
    "PAPER_SCENARIOS",
    "EvalCase",
    "Judge",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "data_dir",
    "load_cases",
    "run_eval",
    "select",
    "summarize",
    "write_report",
]
