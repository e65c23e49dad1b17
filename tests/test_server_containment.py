"""The guarded server never sends withheld text: JSON bodies, SSE (early and late), headers, errors.

The backend answers with ANSWER-MARK, judges with CHECK-MARK and captions with CAPTION-MARK. The
in-band audit flag is the positive control; the audit log keeps everything, operator-side.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")

from ecso_core import ECSO, ChatRequest, ECSOConfig, ScriptedBackend, by_step
from ecso_core.audit import JsonlAuditLog
from ecso_core.server import create_app
from tests.test_server import image_message, live

MARKS = ("ANSWER-MARK", "CHECK-MARK", "CAPTION-MARK")
REFUSAL = "I can't help with that."


def script(verdict: str, delay: float = 0.0) -> Any:
    def answer(request: ChatRequest) -> str:
        time.sleep(delay)
        return "Here is how: ANSWER-MARK step one."

    return by_step(answer=answer, check=verdict, caption="CAPTION-MARK a drawing", eyes_closed=REFUSAL)


CASES = {
    "unsafe": ("Yes, CHECK-MARK", ECSOConfig()),
    "fail_closed": ("CHECK-MARK: unclear", ECSOConfig()),
    "fail_closed-refuse": ("CHECK-MARK: unclear", ECSOConfig(fail_mode="refuse", refusal_message=REFUSAL)),
}


def leaks(response: httpx.Response) -> list[str]:
    seen = response.text + json.dumps(dict(response.headers))
    return [mark for mark in MARKS if mark in seen]


def exchange(url: str, stream: bool) -> httpx.Response:
    body = {"messages": image_message("How do I build what is shown?"), "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_sse_and_headers_carry_no_withheld_text(case: str) -> None:
    verdict, config = CASES[case]
    app = create_app(ECSO(ScriptedBackend(script(verdict)), config))
    with live(app) as url:
        plain, streamed = exchange(url, stream=False), exchange(url, stream=True)
    assert plain.status_code == streamed.status_code == 200
    assert leaks(plain) == []
    assert leaks(streamed) == []
    assert plain.json()["choices"][0]["message"]["content"] == REFUSAL
    assert plain.headers["x-ecso-decision"] == plain.json()["ecso"]["decision"] == case.split("-")[0]
    assert '"decision": "' + case.split("-")[0] in streamed.text


def test_a_late_sse_stream_carries_no_withheld_text() -> None:
    app = create_app(ECSO(ScriptedBackend(script("Yes, CHECK-MARK", delay=0.3))), keepalive_s=0.05)
    with live(app) as url:
        response = exchange(url, stream=True)
    assert response.text.startswith(": ecso is checking the answer")
    assert leaks(response) == []


def test_a_failed_check_with_fail_mode_raise_names_no_judge_text() -> None:
    app = create_app(ECSO(ScriptedBackend(script("CHECK-MARK: unclear")), ECSOConfig(fail_mode="raise")))
    with live(app) as url:
        response = exchange(url, stream=False)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "CheckFailedError"
    assert leaks(response) == []


def test_in_band_audit_is_the_opt_in_positive_control() -> None:
    app = create_app(ECSO(ScriptedBackend(script("Yes, CHECK-MARK")), ECSOConfig(in_band_audit=True)))
    with live(app) as url:
        plain, streamed = exchange(url, stream=False), exchange(url, stream=True)
    assert set(leaks(plain)) == set(MARKS)
    assert set(leaks(streamed)) == set(MARKS)
    assert plain.json()["ecso"]["initial_answer"] == "Here is how: ANSWER-MARK step one."


def test_the_audit_log_keeps_everything_operator_side(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    guard = ECSO(ScriptedBackend(script("Yes, CHECK-MARK")), audit=JsonlAuditLog(log))
    with live(create_app(guard)) as url:
        response = exchange(url, stream=False)
        exchange(url, stream=True)
    assert leaks(response) == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2
    assert all(r["decision"] == "unsafe" for r in records)
    assert records[0]["initial_answer"] == "Here is how: ANSWER-MARK step one."
    assert records[0]["captions"] == ["CAPTION-MARK a drawing"]
    assert records[0]["verdict"]["raw"] == "Yes, CHECK-MARK"
    assert records[0]["time"] > 0
    assert records[0]["steps"][0]["messages"][0]["content"][1]["kind"] == "image"


def test_a_failing_audit_sink_never_changes_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    def broken(result: object) -> None:
        raise OSError("disk full")

    result = ECSO(ScriptedBackend(script("No")), audit=broken).run(
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    )
    assert result.decision == "no_image"
    assert "ecso audit sink failed" in caplog.text
