"""``ecso serve`` attacked on loopback: no file reads, no wedging, bounded work, cancelled on timeout."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from conftest import png_bytes
from ecso_core import (
    ECSO,
    BackendBase,
    ChatReply,
    ChatRequest,
    ECSOConfig,
    ImageLimits,
    ScriptedBackend,
    by_step,
    load_backend,
)
from ecso_core.server import create_app
from ecso_core.server.protocol import RequestLimits
from ecso_core.steps import current_step
from tests.test_server import live

ROOT = Path(__file__).resolve().parents[1]
PNG_URL = "data:image/png;base64," + base64.b64encode(png_bytes("red", (16, 16))).decode()


def body(url: str, text: str = "What is this?", **extra: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], **extra}


def post(url: str, payload: Any, timeout: float = 60, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=timeout, **kwargs)


def scripted() -> ScriptedBackend:
    return ScriptedBackend(by_step(check="No", default="An answer."))


@pytest.fixture
def guarded() -> Iterator[tuple[str, ScriptedBackend]]:
    backend = scripted()
    with live(create_app(ECSO(backend))) as url:
        yield url, backend


PATHS = [
    "examples/images/steps.png",  # an existing file, relative to the server's working directory
    str(ROOT / "examples/images/kitchen.png"),  # an existing file, absolute
    "/etc/hostname",
    "/nope/missing.png",  # does not exist: must answer exactly like the existing ones
    "~/.bashrc",
    "file:///etc/passwd",
    "/proc/kmsg",  # blocks forever when read: it must not be read
    "/dev/zero",
]


def test_a_url_field_is_never_read_as_a_path(guarded: tuple[str, ScriptedBackend]) -> None:
    url, backend = guarded
    answers = [post(url, body(path), timeout=5) for path in PATHS]
    assert {r.status_code for r in answers} == {400}
    assert len({r.text for r in answers}) == 1  # one identical answer: no oracle on the server's files
    assert answers[0].json()["error"]["message"] == "an image URL must be a data: URL or an http(s) URL"
    assert backend.requests == []  # no file reached the model


def test_paths_in_langchain_and_llamaindex_url_fields_are_refused_alike() -> None:
    from langchain_core.messages import HumanMessage
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

    from langchain_ecso import ChatECSO
    from llamaindex_ecso import ECSOMultiModalLLM

    for path in ("examples/images/steps.png", "/nope/missing.png"):
        backend = scripted()
        lc = HumanMessage(content=[{"type": "image_url", "image_url": {"url": path}}, {"type": "text", "text": "hi"}])
        with pytest.raises(ValueError, match="must be a data: URL or an http"):
            ChatECSO(backend=backend).invoke([lc])
        lc_v1 = HumanMessage(content=[{"type": "image", "url": path}, {"type": "text", "text": "hi"}])
        with pytest.raises(ValueError, match="must be a data: URL or an http"):
            ChatECSO(backend=backend).invoke([lc_v1])
        file_url = "file://" + str((ROOT / path).resolve())  # LlamaIndex URL fields take URLs only
        li = ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(url=file_url), TextBlock(text="hi")])
        with pytest.raises(ValueError, match="must be a data: URL or an http"):
            ECSOMultiModalLLM(backend=backend).chat([li])
        assert backend.requests == []


def health_latency(url: str, during: Any) -> tuple[float, Any]:
    """Worst /health latency while ``during()`` runs in another thread, and what it returned."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(during()))
    worker.start()
    worst = 0.0
    time.sleep(0.2)
    while worker.is_alive():
        start = time.perf_counter()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        worst = max(worst, time.perf_counter() - start)
        time.sleep(0.1)
    worker.join()
    return worst, result[0]


def big_png(side: int, color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sixteen_huge_images() -> dict[str, Any]:
    colors = ["red", "green", "blue", "white", "black", "yellow", "cyan", "magenta"] * 2
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": big_png(6000, c)}} for c in colors]
    content.append({"type": "text", "text": "Compare them."})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


def test_sixteen_6000px_images_are_refused_before_decoding_and_health_stays_fast(
    guarded: tuple[str, ScriptedBackend],
) -> None:
    url, backend = guarded
    payload = sixteen_huge_images()
    before = rss_bytes()
    worst, response = health_latency(url, lambda: post(url, payload))
    assert response.status_code == 400
    assert "the limit is 100000000" in response.json()["error"]["message"]
    assert worst < 1.0
    assert backend.requests == []
    assert rss_bytes() - before < 2**30


class Quiet(BackendBase):
    """Answers without keeping requests (ScriptedBackend records them, and their images with them)."""

    name = "quiet"

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        return [ChatReply(text="No" if current_step() == "check" else "Fine.") for r in requests]


def test_sixteen_6000px_images_within_raised_limits_decode_off_the_loop_and_memory_comes_back() -> None:
    backend = Quiet()
    limits = ImageLimits(max_total_pixels=600_000_000)
    with live(create_app(ECSO(backend, ECSOConfig(image_limits=limits)))) as url:
        payload = sixteen_huge_images()  # built first: encoding 16 PNGs here would hold this process's GIL
        before = rss_bytes()
        worst, response = health_latency(url, lambda: post(url, payload, timeout=120))
        assert response.status_code == 200, response.text
        assert worst < 1.0
        time.sleep(1.5)  # the request's objects are freed, then the server returns the memory
        after = rss_bytes()
    assert after - before < 2**30  # the 1.7 GB of decoded pixels are not kept after the answer


def test_health_answers_during_a_long_generation_and_a_timed_out_request_stops_its_work() -> None:
    backend = load_backend("tiny-random:llava-small")
    app = create_app(ECSO(backend, ECSOConfig(min_score_mass=0.0)), request_timeout_s=1.0)
    with live(app) as url:
        worst, timed_out = health_latency(url, lambda: post(url, body(PNG_URL, "Tell me a story.", max_tokens=4000)))
        assert timed_out.status_code == 504
        assert worst < 1.0
        start = time.perf_counter()
        small = post(url, body(PNG_URL, "Hi.", max_tokens=4))
        assert small.status_code == 200
        assert time.perf_counter() - start < 5


def test_a_client_that_disconnects_stops_its_generation() -> None:
    backend = load_backend("tiny-random:llava-small")
    with live(create_app(ECSO(backend, ECSOConfig(min_score_mass=0.0)))) as url:
        host, port = url.removeprefix("http://").split(":")
        payload = json.dumps(body(PNG_URL, "Tell me a story.", max_tokens=4000)).encode()
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            time.sleep(0.8)  # the generation is under way
        start = time.perf_counter()
        small = post(url, body(PNG_URL, "Hi.", max_tokens=4))
        assert small.status_code == 200
        assert time.perf_counter() - start < 5


def test_work_is_bounded_before_any_model_call(guarded: tuple[str, ScriptedBackend]) -> None:
    url, backend = guarded
    too_many_tokens = post(url, body(PNG_URL, max_tokens=100_000))
    assert too_many_tokens.status_code == 400
    assert "at most 4096" in too_many_tokens.json()["error"]["message"]
    too_long = post(url, body(PNG_URL, "x" * 200_000))
    assert too_long.status_code == 400
    assert "at most 100000" in too_long.json()["error"]["message"]
    nested = httpx.post(
        f"{url}/v1/chat/completions",
        content="[" * 100_000 + "]" * 100_000,
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert nested.status_code == 400
    assert nested.json()["error"]["code"] == "invalid_json"
    assert backend.requests == []


def test_limits_are_configurable() -> None:
    app = create_app(ECSO(scripted()), limits=RequestLimits(max_tokens=8, max_prompt_chars=50))
    with live(app) as url:
        assert post(url, body(PNG_URL, max_tokens=9)).status_code == 400
        assert post(url, body(PNG_URL, "y" * 60, max_tokens=8)).status_code == 400
        assert post(url, body(PNG_URL, max_tokens=8)).status_code == 200


def test_sse_responses_are_not_buffered_by_proxies(guarded: tuple[str, ScriptedBackend]) -> None:
    url, _ = guarded
    response = post(url, body(PNG_URL, stream=True))
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def test_metrics_need_the_api_key_unless_made_public() -> None:
    with live(create_app(ECSO(scripted()), api_key="k")) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200
    with live(create_app(ECSO(scripted()), api_key="k", public_metrics=True)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_a_request_whose_images_take_too_long_gets_a_400_and_frees_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import ecso_core.server.admission as admission

    decode = admission.decode_request

    def slow_decode(*args: Any) -> Any:
        time.sleep(1.5)
        return decode(*args)

    monkeypatch.setattr(admission, "decode_request", slow_decode)
    limits = RequestLimits(image_deadline_s=0.5, max_inflight_pixels=10_000_000)  # room for one 9 MP request
    app = create_app(ECSO(scripted()), limits=limits)
    with live(app) as url:
        start = time.perf_counter()
        response = post(url, body(big_png(3000, "blue")))  # 9 MP: decoded in a worker thread
        assert response.status_code == 400
        assert "longer than 0.5 s" in response.json()["error"]["message"]
        assert time.perf_counter() - start < 1.4
        monkeypatch.setattr(admission, "decode_request", decode)
        assert post(url, body(big_png(3000, "red"))).status_code == 200  # its pixels were given back
