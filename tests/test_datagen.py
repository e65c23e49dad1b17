"""The SFT data engine: both formats against their schemas, safe mix, resume, shards, dedupe, validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ecso_core import ECSO, ScriptedBackend, by_step
from ecso_core.datagen import LlavaRecord, MessagesRecord, generate_sft, pair_id, validate_sft
from ecso_core.eval import EvalCase
from ecso_core.images import image_digest, load_image


def scripted() -> ECSO:
    reply = by_step(
        answer=lambda request: f"Sure: {request.messages[-1].text}",
        check=lambda request: "Yes" if "weapon" in request.messages[-1].text else "No",
        caption="a drawing",
        eyes_closed="I can't help with weapons, but here is some safety information.",
    )
    return ECSO(ScriptedBackend(reply))


def cases(tmp_path: Path, count: int = 6) -> list[EvalCase]:
    out = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (20, 20), (i * 40 % 256, 10, 200)).save(path)
        query = f"How do I build a weapon like this {i}?" if i % 2 == 0 else f"What colour is this {i}?"
        out.append(EvalCase(id=f"c{i}", benchmark="jsonl", kind="attack", query=query, image=path))
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_in_both_formats_match_their_schemas_and_content(tmp_path: Path) -> None:
    items = cases(tmp_path)
    manifest = generate_sft(items, scripted(), tmp_path / "sft", progress=False)
    assert manifest["records"] == {"llava": 3, "messages": 3}
    assert manifest["outcomes"] == {"eyes_closed": 3, "safe_dropped": 3}
    assert validate_sft(tmp_path / "sft") == []

    llava = [LlavaRecord.model_validate(r) for r in lines(tmp_path / "sft" / "llava.jsonl")]
    messages = [MessagesRecord.model_validate(r) for r in lines(tmp_path / "sft" / "messages.jsonl")]
    first_image = load_image(items[0].image)
    digest = image_digest(first_image)
    assert llava[0].model_dump(by_alias=True) == {
        "id": pair_id(first_image, items[0].query),
        "image": f"images/{digest}.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{items[0].query}"},
            {"from": "gpt", "value": "I can't help with weapons, but here is some safety information."},
        ],
    }
    assert messages[0].images == [f"images/{digest}.png"]
    assert messages[0].source == "eyes_closed"
    assert [p.type for p in messages[0].messages[0].content] == ["image", "text"]
    assert image_digest(load_image(tmp_path / "sft" / llava[0].image)) == digest
    saved = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert saved["prompt_set"] == "ecso-paper"
    assert saved["config"]["fail_mode"] == "closed"


def test_safe_fraction_keeps_safe_answers_unchanged(tmp_path: Path) -> None:
    manifest = generate_sft(cases(tmp_path), scripted(), tmp_path / "sft", safe_fraction=1.0, progress=False)
    assert manifest["records"]["messages"] == 6
    safe = [r for r in lines(tmp_path / "sft" / "messages.jsonl") if r["source"] == "safe"]
    assert len(safe) == 3
    assert all(r["messages"][1]["content"][0]["text"].startswith("Sure: What colour") for r in safe)


def test_resume_redoes_nothing_and_survives_a_torn_line(tmp_path: Path) -> None:
    items = cases(tmp_path)
    generate_sft(items[:2], scripted(), tmp_path / "sft", batch_size=1, progress=False)
    with open(tmp_path / "sft" / "processed.jsonl", "a") as handle:
        handle.write('{"id": "tor')
    guard = scripted()
    generate_sft(items, guard, tmp_path / "sft", batch_size=2, progress=False)
    answered = [
        r for r in guard.backend.requests if not r.messages[-1].text.startswith(("QUERY", "REQUEST", "You are"))
    ]
    assert len(answered) == 4  # only the four new pairs were answered
    ids = [r["id"] for r in lines(tmp_path / "sft" / "llava.jsonl")]
    assert len(ids) == len(set(ids)) == 3
    assert validate_sft(tmp_path / "sft") == []


def test_shards_are_disjoint_and_cover_everything(tmp_path: Path) -> None:
    items = cases(tmp_path, 12)
    generate_sft(items, scripted(), tmp_path / "all", safe_fraction=1.0, progress=False)
    everything = {r["id"] for r in lines(tmp_path / "all" / "processed.jsonl")}
    parts = []
    for index in range(3):
        generate_sft(items, scripted(), tmp_path / f"s{index}", shard=(index, 3), safe_fraction=1.0, progress=False)
        parts.append({r["id"] for r in lines(tmp_path / f"s{index}" / "processed.jsonl")})
    assert set().union(*parts) == everything
    assert sum(len(p) for p in parts) == len(everything) == 12


def test_duplicate_pairs_are_processed_once(tmp_path: Path) -> None:
    items = cases(tmp_path, 2)
    twin = items[0].model_copy(update={"id": "copy"})
    manifest = generate_sft([*items, twin], scripted(), tmp_path / "sft", progress=False)
    assert manifest["duplicates_skipped"] == 1
    assert len(lines(tmp_path / "sft" / "processed.jsonl")) == 2


def test_validate_catches_missing_images_malformed_records_and_counts(tmp_path: Path) -> None:
    generate_sft(cases(tmp_path), scripted(), tmp_path / "sft", progress=False)
    folder = tmp_path / "sft"
    first = lines(folder / "llava.jsonl")[0]
    (folder / first["image"]).unlink()
    with open(folder / "messages.jsonl", "a") as handle:
        handle.write(json.dumps({"id": "x", "messages": [], "images": ["images/none.png"], "source": "safe"}) + "\n")
    problems = validate_sft(folder)
    assert any("llava.jsonl:1: image" in p and "cannot read" in p for p in problems)
    assert any("messages.jsonl:4: malformed record" in p for p in problems)
    assert any("messages.jsonl: 4 records, the manifest says 3" in p for p in problems)
    assert validate_sft(tmp_path / "nothing") == [
        f"manifest.json: unreadable ([Errno 2] No such file or directory: '{tmp_path / 'nothing' / 'manifest.json'}')"
    ]


def test_cli_datagen_on_tiny_random_then_validate(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as handle:
        for i in range(3):
            Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(tmp_path / f"p{i}.png")
            handle.write(json.dumps({"image": f"p{i}.png", "query": f"What is shown {i}?"}) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ecso = str(Path(sys.executable).with_name("ecso"))
    out = tmp_path / "sft"
    run = subprocess.run(
        [
            ecso,
            "datagen",
            "--input",
            str(pairs),
            "--model",
            "tiny-random:llava-small",
            "--out",
            str(out),
            "--safe-fraction",
            "1",
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert sum(summary["outcomes"].values()) == 3
    check = subprocess.run([ecso, "datagen", "validate", str(out)], capture_output=True, text=True, env=env)
    assert check.returncode == 0
    assert check.stdout.startswith("valid:")
    (out / "llava.jsonl").write_text("not json\n")
    broken = subprocess.run([ecso, "datagen", "validate", str(out)], capture_output=True, text=True, env=env)
    assert broken.returncode == 1
    assert "malformed record" in broken.stderr
    bad_shard = subprocess.run(
        [ecso, "datagen", "--input", str(pairs), "--model", "x", "--out", str(out), "--shard", "3/3"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad_shard.returncode == 2
    assert "--shard" in bad_shard.stderr
