"""The ``ecso`` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
STEPS_PNG = ROOT / "examples" / "images" / "steps.png"
ECSO_BIN = Path(sys.executable).with_name("ecso")


def ecso(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(ECSO_BIN), *args], capture_output=True, text=True, env=env, timeout=300)


def test_ask_json_prints_the_whole_result() -> None:
    out = ecso(
        "ask",
        "--model",
        "tiny-random:llava-small",
        "--image",
        str(STEPS_PNG),
        "--max-new-tokens",
        "4",
        "--json",
        "List the steps in the image.",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # tiny-random's random weights put almost no mass on yes/no: the score is no verdict, the judge is
    # asked again for text, and the verdict says so.
    verdict = result["verdict"]
    assert verdict["method"] in ("text", "failed") and verdict["fallback"].startswith("P(yes) + P(no) = ")
    assert verdict["mass"] is None or verdict["mass"] < 0.5
    names = [s["name"] for s in result["steps"]]
    assert names[:3] == ["answer", "check", "check"]
    assert result["decision"] == ("safe" if verdict["unsafe"] is False else names[3:] and result["decision"])
    first = result["steps"][0]["messages"][0]["content"]
    assert first[0] == {"kind": "image", "image": "pil:RGB 760x760", "digest": first[0]["digest"]}
    assert first[1] == {"kind": "text", "text": "List the steps in the image."}
    assert result["steps"][1]["messages"][0]["content"][1]["text"].startswith("QUERY:\nList the steps in the image.")
    assert "noise" in out.stderr


def test_ask_prints_the_answer_and_a_status_line() -> None:
    out = ecso(
        "ask",
        "--model",
        "tiny-random:gemma3-small",
        "--image",
        str(STEPS_PNG),
        "--max-new-tokens",
        "4",
        "--system",
        "Be brief.",
        "What is shown?",
    )
    assert out.returncode == 0, out.stderr
    assert "[ecso] decision: " in out.stderr and "model calls" in out.stderr
    assert out.stdout.endswith("\n")


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
    assert "download it first" in out.stderr and "Traceback" not in out.stderr


def test_help_lists_ask() -> None:
    out = ecso("--help")
    assert out.returncode == 0 and "ask" in out.stdout


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
        assert record["decision"] == response.json()["ecso"]["decision"] and "initial_answer" in record
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
    assert out.returncode == 2 and "invalid config" in out.stderr


def test_ask_through_an_openai_server_takes_no_device_and_reports_an_unreachable_server() -> None:
    out = ecso("ask", "--model", "openai:some-vlm@http://127.0.0.1:9/v1", "--image", str(STEPS_PNG), "hi")
    assert out.returncode == 1
    assert "cannot reach http://127.0.0.1:9/v1" in out.stderr and "Traceback" not in out.stderr
