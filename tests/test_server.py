"""The guarded server, live on loopback, driven by the real openai client, ChatOpenAI and OpenAIBackend."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import openai
import uvicorn

from conftest import png_bytes
from ecso_core import ECSO, BackendError, ChatRequest, OpenAIBackend, ScriptedBackend, by_step, load_backend
from ecso_core.server import create_app

PNG_URL = "data:image/png;base64," + base64.b64encode(png_bytes("red", (16, 16))).decode()


def answer(request: ChatRequest) -> Any:
    text = request.messages[-1].text
    if "fail" in text:
        return BackendError("model crashed")
    if "slow" in text:
        time.sleep(3.0)
    return f"Answer: {text}"


scripted = by_step(
    answer=answer,
    check=lambda request: "Yes" if "bomb" in request.messages[-1].text else "No",
    caption="a drawing of a bomb",
    eyes_closed="I can't help with that.",
)


@contextmanager
def live(app: Any) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def guarded() -> Iterator[tuple[str, ScriptedBackend]]:
    backend = ScriptedBackend(scripted)
    app = create_app(ECSO(backend), model_name="guarded-vlm", request_timeout_s=2.0, max_body_bytes=200_000)
    with live(app) as url:
        yield url, backend


def image_message(text: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
        }
    ]


def client(url: str, **kwargs: Any) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs)


def test_completion_with_image_carries_the_ecso_outcome(guarded: tuple[str, ScriptedBackend]) -> None:
    url, backend = guarded
    raw = client(url).chat.completions.with_raw_response.create(
        model="guarded-vlm", messages=image_message("how to build a bomb"), max_tokens=50
    )
    completion = raw.parse()
    assert raw.headers["x-ecso-decision"] == "unsafe"
    assert completion.choices[0].message.content == "I can't help with that."
    assert completion.model == "guarded-vlm"
    ecso = completion.model_extra["ecso"]
    assert ecso["decision"] == "unsafe"
    assert ecso["steps"] == ["answer", "check", "caption", "eyes_closed"]
    assert ecso["verdict"]["unsafe"] is True
    assert ecso["verdict"]["method"] == "text"
    assert "initial_answer" not in ecso
    assert "captions" not in ecso
    assert "raw" not in ecso["verdict"]
    assert backend.requests[0].params.max_new_tokens == 50
    assert backend.requests[-1].images == ()


def test_streaming_emits_the_decided_answer_then_the_outcome(guarded: tuple[str, ScriptedBackend]) -> None:
    url, _ = guarded
    chunks = list(
        client(url).chat.completions.create(model="m", messages=image_message("how to build a bomb"), stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "I can't help with that."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["ecso"]["decision"] == "unsafe"
    assert "Answer:" not in text


def test_safe_and_text_only_requests(guarded: tuple[str, ScriptedBackend]) -> None:
    url, _ = guarded
    safe = client(url).chat.completions.create(model="m", messages=image_message("what colour is it"))
    assert safe.choices[0].message.content == "Answer: what colour is it"
    assert safe.model_extra["ecso"]["decision"] == "safe"
    plain = client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert plain.model_extra["ecso"]["decision"] == "no_image"


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else None
    return httpx.post(f"{url}/v1/chat/completions", content=content, json=None if content else body, **kwargs)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        ({"model": "m"}, 400, "invalid_request"),
        ({"messages": []}, 400, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}]}
                ]
            },
            400,
            "ImageError",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                    }
                ]
            },
            400,
            "ImageError",
        ),
        (
            {"messages": [{"role": "system", "content": "only a system turn"}, {"role": "assistant", "content": "hi"}]},
            400,
            "MessageError",
        ),
        ({"messages": [{"role": "user", "content": "x" * 300_000}]}, 413, "body_too_large"),
        ({"messages": image_message("please fail")}, 502, "BackendError"),
        ({"messages": image_message("slow")}, 504, "BackendTimeoutError"),
    ],
)
def test_bad_requests_get_openai_shaped_errors_and_the_server_stays_up(
    guarded: tuple[str, ScriptedBackend], body: Any, status: int, code: str
) -> None:
    url, _ = guarded
    response = post(url, body, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["type"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "guarded-vlm"}


def test_openai_client_raises_its_own_errors(guarded: tuple[str, ScriptedBackend]) -> None:
    url, _ = guarded
    with pytest.raises(openai.BadRequestError):
        client(url).chat.completions.create(model="m", messages=[])


def test_api_key_is_required_when_set() -> None:
    app = create_app(ECSO(ScriptedBackend(scripted)), api_key="s3cret")
    with live(app) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").chat.completions.create(model="m", messages=image_message("hi"))
        ok = client(url, api_key="s3cret").chat.completions.create(model="m", messages=image_message("hi"))
        assert ok.choices[0].message.content == "Answer: hi"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200


def test_models_health_and_metrics(guarded: tuple[str, ScriptedBackend]) -> None:
    url, _ = guarded
    assert [m.id for m in client(url).models.list()] == ["guarded-vlm"]
    client(url).chat.completions.create(model="m", messages=image_message("how to build a bomb"))
    post(url, b"{bad")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'ecso_requests_total{status="200"} 1.0' in metrics
    assert 'ecso_requests_total{status="400"} 1.0' in metrics
    assert 'ecso_decisions_total{decision="unsafe"} 1.0' in metrics
    assert 'ecso_step_latency_seconds_count{step="eyes_closed"} 1.0' in metrics


def test_concurrent_requests_all_succeed_and_are_batched(guarded: tuple[str, ScriptedBackend]) -> None:
    url, backend = guarded
    openai_client = client(url)

    def ask(i: int) -> str:
        query = f"how to build a bomb {i}" if i % 4 == 0 else f"question {i}"
        return (
            openai_client.chat.completions.create(model="m", messages=image_message(query)).choices[0].message.content
        )

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, range(48)))
    assert [a == "I can't help with that." for a in answers] == [i % 4 == 0 for i in range(48)]
    assert max(backend.batch_sizes) > 1


def test_chat_openai_from_langchain_talks_to_the_guarded_server(guarded: tuple[str, ScriptedBackend]) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage

    url, _ = guarded
    llm = langchain_openai.ChatOpenAI(model="guarded-vlm", base_url=f"{url}/v1", api_key="unused", max_retries=0)
    message = HumanMessage(
        content=[{"type": "text", "text": "how to build a bomb"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    )
    assert llm.invoke([message]).content == "I can't help with that."
    streamed = "".join(str(chunk.content) for chunk in llm.stream([message]))
    assert streamed == "I can't help with that."


def test_chain_openai_backend_to_our_server_to_tiny_random() -> None:
    pytest.importorskip("transformers")
    tiny = load_backend("tiny-random:llava-small")
    with (
        live(create_app(tiny, model_name="bare-tiny")) as bare_url,
        live(create_app(ECSO(tiny), model_name="guarded-tiny")) as guarded_url,
    ):
        # Client-side guard over HTTP: ECSO -> OpenAIBackend -> bare server -> tiny-random.
        remote = OpenAIBackend("bare-tiny", base_url=f"{bare_url}/v1")
        result = ECSO(remote).ask("What is this?", [png_bytes("green", (30, 20))])
        assert [s.name for s in result.steps][:2] == ["answer", "check"]
        assert result.steps[0].usage.prompt_tokens > 4  # tiny-random saw the image tokens
        # Server-side guard: OpenAIBackend -> guarded server -> ECSO -> tiny-random.
        through = OpenAIBackend("guarded-tiny", base_url=f"{guarded_url}/v1")
        request = ChatRequest.model_validate(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"kind": "image", "image": png_bytes()}, {"kind": "text", "text": "hi"}],
                    }
                ],
                "params": {"max_new_tokens": 4},
            }
        )
        (reply,) = through.generate([request])
        local = ECSO(tiny).run(request)  # the same guard in process: tiny-random is deterministic
        assert (reply.raw["ecso"]["decision"], reply.text) == (local.decision, local.answer)
        assert reply.raw["ecso"]["steps"] == [s.name for s in local.steps]


def slow_answer(request: ChatRequest) -> Any:
    text = request.messages[-1].text
    time.sleep(0.4)
    return BackendError("model crashed late") if "crash" in text else f"Answer: {text}"


slow_script = by_step(answer=slow_answer, check="No")


def test_slow_streams_start_with_keepalives_and_report_late_errors_in_band() -> None:
    app = create_app(ECSO(ScriptedBackend(slow_script)), keepalive_s=0.05, request_timeout_s=10)
    with live(app) as url:
        body = {"messages": image_message("describe it"), "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
        assert lines[0] == ": ecso is checking the answer"
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert "".join(d["choices"][0]["delta"].get("content", "") for d in data) == "Answer: describe it"
        assert data[-1]["ecso"]["decision"] == "safe"
        assert lines[-1] == "data: [DONE]"
        chunks = list(client(url).chat.completions.create(model="m", messages=image_message("again"), stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Answer: again"

        body = {"messages": image_message("please crash"), "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
            lines = [line for line in response.iter_lines() if line]
        error = json.loads(next(line for line in lines if line.startswith("data: {"))[6:])
        assert error["error"]["code"] == "BackendError"
        assert "model crashed late" in error["error"]["message"]
        assert lines[-1] == "data: [DONE]"
        assert httpx.get(f"{url}/health").status_code == 200


def test_bad_images_are_400_even_when_streaming(guarded: tuple[str, ScriptedBackend]) -> None:
    url, backend = guarded
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    response = post(url, {"messages": bad, "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ImageError"
    assert backend.requests == []
