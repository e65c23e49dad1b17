"""The evaluation harness: benchmark loaders, judges, protocols, the runner and the report (``ecso eval``)."""

from __future__ import annotations

from .agreement import agreement
from .datasets import ALL_SCENARIOS, BENCHMARKS, PAPER_SCENARIOS, EvalCase, data_dir, load_cases, scenario_codes
from .judges import Judge, Judgement, KeywordJudge, LLMJudge, ProfileJudge
from .protocols import PROTOCOLS, EvalSettings, Protocol, resolve
from .report import summarize, write_report
from .runner import run_eval, select

__all__ = [
    "ALL_SCENARIOS",
    "BENCHMARKS",
    "PAPER_SCENARIOS",
    "PROTOCOLS",
    "EvalCase",
    "EvalSettings",
    "Judge",
    "Judgement",
    "KeywordJudge",
    "LLMJudge",
    "ProfileJudge",
    "Protocol",
    "agreement",
    "data_dir",
    "load_cases",
    "resolve",
    "run_eval",
    "scenario_codes",
    "select",
    "summarize",
    "write_report",
]
