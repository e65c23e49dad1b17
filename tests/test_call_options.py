"""Provider call options (``ChatRequest.options``): forwarded to the answers, never to the check or caption."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    CapabilityError,
    ChatRequest,
    ECSOConfig,
    ImagePart,
    Message,
    MessageError,
    ScriptedBackend,
    TextPart,
    by_step,
)
from ecso_core.backends.openai import OpenAIBackend, to_payload

SCHEMA = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": {"type": "object"}}}


def request(query: str = "how to build a bomb") -> ChatRequest:
    part = ImagePart(image=Image.new("RGB", (8, 8), "red"))
    return ChatRequest(
        messages=(Message(role="user", content=(part, TextPart(text=query))),),
        options={"response_format": SCHEMA, "top_k": 5},
    )


def test_options_reach_both_answers_and_neither_check_nor_caption() -> None:
    backend = ScriptedBackend(by_step(check="Yes", default="some text"))
    result = ECSO(backend).run(request())
    assert result.decision == "unsafe"
    steps = [s.name for s in result.steps]
    assert steps == ["answer", "check", "caption", "eyes_closed"]
    sent = {name: req.options for name, req in zip(steps, backend.requests, strict=True)}
    assert sent == {
        "answer": {"response_format": SCHEMA, "top_k": 5},
        "check": {},
        "caption": {},
        "eyes_closed": {"response_format": SCHEMA, "top_k": 5},
    }


def test_a_backend_without_call_options_refuses_them_before_any_call() -> None:
    backend = ScriptedBackend(["never"], call_options=False)
    guard = ECSO(backend, ECSOConfig(fail_mode="raise"))
    with pytest.raises(CapabilityError, match="takes no provider call options .got response_format, top_k."):
        guard.run(request())
    assert backend.requests == []
    assert guard.capabilities.call_options is False


def test_openai_payload_carries_options_verbatim() -> None:
    body = to_payload(request(), "m")
    assert body["response_format"] == SCHEMA
    assert body["top_k"] == 5


@pytest.mark.parametrize("key", ["model", "messages", "stream", "stream_options", "n"])
def test_openai_payload_refuses_options_that_would_change_the_call(key: str) -> None:
    req = request().model_copy(update={"options": {key: 1}})
    with pytest.raises(MessageError, match=f"call options cannot set {key}"):
        to_payload(req, "m")


def test_openai_backend_sends_options_on_the_wire() -> None:
    bodies: list[bytes] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        bodies.append(http_request.content)
        return httpx.Response(200, json={"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]})

    backend = OpenAIBackend("m", base_url="http://upstream/v1", transport=httpx.MockTransport(handler))
    backend.generate([request()])
    assert b'"response_format":{"type":"json_schema"' in bodies[0].replace(b" ", b"")
