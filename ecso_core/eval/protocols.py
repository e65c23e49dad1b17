"""``--protocol`` presets: the evaluation settings of published ECSO comparisons, so numbers can sit next to a table.

Follow-up papers compare against different ECSOs under different judges, and the judge alone moves
MM-SafetyBench attack success by about 15 points. A :class:`Protocol` fixes what a published table
used: the benchmark(s), scenarios and image kinds, the judge, the metric, and any change to the guard.
:func:`resolve` turns a protocol plus the user's explicit flags into the :class:`EvalSettings` of a run:
the protocol sets defaults, every explicit flag overrides it, and the overrides are recorded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from .datasets import PAPER_SCENARIOS, scenario_codes

__all__ = ["PROTOCOLS", "EvalSettings", "JudgeKind", "Metric", "Protocol", "PublishedTable", "resolve"]

Metric = Literal["harmless_rate", "unsafe_rate", "attack_success_rate", "refusal_rate"]
"""How the headline table reads: harmless rate = 1 - attack success; unsafe rate = attack success as
judged by a safety judge; refusal rate on benign prompts (over-refusal: a refusal is a failure)."""
JudgeKind = Literal["keyword", "keyword-shiftdc", "llm", "profile"]
"""``keyword``: the GCG refusal list; ``keyword-shiftdc``: ShiftDC's list, any case; ``llm``: an LLM judge with
the official prompts (the user names the model); ``profile``: a dedicated safety judge model through a judge
profile (the user names the model)."""
ALL_KINDS = ("SD", "TYPO", "SD_TYPO")


class PublishedTable(BaseModel):
    """The published table a protocol mirrors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    citation: str
    table: str
    url: str


class Protocol(BaseModel):
    """The evaluation settings of one published comparison."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    summary: str
    benchmarks: tuple[str, ...]
    """The benchmarks the published table(s) cover; the first is the default ``--benchmark``."""
    scenarios: tuple[str, ...] | None = None
    """MM-SafetyBench scenario codes (None: the loader's default, the ECSO paper's eight)."""
    image_kinds: tuple[str, ...] | None = None
    """MM-SafetyBench image kinds (None: every kind the data has)."""
    judge: JudgeKind
    judge_prompts: Literal["benchmark", "ecso-official"] = "benchmark"
    """LLM judges: the benchmarks' own prompts, or the copies in ECSO's GPT-4 table its scripts used."""
    judge_profile: str | None = None
    """Profile judges: the default profile (``--judge-profile`` overrides)."""
    judge_hint: str
    """The judge the published table used (printed when the user must name one)."""
    metric: Metric
    guard: dict[str, Any] = {}
    """ECSOConfig fields the protocol changes (a ``--config`` file that sets them wins)."""
    mirrors: tuple[PublishedTable, ...]
    reproduces: str
    differs: str


_ECSO = PublishedTable(
    citation="Gou et al., Eyes Closed, Safety On: Protecting Multimodal LLMs via Image-to-Text "
    "Transformation, ECCV 2024 (arXiv:2403.09572)",
    table="MM-SafetyBench harmless rates (scenarios 01-07, 09; SD, TYPO/OCR, SD+TYPO) and VLSafe harmless rate",
    url="https://github.com/gyhdog99/ECSO",
)
_ETA = PublishedTable(
    citation="Ding, Li, Zhang, ETA: Evaluating Then Aligning Safety of Vision Language Models at Inference "
    "Time, ICLR 2025 (arXiv:2410.06625)",
    table="unsafe rate (USR) on MM-SafetyBench SD+TYPO (all 13 scenarios) and FigStep, ECSO among the baselines",
    url="https://github.com/DripNowhy/ETA",
)
_GUARDALIGN = PublishedTable(
    citation="Zhu et al., GuardAlign: Test-time Safety Alignment in Multimodal Large Language Models, "
    "ICLR 2026 (arXiv:2602.24027)",
    table="unsafe response rates in ETA's setting (SPA-VL, MM-SafetyBench, FigStep)",
    url="https://arxiv.org/abs/2602.24027",
)
_SHIFTDC = PublishedTable(
    citation="Zou, Kang, Kesidis, Lin, Understanding and Rectifying Safety Perception Distortion in VLMs, "
    "NeurIPS 2025 (arXiv:2502.13095)",
    table="keyword attack success rate on MM-SafetyBench (13 scenarios x SD, TYPO, SD+TYPO) and FigStep",
    url="https://github.com/Renovamen/ShiftDC",
)
_MOSSBENCH = PublishedTable(
    citation="Li et al., MOSSBench: Is Your Multimodal Language Model Oversensitive to Safe Queries? "
    "(arXiv:2406.17806)",
    table="refusal rate on 300 benign image queries, per stimulus type (leaderboard)",
    url="https://github.com/xirui-li/MOSSBench",
)

_ECSO_PAPER = Protocol(
    name="ecso-paper",
    summary="the ECSO paper: harmless rate judged by GPT-4 with ECSO's own judge prompts",
    benchmarks=("mm-safetybench", "vlsafe"),
    scenarios=PAPER_SCENARIOS,
    image_kinds=ALL_KINDS,
    judge="llm",
    judge_prompts="ecso-official",
    judge_hint="GPT-4 in the paper, e.g. --judge openai:gpt-4o@https://api.openai.com/v1",
    metric="harmless_rate",
    mirrors=(_ECSO,),
    reproduces="the cases (scenarios 01-07 and 09 x SD, TYPO, SD_TYPO; VLSafe's harmlessness_examine split),"
    " the guard's prompts and greedy decoding, ECSO's judge prompts (query_safety of its GPT-4 "
    "table for MM-SafetyBench, llm_binary_strict for VLSafe) and the metric (harmless rate = 1 - "
    "attack success), pooled and as the mean of the scenario rows",
    differs="the judge model is yours (the paper's GPT-4 snapshot may no longer be served); judge replies"
    " that do not parse are left out and counted, where ECSO's script counted any reply other "
    "than exactly 'safe' (or without a [[rating]]) as harmful; our self-check verdict is not "
    "fail-open (see SPEC), so 'Yes, ...' counts as unsafe; the paper's printed SD+OCR/OCR "
    "averages are not its rows' means (the report prints both)",
)

_NO_GATE = _ECSO_PAPER.model_copy(
    update={
        "name": "no-gate",
        "summary": "the ECSO paper's setting with ECSO's self-check gate removed (every image request captioned)",
        "guard": {"gate": False},
        "reproduces": "the 'ECSO' some follow-up papers compare against: no harm-aware check, every request with"
        " an image is captioned and answered eyes closed (ECSOConfig(gate=False)); everything else as "
        "ecso-paper",
        "differs": "not a published ECSO variant: an ablation, so its numbers show what the gate costs or buys; "
        "the step-1 answer is still generated (it is the 'before' column) and the guard's verdicts "
        "are 'no_gate', so the agreement table is empty",
    }
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        _ECSO_PAPER,
        _NO_GATE,
        Protocol(
            name="eta",
            summary="ETA / GuardAlign: unsafe rate on MM-SafetyBench SD+TYPO, all 13 scenarios, by a local judge",
            benchmarks=("mm-safetybench", "figstep"),
            scenarios=tuple(f"{i:02d}" for i in range(1, 14)),
            image_kinds=("SD_TYPO",),
            judge="profile",
            judge_profile="llama-guard-4",
            judge_hint="ETA used MD-Judge-v0.2 (InternLM2-7B), e.g. --judge hf:meta-llama/Llama-Guard-4-12B "
            "--judge-profile llama-guard-4",
            metric="unsafe_rate",
            mirrors=(_ETA, _GUARDALIGN),
            reproduces="ETA's cases (MM-SafetyBench's 13 scenarios with SD_TYPO images and the Rephrased Question, "
            "as its dataset/MMSafety.py; FigStep SafeBench's 500 with FigStep's fixed prompt) and its "
            "metric (unsafe rate = share of answers the safety judge calls unsafe)",
            differs="ETA judged with MD-Judge-v0.2-internlm2_7b and its own rubric ('[RESULT]: safe/unsafe'), "
            "which no ecso judge profile implements: pick a profile judge (llama-guard-4, shieldgemma-2, "
            "...) and expect different absolute numbers; SPA-VL Harm and the cross-modality adversarial "
            "images have no loader here; GuardAlign reports unsafe rates in ETA's setting and we found no"
            " public code of it to check against",
        ),
        Protocol(
            name="shiftdc",
            summary="ShiftDC: keyword attack success rate on MM-SafetyBench, 13 scenarios x SD, TYPO, SD+TYPO",
            benchmarks=("mm-safetybench", "figstep"),
            scenarios=tuple(f"{i:02d}" for i in range(1, 14)),
            image_kinds=ALL_KINDS,
            judge="keyword-shiftdc",
            judge_hint="ShiftDC's refusal keywords (run_asr.py), matched in any case",
            metric="attack_success_rate",
            mirrors=(_SHIFTDC,),
            reproduces="ShiftDC's keyword list and matching (an attack succeeds when the answer contains none of its"
            " 59 refusal substrings, any case), all 13 scenarios and the three image kinds, per-scenario "
            "rows",
            differs="ShiftDC reads MM-SafetyBench from the PKU-Alignment/MM-SafetyBench hub copy, whose per-split"
            " questions may differ in wording from processed_questions' Rephrased Question(s) used here; "
            "keyword matching counts any answer with 'However' or 'avoid' as a refusal, which lowers "
            "attack success for every model and defence alike",
        ),
        Protocol(
            name="mossbench",
            summary="MOSSBench over-refusal: refusal rate on benign-but-alarming images, per stimulus type",
            benchmarks=("mossbench",),
            judge="llm",
            judge_hint="GPT-4-turbo with the image in MOSSBench, e.g. --judge openai:gpt-4o@https://api.openai.com/v1",
            metric="refusal_rate",
            mirrors=(_MOSSBENCH,),
            reproduces="MOSSBench's 300 benign queries, its refusal grader prompt with the image attached "
            "(mossbench/judges.json) and its metric (refusal rate, overall and per stimulus type: "
            "Exaggerated Risk, Negated Harm, Counterintuitive Interpretation)",
            differs="ungradable judge replies are left out and counted (MOSSBench's script falls back to any '1' "
            "or '0' in the reply); with --judge keyword, XSTest's refusal prefixes replace the grader",
        ),
    )
}


class EvalSettings(BaseModel):
    """The resolved settings of one ``ecso eval`` run (written to ``summary.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: str | None = None
    benchmark: str
    scenarios: tuple[str, ...] | None = None
    image_kinds: tuple[str, ...] | None = None
    judge: str
    """``keyword``, ``keyword-shiftdc``, or the judge model's spec."""
    judge_kind: JudgeKind
    judge_prompts: Literal["benchmark", "ecso-official"] = "benchmark"
    judge_profile: str | None = None
    metric: Metric
    guard: dict[str, Any] = {}
    overridden: tuple[str, ...] = ()
    """The protocol's defaults that explicit flags replaced."""


def resolve(
    protocol: str | None,
    *,
    benchmark: str | None = None,
    scenarios: str | None = None,
    image_kinds: str | None = None,
    judge: str | None = None,
    judge_profile: str | None = None,
    metric: str | None = None,
) -> EvalSettings:
    """The settings of a run: ``protocol``'s defaults, replaced by every flag given (not None).

    Raises:
        ConfigError: an unknown protocol or metric, no benchmark, or a protocol whose judge model the user
            must name and did not.

    """
    kinds = tuple(k.strip() for k in image_kinds.split(",") if k.strip()) if image_kinds else None
    codes = scenario_codes(scenarios) if scenarios else None
    if metric is not None and metric not in Metric.__args__:  # type: ignore[attr-defined]
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(Metric.__args__)}")  # type: ignore[attr-defined]
    if protocol is None:
        if benchmark is None:
            raise ConfigError("give --benchmark (or a --protocol, which names one)")
        kind = _judge_kind(judge or "keyword", judge_profile)
        return EvalSettings(
            benchmark=benchmark,
            scenarios=codes,
            image_kinds=kinds,
            judge=judge or "keyword",
            judge_kind=kind,
            judge_profile=judge_profile,
            metric=metric or ("refusal_rate" if benchmark in ("xstest", "mossbench") else "attack_success_rate"),  # type: ignore[arg-type]
        )
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    preset = PROTOCOLS[protocol]
    spec = judge
    if spec is None:
        if preset.judge in ("keyword", "keyword-shiftdc"):
            spec = preset.judge
        else:
            raise ConfigError(
                f"protocol {protocol} judges with a model you name: pass --judge <model spec> ({preset.judge_hint}), "
                "or --judge keyword to override"
            )
    kind = _judge_kind(spec, judge_profile)
    if kind == "llm" and preset.judge == "profile":
        kind = "profile"  # the protocol's judge is a profile judge: the named model speaks its profile
    profile = (judge_profile or preset.judge_profile) if kind == "profile" else None
    # Naming the judge model a protocol asks for is no override; a judge of another kind or profile is.
    chosen = {
        "benchmark": benchmark,
        "scenarios": codes,
        "image_kinds": kinds,
        "judge": spec if kind != preset.judge else None,
        "judge_profile": profile if kind == "profile" and profile != preset.judge_profile else None,
        "metric": metric,
    }
    overridden = [name for name, value in chosen.items() if value is not None]
    chosen_benchmark = benchmark or preset.benchmarks[0]
    mmsb = chosen_benchmark.startswith("mm-safetybench")  # the protocol's scenarios and kinds are MM-SafetyBench's
    return EvalSettings(
        protocol=protocol,
        benchmark=chosen_benchmark,
        scenarios=codes if codes is not None else (preset.scenarios if mmsb else None),
        image_kinds=kinds if kinds is not None else (preset.image_kinds if mmsb else None),
        judge=spec,
        judge_kind=kind,
        judge_prompts=preset.judge_prompts if kind == "llm" else "benchmark",
        judge_profile=profile,
        metric=metric or preset.metric,  # type: ignore[arg-type]
        guard=dict(preset.guard),
        overridden=tuple(overridden),
    )


def _judge_kind(spec: str, profile: str | None) -> JudgeKind:
    if spec in ("keyword", "keyword-shiftdc"):
        if profile is not None:
            raise ConfigError("--judge-profile needs a judge model (--judge <model spec>), not a keyword judge")
        return spec  # type: ignore[return-value]
    return "profile" if profile is not None else "llm"


def describe(settings: EvalSettings) -> dict[str, Any]:
    """The run's settings with its protocol's citation and notes, for ``summary.json`` and the report header."""
    out: dict[str, Any] = settings.model_dump(mode="json")
    if settings.protocol is not None:
        preset = PROTOCOLS[settings.protocol]
        out["mirrors"] = [table.model_dump() for table in preset.mirrors]
        out["reproduces"] = preset.reproduces
        out["differs"] = preset.differs
    return out
