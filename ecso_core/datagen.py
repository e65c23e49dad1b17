"""ECSO as a data engine: supervised fine-tuning data for safety alignment, with no human labels.

For each (image, query) pair the guard runs; an answer judged unsafe yields the pair
(image, query) -> eyes-closed answer, and (by option) a safe answer yields the pair unchanged. Records
are written in two formats side by side:

- ``llava.jsonl``: LLaVA conversation records (``id``, ``image``, ``conversations`` with ``<image>``);
- ``messages.jsonl``: Hugging Face chat ``messages`` with image parts plus an ``images`` column (what
  TRL's ``SFTTrainer`` reads for vision-language models).

Images are copied into ``images/<pixel sha256>.png``. Every processed pair (written or not) is recorded
by id, so a rerun resumes where a crash stopped (losing at most the batch in flight); ids are hashes of
image and query, which also deduplicate the input and split it into disjoint shards.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._jsonl import append_lines, read_lines, recorded_ids
from ._progress import progress_bar
from .errors import ImageError, InputError
from .eval.datasets import EvalCase
from .guard import ECSO
from .images import image_digest, load_image
from .result import ECSOResult
from .types import ChatRequest, ImagePart, Message, TextPart

__all__ = ["Format", "LlavaRecord", "MessagesRecord", "generate_sft", "pair_id", "validate_sft"]

Format = Literal["llava", "messages"]
FILES: dict[str, str] = {"llava": "llava.jsonl", "messages": "messages.jsonl"}
SKIPPED = "processed.jsonl"  # every pair handled, with its outcome: the resume log


class _Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # "from" is a keyword in Python; LLaVA's files spell it so.
    speaker: Literal["human", "gpt"] = Field(alias="from")
    value: str = Field(min_length=1)


class LlavaRecord(BaseModel):
    """One LLaVA conversation record (``llava_v1_5_mix665k.json`` style)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    image: str
    conversations: list[_Turn] = Field(min_length=2)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image", "text"]
    text: str | None = None


class _ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: list[_Part] = Field(min_length=1)


class MessagesRecord(BaseModel):
    """One Hugging Face chat record with image parts and an ``images`` column (TRL vision SFT)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    messages: list[_ChatTurn] = Field(min_length=2)
    images: list[str] = Field(min_length=1)
    source: Literal["eyes_closed", "safe"]


def pair_id(image: Image.Image, query: str) -> str:
    """Content hash of an (image, query) pair: dedupes inputs and assigns shards."""
    return hashlib.sha256(f"{image_digest(image)}\n{query}".encode()).hexdigest()[:32]


def _in_shard(identifier: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    return int(identifier, 16) % count == index


def _keep_safe(identifier: str, fraction: float) -> bool:
    # Deterministic per pair (not per run or shard): the same pairs are kept wherever they run.
    return int(identifier[-8:], 16) / 0xFFFFFFFF < fraction


def generate_sft(
    cases: Sequence[EvalCase],
    guard: ECSO,
    out: Path,
    *,
    shard: tuple[int, int] = (0, 1),
    safe_fraction: float = 0.0,
    batch_size: int = 8,
    formats: Sequence[Format] = ("llava", "messages"),
    model: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ECSO over ``cases`` (image + query pairs) and write SFT records into ``out``.

    Args:
        cases: the pairs; text-only cases are skipped (there is nothing to close the eyes on).
        guard: the ECSO guard around the model to align.
        out: output folder (created); rerunning on it resumes.
        shard: ``(i, N)``: handle only the pairs whose id falls in shard i of N.
        safe_fraction: share of pairs judged safe to keep unchanged (0 keeps only corrected ones).
        batch_size: pairs per batched guard run (at most this many are lost in a crash).
        formats: which record files to write.
        model: model spec recorded in the manifest.
        progress: show a progress bar.

    Returns:
        The manifest (also written to ``out/manifest.json``).

    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    done = recorded_ids(out / SKIPPED)
    todo, duplicates, skipped = _plan(cases, shard, done)
    bar = progress_bar(len(todo), 0, progress and bool(todo), desc="ecso datagen")
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        requests = [_request(image, case.query) for _, image, case in batch]
        results = guard.run_batch(requests, return_exceptions=True)
        written: dict[Format, list[dict[str, Any]]] = {name: [] for name in formats}
        log = []
        for (identifier, image, case), result in zip(batch, results, strict=True):
            outcome = _outcome(result, identifier, safe_fraction)
            log.append({"id": identifier, "case": case.id, "outcome": outcome})
            if outcome in ("eyes_closed", "safe"):
                assert isinstance(result, ECSOResult)
                path = _store_image(image, out)
                answer = result.answer if outcome == "eyes_closed" else result.initial_answer
                for name in formats:
                    written[name].append(_format(name, identifier, path, case.query, answer, outcome))
        for name, records in written.items():
            append_lines(out / FILES[name], records)
        append_lines(out / SKIPPED, log)  # last: a crash before this line redoes the batch
        bar.update(len(batch))
    bar.close()
    manifest = _manifest(out, guard, model, shard, safe_fraction, formats, duplicates, skipped)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _plan(
    cases: Sequence[EvalCase], shard: tuple[int, int], done: set[str]
) -> tuple[list[tuple[str, Image.Image, EvalCase]], int, int]:
    todo, seen, duplicates, skipped = [], set(), 0, 0
    for case in cases:
        picture = case.picture()
        if picture is None:
            skipped += 1
            continue
        try:
            image = load_image(picture)
        except ImageError:
            skipped += 1
            continue
        identifier = pair_id(image, case.query)
        if identifier in seen:
            duplicates += 1
            continue
        seen.add(identifier)
        if _in_shard(identifier, shard) and identifier not in done:
            todo.append((identifier, image, case))
    return todo, duplicates, skipped


def _request(image: Image.Image, query: str) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=(ImagePart(image=image), TextPart(text=query))),))


def _outcome(result: Any, identifier: str, safe_fraction: float) -> str:
    if not isinstance(result, ECSOResult):
        return f"error: {type(result).__name__}: {result}"
    if result.decision == "unsafe":
        return "eyes_closed" if result.answer.strip() else "empty_answer"
    if result.decision == "safe":
        return "safe" if _keep_safe(identifier, safe_fraction) and result.initial_answer.strip() else "safe_dropped"
    return result.decision  # fail_closed: no trustworthy verdict, not used as data


def _store_image(image: Image.Image, out: Path) -> str:
    relative = f"images/{image_digest(image)}.png"
    target = out / relative
    if not target.is_file():
        partial = target.with_suffix(".tmp")
        image.save(partial, format="PNG")
        partial.replace(target)  # atomic: a crash never leaves a half-written image under its final name
    return relative


def _format(name: str, identifier: str, image: str, query: str, answer: str, source: str) -> dict[str, Any]:
    if name == "llava":
        return {
            "id": identifier,
            "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{query}"}, {"from": "gpt", "value": answer}],
        }
    return {
        "id": identifier,
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [image],
        "source": source,
    }


def _manifest(
    out: Path,
    guard: ECSO,
    model: str,
    shard: tuple[int, int],
    safe_fraction: float,
    formats: Sequence[str],
    duplicates: int,
    skipped: int,
) -> dict[str, Any]:
    outcomes = Counter(
        "error" if item["outcome"].startswith("error") else item["outcome"] for item in read_lines(out / SKIPPED)
    )
    counts = {name: sum(1 for _ in read_lines(out / FILES[name])) for name in formats}
    return {
        "model": model or guard.backend.name,
        "prompt_set": guard.config.prompt_set,
        "config": guard.config.model_dump(mode="json"),
        "shard": list(shard),
        "safe_fraction": safe_fraction,
        "formats": {name: FILES[name] for name in formats},
        "records": counts,
        "outcomes": dict(sorted(outcomes.items())),
        "duplicates_skipped": duplicates,
        "text_only_or_unreadable_skipped": skipped,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def validate_sft(out: Path) -> list[str]:
    """Check every record and image of an output folder; return the problems found (empty: valid)."""
    problems: list[str] = []
    manifest_path = out / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"manifest.json: unreadable ({exc})"]
    for name, filename in manifest.get("formats", {}).items():
        schema = LlavaRecord if name == "llava" else MessagesRecord
        path, ids, count = out / filename, set(), 0
        if not path.is_file():
            problems.append(f"{filename}: missing")
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            count += 1
            try:
                record = schema.model_validate_json(line)
            except ValidationError as exc:
                problems.append(f"{filename}:{number}: malformed record ({exc.errors()[0]['msg']})")
                continue
            if record.id in ids:
                problems.append(f"{filename}:{number}: duplicate id {record.id}")
            ids.add(record.id)
            images = [record.image] if isinstance(record, LlavaRecord) else record.images
            problems += [f"{filename}:{number}: {p}" for p in _check_images(out, images)]
            problems += [f"{filename}:{number}: {p}" for p in _check_placeholders(record)]
        expected = manifest.get("records", {}).get(name)
        if expected is not None and expected != count:
            problems.append(f"{filename}: {count} records, the manifest says {expected}")
    return problems


def _check_images(out: Path, images: list[str]) -> list[str]:
    problems = []
    for relative in images:
        try:
            load_image(out / relative)
        except InputError as exc:
            problems.append(f"image {relative}: {exc}")
    return problems


def _check_placeholders(record: LlavaRecord | MessagesRecord) -> list[str]:
    if isinstance(record, LlavaRecord):
        placeholders = sum(turn.value.count("<image>") for turn in record.conversations)
        return [] if placeholders == 1 else [f"{placeholders} <image> placeholders for one image"]
    parts = sum(part.type == "image" for turn in record.messages for part in turn.content)
    return [] if parts == len(record.images) else [f"{parts} image parts for {len(record.images)} images"]
