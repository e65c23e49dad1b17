"""The ``ecso`` command line."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .audit import JsonlAuditLog
from .backends import VisionChatBackend, load_backend
from .config import ECSOConfig
from .errors import ConfigError, ECSOError, InputError, MissingDependencyError
from .guard import ECSO
from .images import prepare_request
from .judging import get_judge_profile
from .result import ECSOResult
from .types import ChatRequest, GenerationParams, ImagePart, ImageURL, Message, TextPart

if TYPE_CHECKING:
    from .datagen import Format
    from .eval.datasets import EvalCase
    from .eval.judges import Judge
    from .eval.protocols import EvalSettings

DEFAULT_MODEL = "hf:llava-hf/llava-interleave-qwen-0.5b-hf"
"""A small real VLM (LLaVA architecture, Qwen 0.5B language model) for ``ecso ask`` without --model."""

_MODEL_HELP = (
    "Model spec: tiny-random[:<family>], hf:<hub id or local folder>, or openai:<model>@<base_url> "
    "(an OpenAI-compatible server: vLLM, Ollama, ...)."
)
_JUDGE_HELP = "A separate model spec for the check (default: the model itself), e.g. a Llama Guard 4 server."
_JUDGE_PROFILE_HELP = (
    "How the check asks its judge: ecso (the paper's yes/no self-check), llama-guard-4, llama-guard-3-vision, "
    "shieldgemma-2 or classifier (a text guard or a moderation: endpoint). Default: the config's, else ecso."
)
_MAX_NEW_TOKENS_HELP = (
    "Most new tokens per model call. Default: the model's own (a checkpoint's generation_config, else the "
    "paper's 1,024; tiny-random: 16), or the --config file's."
)

app = typer.Typer(
    help="ECSO (Eyes Closed, Safety On): a training-free guard for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """ECSO (Eyes Closed, Safety On): a training-free guard for vision-language models."""


@app.command()
def ask(
    query: Annotated[str, typer.Argument(help="The question to ask about the image(s).")],
    model: Annotated[str, typer.Option(help=_MODEL_HELP)] = DEFAULT_MODEL,
    image: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Image: a file path, a data: URL, or an http(s) URL (with --allow-image-urls); repeat for several."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the whole ECSOResult as JSON.")] = False,
    system: Annotated[Optional[str], typer.Option(help="A system message.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help=_MAX_NEW_TOKENS_HELP)] = None,
    device: Annotated[str, typer.Option(help="Torch device for hf models (auto, cpu, cuda, ...).")] = "auto",
    allow_image_urls: Annotated[bool, typer.Option(help="Allow http(s) image URLs.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="ECSOConfig as a JSON file.")] = None,
    judge: Annotated[Optional[str], typer.Option(help=_JUDGE_HELP)] = None,
    judge_profile: Annotated[Optional[str], typer.Option(help=_JUDGE_PROFILE_HELP)] = None,
) -> None:
    """Answer QUERY about the image(s) with the ECSO guard in front of the model."""
    if model.startswith("tiny-random"):
        typer.echo("note: tiny-random has random weights; its answers are noise (it tests plumbing only).", err=True)
    messages = [Message(role="system", content=system)] if system else []
    parts = [ImagePart(image=_image_source(value)) for value in image or []]
    messages.append(Message(role="user", content=(*parts, TextPart(text=query))))
    request = ChatRequest(messages=tuple(messages), params=GenerationParams(max_new_tokens=max_new_tokens))
    settings = _bounded(
        _load_config(config, allow_image_urls=allow_image_urls or None, judge_profile=judge_profile),
        max_new_tokens,
        "caption",
    )
    for part in parts:
        url = part.image.url if isinstance(part.image, ImageURL) else "data:"
        if not settings.allow_image_urls and url[:5].lower() != "data:":
            typer.echo(f"error: --image {url[:100]} is a URL; pass --allow-image-urls to fetch it", err=True)
            raise typer.Exit(code=2)
    with _reported_errors():
        request = prepare_request(request, settings.image_limits, settings.allow_image_urls)  # fail before loading
        backend = _load_model(model, device)
        judge_backend = _load_model(judge, device) if judge else None
        start = time.perf_counter()
        result = ECSO(backend, settings, judge=judge_backend).run(request)
    if json_output:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(result.answer)
    typer.echo(_status_line(result, time.perf_counter() - start), err=True)


@app.command()
def serve(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        Optional[str], typer.Option(envvar="ECSO_API_KEY", help="Require this bearer token (env ECSO_API_KEY).")
    ] = None,
    judge: Annotated[Optional[str], typer.Option(help=_JUDGE_HELP)] = None,
    judge_profile: Annotated[Optional[str], typer.Option(help=_JUDGE_PROFILE_HELP)] = None,
    no_guard: Annotated[bool, typer.Option("--no-guard", help="Serve the bare model (for A/B measurements).")] = False,
    max_batch_size: Annotated[int, typer.Option(help="Most concurrent requests answered as one batch.")] = 16,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request gets 504.")] = 300.0,
    allow_image_urls: Annotated[bool, typer.Option(help="Allow http(s) image URLs.")] = False,
    device: Annotated[str, typer.Option(help="Torch device for hf models (auto, cpu, cuda, ...).")] = "auto",
    config: Annotated[Optional[Path], typer.Option(help="ECSOConfig as a JSON file.")] = None,
    audit_log: Annotated[
        Optional[Path],
        typer.Option(help="Append every guarded result, withheld text included, to this JSONL file (operator-side)."),
    ] = None,
    max_tokens_limit: Annotated[int, typer.Option(help="Most max_tokens a client may ask for (else 400).")] = 4096,
    max_prompt_chars: Annotated[
        int, typer.Option(help="Most characters of prompt text per request (else 400).")
    ] = 100_000,
    image_deadline: Annotated[float, typer.Option(help="Seconds to read and decode a request's images.")] = 30.0,
    public_metrics: Annotated[
        bool, typer.Option("--public-metrics", help="Serve /metrics without the API key.")
    ] = False,
    in_band_audit: Annotated[
        bool,
        typer.Option(
            "--in-band-audit", help="Also send withheld text in the response's ecso field (trusted clients only)."
        ),
    ] = False,
    stream: Annotated[
        Optional[str],
        typer.Option(
            help="How streamed answers leave: whole (after the whole answer is checked) or progressive "
            "(window by window, each checked first). Default: the config's, else whole."
        ),
    ] = None,
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions endpoint with ECSO in front of MODEL."""
    try:
        import uvicorn

        from .server import create_app
        from .server.protocol import RequestLimits
    except ImportError:
        typer.echo(
            "error: the server needs its extra: pip install 'ecso[server]' "
            "(from a checkout of ecso: pip install -e '.[server]')",
            err=True,
        )
        raise typer.Exit(code=1) from None
    settings = _load_config(
        config,
        allow_image_urls=allow_image_urls or None,
        in_band_audit=in_band_audit or None,
        stream=stream,
        judge_profile=judge_profile,
    )
    with _reported_errors():
        backend = _load_model(model, device)
        judge_backend = _load_model(judge, device) if judge else None
    sink = JsonlAuditLog(audit_log) if audit_log else None
    served = backend if no_guard else ECSO(backend, settings, judge=judge_backend, audit=sink)
    application = create_app(
        served,
        model_name=model,
        api_key=api_key,
        max_batch_size=max_batch_size,
        request_timeout_s=request_timeout,
        public_metrics=public_metrics,
        limits=RequestLimits(
            max_tokens=max_tokens_limit, max_prompt_chars=max_prompt_chars, image_deadline_s=image_deadline
        ),
    )
    uvicorn.run(application, host=host, port=port, timeout_graceful_shutdown=30, log_level="warning")


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    out: Annotated[Path, typer.Option(help="Output folder (records.jsonl, summary.json, report).")],
    benchmark: Annotated[
        Optional[str],
        typer.Option(
            help="figstep, figstep-tiny, mm-safetybench, mm-safetybench-tiny, vlsafe, mossbench, mossbench-contrast, "
            "xstest, mm-vet, or jsonl:<file> (default: the --protocol's first)."
        ),
    ] = None,
    protocol: Annotated[
        Optional[str],
        typer.Option(
            help="Settings of a published comparison: ecso-paper, no-gate, eta, shiftdc, mossbench (see docs/eval.md); "
            "explicit flags override them."
        ),
    ] = None,
    judge: Annotated[
        Optional[str],
        typer.Option(
            help="keyword, keyword-shiftdc, or a model spec (an LLM judge; with --judge-profile, a safety judge)."
        ),
    ] = None,
    judge_profile: Annotated[
        Optional[str],
        typer.Option(help="Judge the answers with this judge profile of the --judge model (llama-guard-4, ...)."),
    ] = None,
    check_judge: Annotated[
        Optional[str], typer.Option(help="Separate model spec for the guard's own self-check.")
    ] = None,
    check_profile: Annotated[
        Optional[str], typer.Option(help="Judge profile of the guard's self-check (default: ecso).")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(envvar="ECSO_DATA", help="Benchmark data folder.")] = None,
    image_dir: Annotated[
        Optional[Path], typer.Option(help="Image folder of benchmarks that name COCO images (vlsafe: train2017).")
    ] = None,
    limit: Annotated[Optional[int], typer.Option(min=0, help="Evaluate a seeded random subset of this size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and of the bootstrap intervals.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests per batch.")] = 8,
    scenarios: Annotated[
        Optional[str], typer.Option(help="MM-SafetyBench scenarios: all, or e.g. 01,08 (default: the paper's).")
    ] = None,
    image_kinds: Annotated[
        Optional[str], typer.Option(help="Only these image kinds, e.g. SD_TYPO or SD,TYPO (default: all found).")
    ] = None,
    metric: Annotated[
        Optional[str],
        typer.Option(help="Headline metric: attack_success_rate, unsafe_rate, harmless_rate or refusal_rate."),
    ] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help=_MAX_NEW_TOKENS_HELP)] = None,
    judge_max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Most new tokens per reply of a model judge (the eval's, not the guard's).")
    ] = 512,
    device: Annotated[str, typer.Option(help="Torch device for hf models.")] = "auto",
    config: Annotated[Optional[Path], typer.Option(help="ECSOConfig as a JSON file.")] = None,
) -> None:
    """Measure attack success (before and after ECSO), over-refusal or utility on a benchmark."""
    from .eval import data_dir as find_data
    from .eval import load_cases, resolve, run_eval, select, write_report
    from .eval.protocols import describe
    from .eval.runner import claim_folder

    settings = _bounded(_load_config(config), max_new_tokens, "answer", "caption", "eyes_closed")
    started = time.perf_counter()
    with _reported_errors():
        plan = resolve(
            protocol,
            benchmark=benchmark,
            scenarios=scenarios,
            image_kinds=image_kinds,
            judge=judge,
            judge_profile=judge_profile,
            metric=metric,
        )
        jsonl = plan.benchmark.startswith("jsonl:")
        if scenarios is not None and not plan.benchmark.startswith("mm-safetybench"):
            raise ConfigError(f"--scenarios picks MM-SafetyBench scenarios; {plan.benchmark} has none")
        if plan.image_kinds == ():
            raise ConfigError(f"--image-kinds {image_kinds!r} names no image kind")
        settings = _eval_guard_config(settings, plan.guard, check_profile)
        _require_extra("eval", "tqdm", "matplotlib")  # before minutes of model loading, not after
        root = None if jsonl else find_data(data_dir)
        options: dict[str, object] = {"image_dir": image_dir} if image_dir else {}
        if plan.scenarios is not None:
            options["scenarios"] = plan.scenarios
        cases = load_cases(plan.benchmark, root, image_kinds=plan.image_kinds, **options)
        missing = _missing_kinds(plan.image_kinds, {case.image_kind for case in cases})
        if not cases:
            raise ConfigError(f"{plan.benchmark} has no cases to evaluate")
        cases = select(cases, limit, seed)
        if not cases:
            raise ConfigError("--limit 0 selects no case to evaluate")
        # the LLM judge's prompts live in the data folder, for a jsonl: benchmark too (else the working folder)
        prompts = root or (find_data(data_dir) if data_dir else Path("."))
        _check_judge_prompts(plan, prompts, cases)  # a missing prompt file stops the run before any model loads
        claim_folder(out, _eval_run(plan, model, check_judge, settings, judge_max_new_tokens))
        guard = ECSO(
            _load_model(model, device), settings, judge=_load_model(check_judge, device) if check_judge else None
        )
        judging = _eval_judge(plan, prompts, device, judge_max_new_tokens, settings)
        run_eval(cases, guard, judging, out, concurrency=concurrency)
        meta = {
            "benchmark": plan.benchmark,
            "model": model,
            "judge": judging.name,
            "limit": limit,
            "seed": seed,
            "prompt_set": settings.prompt_set,
            "metric": plan.metric,
            "protocol": describe(plan),
            "guard": {
                "check_judge": check_judge,
                "judge_profile": getattr(settings, "judge_profile", "ecso"),
                "gate": getattr(settings, "gate", True),
            },
            "missing_image_kinds": missing,
        }
        summary = write_report(out, meta)
    headline = [
        {"image_kind": t.get("image_kind"), "prompts": t.get("prompts"), **row}
        for t in summary.get("tables", [])
        for row in t["rows"]
        if row["row"] != "scenario"
    ]
    typer.echo(
        json.dumps(
            {k: summary[k] for k in ("cases", "errors", "decisions")}
            | {
                "attack_overall": [r for r in summary.get("attack", []) if r["scenario"] == "all"],
                "metric": plan.metric,
                "headline": headline,
                "agreement": summary.get("agreement"),
                "seconds": round(time.perf_counter() - started, 1),
                "report": str(out / "report.html"),
            },
            indent=2,
        )
    )


def _eval_guard_config(
    settings: ECSOConfig, protocol_guard: dict[str, object], check_profile: Optional[str]
) -> ECSOConfig:
    """``settings`` with the protocol's guard changes (a --config file that sets a field wins) and --check-profile."""
    update = {k: v for k, v in protocol_guard.items() if k not in settings.model_fields_set}
    if check_profile is not None:
        update["judge_profile"] = check_profile
    if not update:
        return settings
    return ECSOConfig.model_validate({**settings.model_dump(exclude_unset=True), **update})


def _eval_run(
    plan: EvalSettings, model: str, check_judge: Optional[str], settings: ECSOConfig, judge_max_new_tokens: int
) -> dict[str, object]:
    """What an --out folder's records were made with: a rerun with other settings is refused, not mixed in."""
    benchmark = plan.benchmark
    if benchmark.startswith("jsonl:"):
        benchmark = f"jsonl:{Path(benchmark[6:]).absolute()}"
    return {
        "benchmark": benchmark,
        "model": model,
        "judge": plan.judge,
        "judge_kind": plan.judge_kind,
        "judge_profile": plan.judge_profile,
        "judge_prompts": plan.judge_prompts,
        "judge_max_new_tokens": judge_max_new_tokens if plan.judge_kind not in ("keyword", "keyword-shiftdc") else None,
        "protocol": plan.protocol,
        "check_judge": check_judge,
        "guard": settings.model_dump(mode="json"),
    }


def _check_judge_prompts(plan: EvalSettings, data: Path, cases: list[EvalCase]) -> None:
    """Build one LLM-judge prompt for each kind of case now: a missing or broken prompt file stops the run.

    Before any model loads, not after the first batch has been answered.
    """
    if plan.judge_kind != "llm":
        return
    from .backends.scripted import ScriptedBackend
    from .eval import LLMJudge

    LLMJudge(ScriptedBackend([]), data, prompts=plan.judge_prompts).check_prompts(cases)


def _missing_kinds(wanted: Optional[tuple[str, ...]], found: set[str]) -> list[str]:
    """Image kinds a protocol asks for that the data lacks (warned about); none at all is an error."""
    if not wanted:
        return []
    missing = [kind for kind in wanted if kind not in found]
    if len(missing) == len(wanted):
        raise ConfigError(
            f"no cases of image kind(s) {', '.join(wanted)} in the data (MM-SafetyBench's SD and SD_TYPO need "
            "mm-safetybench/imgs/<scenario>/<kind>/<id>.jpg)"
        )
    if missing:
        typer.echo(f"warning: no {', '.join(missing)} images in the data; those rows are left out", err=True)
    return missing


def _eval_judge(
    plan: EvalSettings, root: Optional[Path], device: str, max_new_tokens: int, settings: ECSOConfig
) -> Judge:
    """The eval judge: refusal keywords, an LLM judge with the official prompts, or a profile (safety) judge.

    A profile judge reads its verdicts as the run's config says (threshold, score floor, fallback).
    """
    from .eval import KeywordJudge, LLMJudge, ProfileJudge
    from .eval.judges import SHIFTDC_REFUSAL_KEYWORDS

    if plan.judge_kind == "keyword":
        return KeywordJudge()
    if plan.judge_kind == "keyword-shiftdc":
        return KeywordJudge(SHIFTDC_REFUSAL_KEYWORDS, ignore_case=True, name="keyword-shiftdc")
    backend = _load_model(plan.judge, device)
    if plan.judge_kind == "profile":
        params = GenerationParams(max_new_tokens=min(max_new_tokens, ECSOConfig().check_params.max_new_tokens or 16))
        reading = settings.model_dump(include={"verdict_threshold", "use_scores", "min_score_mass", "score_fallback"})
        config = ECSOConfig(judge_profile=plan.judge_profile or "ecso", check_params=params, **reading)
        return ProfileJudge(ECSO(backend, config))
    return LLMJudge(backend, root or Path("."), prompts=plan.judge_prompts, max_new_tokens=max_new_tokens)


datagen_app = typer.Typer(help="Generate supervised fine-tuning data with ECSO.", invoke_without_command=True)
app.add_typer(datagen_app, name="datagen")


@datagen_app.callback()
def datagen(
    ctx: typer.Context,
    benchmark: Annotated[Optional[str], typer.Option(help="A benchmark name (see ecso eval).")] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="JSONL of {image, query} pairs.")] = None,
    model: Annotated[Optional[str], typer.Option(help=_MODEL_HELP)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (rerun to resume).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(envvar="ECSO_DATA", help="Benchmark data folder.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use a seeded random subset of this size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset.")] = 0,
    shard: Annotated[str, typer.Option(help="i/N: handle shard i of N (disjoint by pair hash).")] = "0/1",
    safe_fraction: Annotated[float, typer.Option(help="Share of safe pairs to keep unchanged.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Pairs per batched run.")] = 8,
    formats: Annotated[str, typer.Option(help="llava, messages, or both (comma-separated).")] = "llava,messages",
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help=_MAX_NEW_TOKENS_HELP)] = None,
    device: Annotated[str, typer.Option(help="Torch device for hf models.")] = "auto",
    config: Annotated[Optional[Path], typer.Option(help="ECSOConfig as a JSON file.")] = None,
) -> None:
    """Run ECSO over (image, query) pairs and write SFT records: --benchmark NAME | --input FILE, --model, --out."""
    if ctx.invoked_subcommand is not None:
        return
    from .datagen import generate_sft
    from .eval import data_dir as find_data
    from .eval import load_cases, select

    if model is None or out is None or (benchmark is None) == (input_file is None):
        typer.echo("error: give --model, --out and exactly one of --benchmark or --input", err=True)
        raise typer.Exit(code=2)
    try:
        index, count = (int(x) for x in shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        typer.echo(f"error: --shard must be i/N with 0 <= i < N, got {shard!r}", err=True)
        raise typer.Exit(code=2) from None
    chosen = _formats(formats)
    settings = _bounded(_load_config(config), max_new_tokens, "answer", "caption", "eyes_closed")
    with _reported_errors():
        _require_extra("eval", "tqdm")  # the progress bar
        source = f"jsonl:{input_file}" if input_file else str(benchmark)
        root = None if input_file else find_data(data_dir)
        cases = select(load_cases(source, root), limit, seed)
        guard = ECSO(_load_model(model, device), settings)
        manifest = generate_sft(
            cases,
            guard,
            out,
            shard=(index, count),
            safe_fraction=safe_fraction,
            batch_size=batch_size,
            formats=chosen,
            model=model,
        )
    typer.echo(json.dumps({k: manifest[k] for k in ("records", "outcomes", "duplicates_skipped")}, indent=2))


def _formats(text: str) -> tuple[Format, ...]:
    chosen: list[Format] = []
    for name in (f.strip() for f in text.split(",")):
        match name:
            case "llava" | "messages":
                chosen.append(name)
            case "":
                pass
            case _:
                typer.echo(f"error: unknown --formats entry {name!r}; known: llava, messages", err=True)
                raise typer.Exit(code=2)
    return tuple(chosen)


@datagen_app.command("validate")
def datagen_validate(folder: Annotated[Path, typer.Argument(help="A datagen output folder.")]) -> None:
    """Check every record and image of a datagen output folder."""
    from .datagen import validate_sft

    problems = validate_sft(folder)
    for problem in problems[:50]:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"invalid: {len(problems)} problem(s)", err=True)
        raise typer.Exit(code=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    typer.echo(f"valid: {manifest['records']}")


@contextmanager
def _reported_errors() -> Iterator[None]:
    """End the command on an ``ECSOError`` with its message: exit 2 for bad input, 1 for anything else."""
    try:
        yield
    except ECSOError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2 if isinstance(exc, InputError) else 1) from None


def _load_model(spec: str, device: str) -> VisionChatBackend:
    """Load a model spec; ``--device`` applies to local models only (a remote server has its own)."""
    return load_backend(spec) if spec.startswith("openai:") else load_backend(spec, device=device)


def _image_source(value: str) -> Path | ImageURL:
    """What ``--image VALUE`` names: a ``data:`` or ``http(s)`` URL (an :class:`ImageURL`), else a file path.

    A URL is never read as a path, nor a path fetched; an http(s) URL is fetched only with
    ``--allow-image-urls`` (through the guarded fetch of :mod:`ecso_core.images`), else refused.
    """
    head = value.strip()[:8].lower()
    if head.startswith(("data:", "http://", "https://")):
        return ImageURL(value.strip())
    return Path(value).expanduser()


def _bounded(settings: ECSOConfig, max_new_tokens: Optional[int], *steps: str) -> ECSOConfig:
    """``settings`` with the given steps' ``max_new_tokens`` set to ``--max-new-tokens``, when it was given.

    Unset, the config file's parameters (else the model's own default) apply. Set, it replaces only
    ``max_new_tokens`` of each step's parameters; their other fields stay as configured.
    """
    if max_new_tokens is None:
        return settings
    update = {}
    for step in steps:
        params = getattr(settings, f"{step}_params") or GenerationParams()
        update[f"{step}_params"] = params.model_copy(update={"max_new_tokens": max_new_tokens})
    return settings.model_copy(update=update)


def _require_extra(extra: str, *modules: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``extra`` unless every module imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(module, extra) from exc


def _load_config(path: Optional[Path], **overrides: object) -> ECSOConfig:
    """ECSOConfig from a JSON file (if given), with command-line overrides applied."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            typer.echo(f"error: cannot read config {path}: {exc}", err=True)
            raise typer.Exit(code=2) from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = ECSOConfig.model_validate(data)
    except ValueError as exc:
        typer.echo(f"error: invalid config: {exc}", err=True)
        raise typer.Exit(code=2) from None
    try:
        get_judge_profile(settings.judge_profile)  # an unknown profile: now, before any model loads
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    return settings


def _status_line(result: ECSOResult, seconds: float) -> str:
    verdict = result.verdict
    detail = ""
    if verdict is not None and verdict.p_yes is not None:
        detail = f" (P(yes)={verdict.p_yes:.3f})"
    elif verdict is not None and verdict.error:
        detail = f" ({verdict.error})"
    if verdict is not None and (verdict.profile != "ecso" or verdict.categories):
        detail += f" [{verdict.profile}{': ' + ', '.join(verdict.categories) if verdict.categories else ''}]"
    return f"[ecso] decision: {result.decision}{detail} · {len(result.steps)} model calls · {seconds:.2f} s"


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ecso")


if __name__ == "__main__":  # pragma: no cover
    main()
