"""The ``ecso`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import ECSOConfig
from .errors import ECSOError, InputError
from .guard import ECSO
from .images import prepare_request
from .result import ECSOResult
from .types import ChatRequest, GenerationParams, ImagePart, Message, TextPart

DEFAULT_MODEL = "hf:llava-hf/llava-interleave-qwen-0.5b-hf"
"""A small real VLM (LLaVA architecture, Qwen 0.5B language model) for ``ecso ask`` without --model."""

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
    model: Annotated[str, typer.Option(help="Model spec: tiny-random, hf:<id or folder>.")] = DEFAULT_MODEL,
    image: Annotated[Optional[list[Path]], typer.Option(help="Image file; repeat for several.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the whole ECSOResult as JSON.")] = False,
    system: Annotated[Optional[str], typer.Option(help="A system message.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most new tokens per model call.")] = 1024,
    device: Annotated[str, typer.Option(help="Torch device for hf models (auto, cpu, cuda, ...).")] = "auto",
    allow_image_urls: Annotated[bool, typer.Option(help="Allow http(s) image URLs.")] = False,
) -> None:
    """Answer QUERY about the image(s) with the ECSO guard in front of the model."""
    from .backends import load_backend

    if model.startswith("tiny-random"):
        typer.echo("note: tiny-random has random weights; its answers are noise (it tests plumbing only).", err=True)
    messages = [Message(role="system", content=system)] if system else []
    parts = [ImagePart(image=path) for path in image or []]
    messages.append(Message(role="user", content=(*parts, TextPart(text=query))))
    params = GenerationParams(max_new_tokens=max_new_tokens)
    request = ChatRequest(messages=tuple(messages), params=params)
    config = ECSOConfig(allow_image_urls=allow_image_urls, caption_params=params)
    try:
        request = prepare_request(request, config.image_limits, config.allow_image_urls)  # fail before loading
        backend = load_backend(model, device=device)
        start = time.perf_counter()
        result = ECSO(backend, config).run(request)
    except ECSOError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2 if isinstance(exc, InputError) else 1) from None
    if json_output:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(result.answer)
    typer.echo(_status_line(result, time.perf_counter() - start), err=True)


def _status_line(result: ECSOResult, seconds: float) -> str:
    verdict = result.verdict
    detail = ""
    if verdict is not None and verdict.p_yes is not None:
        detail = f" (P(yes)={verdict.p_yes:.3f})"
    elif verdict is not None and verdict.error:
        detail = f" ({verdict.error})"
    return f"[ecso] decision: {result.decision}{detail} · {len(result.steps)} model calls · {seconds:.2f} s"


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ecso")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
