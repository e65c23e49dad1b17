"""Attacks on the evaluation harness (``ecso eval``): third-party benchmark files, untrusted model answers and
category names, odd flags, resume after crashes, and the report's statistics on edge cases.

Benchmark releases are downloaded from third parties and model answers are untrusted, so every loader, the
runner, the judges and the report must treat them as data: a typed :class:`~ecso_core.errors.ECSOError` for bad
input (never a raw traceback or a hang), no image field that reads outside its data folder or opens a URL as a
path, and a report whose tables and plots survive whatever text the data holds. Small synthetic fixtures only,
scripted models, offline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from ecso_core import BackendError, ConfigError, ECSOError, ScriptedBackend, by_step
from ecso_core import cli as cli_module
from ecso_core.eval import load_cases, write_report

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
REFUSAL = "I'm sorry, I can't help with that."
HARMFUL = "Sure. Step 1: do it."


# ---- helpers ------------------------------------------------------------------------------------------------


def font() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def picture(path: Path, color: str = "gray") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def guard_script(answer: Any = HARMFUL, check: Any = "Yes") -> Any:
    return by_step(answer=answer, check=check, caption="a picture", eyes_closed=REFUSAL)


def models(monkeypatch: pytest.MonkeyPatch, **backends: ScriptedBackend) -> dict[str, ScriptedBackend]:
    """``ecso eval`` loads every model spec from ``backends`` (spec = keyword name); any other spec: KeyError."""
    monkeypatch.setattr(cli_module, "_load_model", lambda spec, device: backends[spec])
    return backends


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli_module.app, ["eval", "--model", "m", *args])


def assert_clean_error(result: Any) -> None:
    """The command stopped with a message and an exit code, not a raw traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"raw crash: {result.exception!r}"
    assert "error" in result.stderr.lower(), result.stderr


def records_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").split("\n") if line]


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def judged(unsafe: bool | None) -> dict[str, Any]:
    label = "unparsed" if unsafe is None else ("unsafe" if unsafe else "safe")
    return {"label": label, "unsafe": unsafe, "refused": None, "score": None}


def record(
    scenario: str = "all", unsafe: bool | None = True, *, kind: str = "attack", label: Any = None, verdict: Any = None
) -> dict[str, Any]:
    """A record as the runner writes it (attack: ``baseline``/``ecso`` judged unsafe or not)."""
    refusal = {"label": "refusal", "unsafe": None, "refused": bool(unsafe), "score": None}
    return {
        "id": f"case-{id(object())}",
        "kind": kind,
        "scenario": scenario,
        "image_kind": "photo",
        "meta": {} if label is None else {"label": label},
        "error": None,
        "decision": "safe",
        "verdict": verdict,
        "baseline": judged(unsafe) if kind == "attack" else refusal,
        "ecso": judged(unsafe) if kind == "attack" else refusal,
    }


def report_of(tmp_path: Path, records: list[dict[str, Any]], **meta: Any) -> tuple[str, str, dict[str, Any]]:
    out = tmp_path / "report"
    out.mkdir(exist_ok=True)
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    summary = write_report(out, {"benchmark": "jsonl", "model": "m", "judge": "keyword", **meta})
    return (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8"), summary


# ---- loaders: malformed third-party files -------------------------------------------------------------------

JSONL_ATTACKS: dict[str, bytes] = {
    "torn JSON line": b'{"query": "q"\n',
    "UTF-8 BOM": '\ufeff{"query": "q"}\n'.encode(),
    "a JSON array, not an object": b"[1, 2]\n",
    "no query": b'{"image": "a.png"}\n',
    "query is a number": b'{"query": 5}\n',
    "query is an object": b'{"query": {"text": "q"}}\n',
    "unknown kind": b'{"query": "q", "kind": "evil"}\n',
    "meta is a list": b'{"query": "q", "meta": [1]}\n',
    "image is a number": b'{"query": "q", "image": 5}\n',
    "image is an object": b'{"query": "q", "image": {"path": "a.png"}}\n',
    "invalid UTF-8": b'{"query": "\xff"}\n',
}


@pytest.mark.parametrize("content", JSONL_ATTACKS.values(), ids=JSONL_ATTACKS.keys())
def test_malformed_jsonl_lines_are_typed_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_bytes(content)
    with pytest.raises(ECSOError):
        load_cases(f"jsonl:{path}")


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_jsonl_benchmark_that_is_not_a_file_is_a_typed_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nope.jsonl" if where == "missing" else tmp_path
    with pytest.raises(ECSOError):
        load_cases(f"jsonl:{path}")


def test_an_empty_jsonl_benchmark_has_no_cases(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n  \n")
    assert load_cases(f"jsonl:{path}") == []


def _mossbench(data: Path, info: Any) -> str:
    folder = data / "mossbench"
    picture(folder / "images" / "1.png")
    (folder / "images_information").mkdir(parents=True, exist_ok=True)
    text = info if isinstance(info, str) else json.dumps(info)
    (folder / "images_information" / "information.json").write_text(text, encoding="utf-8")
    return "mossbench"


def _vlsafe(data: Path, text: str) -> str:
    picture(data / "vlsafe" / "images" / "x.jpg")
    (data / "vlsafe" / "harmlessness_examine.jsonl").write_text(text, encoding="utf-8")
    return "vlsafe"


def _mm_vet(data: Path, text: str) -> str:
    picture(data / "mm-vet" / "images" / "v1.png")
    (data / "mm-vet" / "mm-vet.json").write_text(text, encoding="utf-8")
    return "mm-vet"


def _mmsb(data: Path, text: str, tiny: bool = False) -> str:
    folder = data / "mm-safetybench" / "processed_questions"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "01-Illegal_Activitiy.json").write_text(text, encoding="utf-8")
    if tiny:
        tiny_list = [{"Scenario": "01-Illegal_Activitiy", "Sampled_ID_List": [0]}]
        (data / "mm-safetybench" / "TinyVersion_ID_List.json").write_text(json.dumps(tiny_list))
        return "mm-safetybench-tiny"
    return "mm-safetybench"


def _csv(data: Path, relative: str, text: str, name: str) -> str:
    (data / relative).parent.mkdir(parents=True, exist_ok=True)
    (data / relative).write_text(text, encoding="utf-8")
    return name


MMSB_ITEM = {"Question": "q", "Key Phrase": "kp", "Rephrased Question": "rq", "Rephrased Question(SD)": "rsd"}
BROKEN_RELEASES: dict[str, Callable[[Path], str]] = {
    "mossbench: information.json is a list": lambda d: _mossbench(d, [1, 2]),
    "mossbench: information.json is not JSON": lambda d: _mossbench(d, "{bad"),
    "mossbench: information.json is empty": lambda d: _mossbench(d, ""),
    "mossbench: metadata is a string": lambda d: _mossbench(
        d, {"1": {"image": "images/1.png", "question": "q", "metadata": "type 1"}}
    ),
    "mossbench: image is a number": lambda d: _mossbench(d, {"1": {"image": 1, "question": "q"}}),
    "mossbench: no question": lambda d: _mossbench(d, {"1": {"image": "images/1.png"}}),
    "vlsafe: no image_id": lambda d: _vlsafe(d, '{"query": "q"}\n'),
    "vlsafe: image_id is a number": lambda d: _vlsafe(d, '{"image_id": 5, "query": "q"}\n'),
    "vlsafe: torn line": lambda d: _vlsafe(d, '{"image_id": "x.jpg", "query": "q"}\n{"image_id": "x.j'),
    "mm-vet: empty file": lambda d: _mm_vet(d, ""),
    "mm-vet: capability holds numbers": lambda d: _mm_vet(
        d, json.dumps({"v1": {"imagename": "v1.png", "question": "q", "answer": "a", "capability": [1]}})
    ),
    "mm-safetybench: no Rephrased Question": lambda d: _mmsb(
        d, json.dumps({"0": {"Question": "q", "Key Phrase": "k"}})
    ),
    "mm-safetybench: questions file is a list": lambda d: _mmsb(d, "[]"),
    "mm-safetybench-tiny: non-numeric key": lambda d: _mmsb(d, json.dumps({"a": MMSB_ITEM}), tiny=True),
    "xstest: no type column": lambda d: _csv(d, "xstest/xstest_prompts.csv", "id,prompt\n1,hi\n", "xstest"),
    "figstep: no instruction column": lambda d: _csv(
        d,
        "figstep/question/safebench.csv",
        "dataset,category_id,task_id,category_name,question\nX,1,1,c,q\n",
        "figstep",
    ),
}


@pytest.mark.parametrize("make", BROKEN_RELEASES.values(), ids=BROKEN_RELEASES.keys())
def test_broken_benchmark_releases_are_config_errors(tmp_path: Path, make: Callable[[Path], str]) -> None:
    data = tmp_path / "data"
    benchmark = make(data)
    with pytest.raises(ECSOError):
        load_cases(benchmark, data)


def test_mm_vet_capability_given_as_a_string_is_not_spelled_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _mm_vet(data, json.dumps({"v1": {"imagename": "v1.png", "question": "q", "answer": "a", "capability": "ocr"}}))
    try:
        cases = load_cases("mm-vet", data)
    except ECSOError:
        return
    assert cases[0].scenario == "ocr"  # not "o+c+r"


# ---- loaders: image fields that escape the data folder or hold URLs ---------------------------------------------


def _escaping(benchmark: str, data: Path, target: str) -> Path:
    """A release of ``benchmark`` whose one image field is ``target``; returns the folder images must stay in."""
    if benchmark == "mossbench":
        _mossbench(data, {"1": {"image": target, "question": "q", "metadata": {"over": "type 1"}}})
        return data / "mossbench"
    if benchmark == "vlsafe":
        _vlsafe(data, json.dumps({"image_id": target, "query": "q"}) + "\n")
        return data / "vlsafe" / "images"
    _mm_vet(data, json.dumps({"v1": {"imagename": target, "question": "q", "answer": "a", "capability": ["rec"]}}))
    return data / "mm-vet" / "images"


@pytest.mark.parametrize("style", ["relative ../", "absolute"])
@pytest.mark.parametrize("release", ["mossbench", "vlsafe", "mm-vet"])
def test_benchmark_image_fields_cannot_escape_the_data_folder(tmp_path: Path, release: str, style: str) -> None:
    """A downloaded release must not make ecso read (and send to a possibly remote model) a file outside it."""
    outside = picture(tmp_path / "private" / "holiday.png")
    data = tmp_path / "data"
    depth = {"mossbench": 2, "vlsafe": 3, "mm-vet": 3}[release]
    target = "../" * depth + "private/holiday.png" if style == "relative ../" else str(outside)
    folder = _escaping(release, data, target)
    try:
        cases = load_cases(release, data)
    except ConfigError:
        return
    for case in cases:
        assert Path(case.image).resolve().is_relative_to(folder.resolve()), f"{case.id} reads {case.image}"


def test_a_url_in_a_release_image_field_is_refused_with_a_config_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _mossbench(data, {"1": {"image": "http://example.com/x.png", "question": "q"}})
    with pytest.raises(ConfigError):
        load_cases("mossbench", data)


@pytest.mark.parametrize("url", ["http://example.com/a.png", "https://example.com/a.png", "file:///etc/passwd"])
def test_a_url_in_a_jsonl_image_field_is_never_read_as_a_path(tmp_path: Path, url: str) -> None:
    path = write_jsonl(tmp_path / "cases.jsonl", [{"image": url, "query": "q"}])
    try:
        cases = load_cases(f"jsonl:{path}")
    except ECSOError:
        return
    assert not isinstance(cases[0].image, Path), f"the URL became the path {cases[0].image}"


def test_a_nul_byte_in_an_image_field_is_an_image_error(
    tmp_path: Path, images_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "cases" / "nul.jsonl", [{"image": "a\x00.png", "query": "q"}])
    models(monkeypatch, m=ScriptedBackend(guard_script()))
    try:
        load_cases(f"jsonl:{path}")
    except ECSOError:
        return
    result = run_cli("--benchmark", f"jsonl:{path}", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    (only,) = records_of(tmp_path / "run")
    assert only["error"].startswith("ImageError"), only["error"]


def test_a_symlinked_image_that_is_not_an_image_fails_its_case_without_leaking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN-0xdeadbeef\n")
    data = tmp_path / "data"
    _mossbench(data, {"1": {"image": "images/1.png", "question": "q", "metadata": {"over": "type 1"}}})
    (data / "mossbench" / "images" / "1.png").unlink()
    (data / "mossbench" / "images" / "1.png").symlink_to(secret)
    backend = models(monkeypatch, m=ScriptedBackend(guard_script()))["m"]
    out = tmp_path / "run"
    result = run_cli("--benchmark", "mossbench", "--judge", "keyword", "--data-dir", str(data), "--out", str(out))
    assert result.exit_code == 0, result.output
    (only,) = records_of(out)
    assert only["error"].startswith("ImageError")
    assert backend.requests == []  # nothing reached the model
    for name in ("records.jsonl", "summary.json", "report.md", "report.html"):
        assert "TOP-SECRET" not in (out / name).read_text(encoding="utf-8")


# ---- loaders: duplicated ids (resume is keyed on them) ----------------------------------------------------------

DUPLICATES: dict[str, Callable[[Path], tuple[str, Path | None]]] = {
    "jsonl: the same id twice": lambda d: (
        "jsonl:" + str(write_jsonl(d / "c.jsonl", [{"id": "x", "query": "q1"}, {"id": "x", "query": "q2"}])),
        None,
    ),
    "jsonl: an id equal to another line's default id": lambda d: (
        "jsonl:" + str(write_jsonl(d / "c.jsonl", [{"query": "q0"}, {"id": "jsonl-0", "query": "q1"}])),
        None,
    ),
    "xstest: the same id twice": lambda d: (
        _csv(d, "xstest/xstest_prompts.csv", "id,prompt,type,label\n1,hi,t,safe\n1,ho,t,safe\n", "xstest"),
        d,
    ),
    "mossbench: two entries with one pid": lambda d: (
        _mossbench(
            d,
            {
                "1": {"image": "images/1.png", "question": "q1"},
                "2": {"pid": 1, "image": "images/1.png", "question": "q2"},
            },
        ),
        d,
    ),
}


@pytest.mark.parametrize("make", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_duplicated_case_ids_are_refused_or_made_unique(
    tmp_path: Path, make: Callable[[Path], tuple[str, Path | None]]
) -> None:
    """Resume skips cases by id: two different cases under one id would let one stand in for the other."""
    benchmark, root = make(tmp_path / "data")
    try:
        cases = load_cases(benchmark, root)
    except ConfigError:
        return
    ids = [case.id for case in cases]
    assert len(set(ids)) == len(ids), ids


# ---- resume -----------------------------------------------------------------------------------------------------


def test_resume_after_a_torn_line_redoes_only_that_case(
    tmp_path: Path, images_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    models(monkeypatch, m=ScriptedBackend(guard_script()))
    assert run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out)).exit_code == 0
    text = (out / "records.jsonl").read_bytes()
    (out / "records.jsonl").write_bytes(text[:-40])  # the crash tore the last record
    again = models(monkeypatch, m=ScriptedBackend(guard_script()))["m"]
    result = run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {r.messages[0].text for r in again.requests if r.messages[0].text in ("q0", "q1", "q2")} == {"q2"}
    lines = (out / "records.jsonl").read_text().splitlines()
    complete = [json.loads(line) for line in lines if line.endswith("}")]
    assert sorted(r["query"] for r in complete) == ["q0", "q1", "q2"]
    assert (summary_of(out)["cases"], summary_of(out)["errors"]) == (3, 0)


def test_resume_does_not_skip_a_new_case_that_took_an_old_positional_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSONL ids default to the line number: a line inserted above shifts every id onto another case."""
    picture(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "cases.jsonl", [{"image": "a.png", "query": q} for q in ("q0", "q1")])
    out = tmp_path / "run"
    models(monkeypatch, m=ScriptedBackend(guard_script()))
    assert run_cli("--benchmark", f"jsonl:{path}", "--out", str(out)).exit_code == 0
    write_jsonl(path, [{"image": "a.png", "query": q} for q in ("new question", "q0", "q1")])
    result = run_cli("--benchmark", f"jsonl:{path}", "--out", str(out))
    if result.exit_code != 0:  # refusing to resume an edited benchmark is fine, said clearly
        assert_clean_error(result)
        return
    assert "new question" in {r["query"] for r in records_of(out)}
    assert summary_of(out)["cases"] == 3


def test_resume_into_the_folder_of_another_benchmark_is_refused_or_kept_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture(tmp_path / "a.png")
    first = write_jsonl(tmp_path / "first.jsonl", [{"image": "a.png", "query": "first benchmark"}])
    second = write_jsonl(tmp_path / "second.jsonl", [{"image": "a.png", "query": f"second {i}"} for i in range(2)])
    out = tmp_path / "run"
    models(monkeypatch, m=ScriptedBackend(guard_script()))
    assert run_cli("--benchmark", f"jsonl:{first}", "--out", str(out)).exit_code == 0
    result = run_cli("--benchmark", f"jsonl:{second}", "--out", str(out))
    if result.exit_code != 0:
        assert_clean_error(result)
        return
    assert {"second 0", "second 1"} <= {r["query"] for r in records_of(out)}
    assert summary_of(out)["cases"] == 2  # the summary of the second benchmark holds its own two cases only


def test_resume_retries_the_cases_that_failed(
    tmp_path: Path, images_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient backend failure (timeout, 503) in a long run must not become a permanent hole in the results."""

    def flaky(request: Any) -> Any:
        return BackendError("503 from the server") if request.messages[-1].text == "q2" else HARMFUL

    out = tmp_path / "run"
    models(monkeypatch, m=ScriptedBackend(guard_script(answer=flaky)))
    result = run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert summary_of(out)["errors"] == 1
    models(monkeypatch, m=ScriptedBackend(guard_script()))
    result = run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert (summary_of(out)["cases"], summary_of(out)["errors"]) == (3, 0)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_in_a_model_answer_does_not_drop_its_record(
    tmp_path: Path, images_jsonl: Path, monkeypatch: pytest.MonkeyPatch, separator: str
) -> None:
    """Model answers are untrusted: one with U+2028 must still count (and must not be redone on every resume)."""

    def answer(request: Any) -> str:
        return f"Sure.{separator}Step 1: do it." if request.messages[-1].text == "q1" else HARMFUL

    out = tmp_path / "run"
    models(monkeypatch, m=ScriptedBackend(guard_script(answer=answer, check="No")))
    assert run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out)).exit_code == 0
    summary = summary_of(out)
    assert summary["cases"] == 3
    assert summary["tables"][0]["rows"][-1]["n"] == 3
    rerun = models(monkeypatch, m=ScriptedBackend(guard_script(answer=answer, check="No")))["m"]
    assert run_cli("--benchmark", f"jsonl:{images_jsonl}", "--out", str(out)).exit_code == 0
    assert rerun.requests == []  # nothing to redo
