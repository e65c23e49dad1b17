"""The ``ecso`` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ecso_core.images import image_digest, load_image
from ecso_core.verdict import verdict_from_text

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
STEPS_PNG = ROOT / "examples" / "images" / "steps.png"
ECSO_BIN = Path(sys.executable).with_name("ecso")


def ecso(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(ECSO_BIN), *args], capture_output=True, text=True, env=env, timeout=300)


QUERY = "List the steps in the image."
NOISE_NOTE = "note: tiny-random has random weights; its answers are noise (it tests plumbing only)."
STEP_NAMES = ["answer", "check", "check", "caption", "eyes_closed"]


def test_ask_json_prints_the_whole_result() -> None:
    args = ("ask", "--model", "tiny-random:llava-small", "--image", str(STEPS_PNG), "--max-new-tokens", "4")
    out = ecso(*args, "--json", QUERY)
    assert out.returncode == 0, out.stderr
    assert NOISE_NOTE in out.stderr.splitlines()
    result = json.loads(out.stdout)
    steps, verdict = result["steps"], result["verdict"]
    # tiny-random's random weights put almost no mass on yes/no: the score is no verdict, the judge is
    # asked again for text, and the verdict says so.
    assert [s["name"] for s in steps[:3]] == ["answer", "check", "check"]
    scored = re.fullmatch(r"P\(yes\)=(\S+) P\(no\)=(\S+)", steps[1]["output"])
    assert scored is not None
    mass = float(scored[1]) + float(scored[2])
    floor = re.fullmatch(r"P\(yes\) \+ P\(no\) = (\S+), below the floor of 0\.5", verdict["fallback"])
    assert floor is not None
    assert float(floor[1]) == pytest.approx(mass, rel=5e-3, abs=1e-6)
    assert (verdict["method"], verdict["raw"], verdict["mass"]) == ("text", steps[2]["output"], None)
    assert verdict["unsafe"] is verdict_from_text(steps[2]["output"]).unsafe
    # The decision follows from that verdict, and so do the steps run and the answer released.
    decision, count = {False: ("safe", 3), True: ("unsafe", 5), None: ("fail_closed", 5)}[verdict["unsafe"]]
    assert (result["decision"], [s["name"] for s in steps]) == (decision, STEP_NAMES[:count])
    assert result["answer"] == steps[0 if decision == "safe" else -1]["output"]
    assert steps[0]["messages"] == [
        {
            "role": "user",
            "content": [
                {"kind": "image", "image": "pil:RGB 760x760", "digest": image_digest(load_image(STEPS_PNG))},
                {"kind": "text", "text": QUERY},
            ],
            "tool_calls": [],
            "tool_call_id": None,
            "name": None,
        }
    ]
    assert steps[1]["messages"][0]["content"][1]["text"].startswith(f"QUERY:\n{QUERY}\n\nRESPONSE:\n")


def expected_status(result: dict[str, Any]) -> str:
    """The status line's pattern for a ``--json`` result (the seconds vary)."""
    verdict = result["verdict"] or {}
    detail = ""
    if verdict.get("p_yes") is not None:
        detail = f" (P(yes)={verdict['p_yes']:.3f})"
    elif verdict.get("error"):
        detail = f" ({verdict['error']})"
    status = f"[ecso] decision: {result['decision']}{detail} · {len(result['steps'])} model calls · "
    return re.escape(status) + r"\d+\.\d\d s"


def test_ask_prints_the_answer_and_a_status_line() -> None:
    args = ("ask", "--model", "tiny-random:gemma3-small", "--image", str(STEPS_PNG), "--max-new-tokens", "4")
    args += ("--system", "Be brief.")
    result = json.loads(ecso(*args, "--json", "What is shown?").stdout)  # the same run, in full
    out = ecso(*args, "What is shown?")
    assert out.returncode == 0, out.stderr
    # text mode reads "\r" as a line end: so does the expected answer
    assert out.stdout == (result["answer"] + "\n").replace("\r\n", "\n").replace("\r", "\n")
    status = [line for line in out.stderr.splitlines() if line.startswith("[ecso] ")]
    assert len(status) == 1
    assert re.fullmatch(expected_status(result), status[0]), (status, result["verdict"])


def test_bad_image_exits_2_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    out = ecso("ask", "--model", "tiny-random:llava-small", "--image", str(bad), "q")
    assert out.returncode == 2
    assert out.stderr.strip().endswith(
        "error: unsupported or unrecognised image format (accepted: PNG, JPEG, MPO, GIF, WEBP, BMP, TIFF)"
    )


def test_hub_model_offline_exits_1_and_says_what_to_do() -> None:
    out = ecso("ask", "--model", "hf:example-org/not-downloaded", "q")
    assert out.returncode == 1
    assert "download it first" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_the_commands() -> None:
    out = ecso("--help")
    assert out.returncode == 0
    assert re.findall(r"^│ (\w+) {2,}", out.stdout, re.MULTILINE) == ["ask", "serve", "eval", "datagen"]


def test_serve_answers_and_shuts_down_gracefully(tmp_path: Path) -> None:
    import base64
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "ecso.json"
    config.write_text('{"caption_params": {"max_new_tokens": 4}, "fail_mode": "refuse"}')
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    audit = tmp_path / "audit.jsonl"
    command = ["serve", "--model", "tiny-random:llava-small", "--port", str(port), "--config", str(config)]
    server = subprocess.Popen(
        [str(ECSO_BIN), *command, "--audit-log", str(audit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        image = "data:image/png;base64," + base64.b64encode(STEPS_PNG.read_bytes()).decode()
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
            "max_tokens": 4,
        }
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200
        assert response.headers["x-ecso-decision"] == response.json()["ecso"]["decision"]
        (record,) = [json.loads(line) for line in audit.read_text().splitlines()]  # operator-side, in full
        assert record["decision"] == response.json()["ecso"]["decision"]
        assert "initial_answer" in record
        # A request in flight when SIGTERM arrives still gets its answer (graceful shutdown).
        import concurrent.futures

        body["max_tokens"] = 1000
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=60)
            time.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            assert pending.result().status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit here.
    assert code in (0, -signal.SIGTERM)
    assert b"Traceback" not in server.stderr.read()


def test_invalid_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"fail_mode": "open"}')
    out = ecso("ask", "--model", "tiny-random:llava-small", "--config", str(config), "q")
    assert out.returncode == 2
    assert "invalid config" in out.stderr


def test_ask_through_an_openai_server_takes_no_device_and_reports_an_unreachable_server() -> None:
    out = ecso("ask", "--model", "openai:some-vlm@http://127.0.0.1:9/v1", "--image", str(STEPS_PNG), "hi")
    assert out.returncode == 1
    assert "cannot reach http://127.0.0.1:9/v1" in out.stderr
    assert "Traceback" not in out.stderr
