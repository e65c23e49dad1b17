"""OpenAIBackend: exact request bodies over httpx.MockTransport, logprobs, retries, timeouts, errors."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ChatRequest,
    GenerationParams,
    ImagePart,
    Message,
    OpenAIBackend,
    TextPart,
    ToolCall,
    load_backend,
)
from ecso_core.backends.openai import from_payload, score_from_payload, to_payload
from ecso_core.images import image_to_data_url


def completion(text: str = "hello", **extra: Any) -> dict[str, Any]:
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }
    body.update(extra)
    return body


def logprob_completion(yes: float, no: float) -> dict[str, Any]:
    top = [
        {"token": "Yes", "logprob": math.log(yes)},
        {"token": " no", "logprob": math.log(no)},
        {"token": "Maybe", "logprob": math.log(0.01)},
    ]
    body = completion("Yes")
    body["choices"][0]["logprobs"] = {"content": [{"token": "Yes", "logprob": math.log(yes), "top_logprobs": top}]}
    return body


class Recorder:
    """A MockTransport handler that records JSON bodies and serves scripted responses."""

    def __init__(self, *responses: Any) -> None:
        self.responses = list(responses)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if callable(item):  # a function of the request body
            item = item(self.bodies[-1])
        if isinstance(item, Exception):
            raise item
        if isinstance(item, httpx.Response):
            return item
        return httpx.Response(200, json=item)


def backend(handler: Recorder, **settings: Any) -> OpenAIBackend:
    settings.setdefault("backoff_s", 0.0)
    return OpenAIBackend("vlm", base_url="http://vlm.test/v1", transport=httpx.MockTransport(handler), **settings)


def test_payload_translation_is_exact() -> None:
    picture = Image.new("RGB", (2, 2), "red")
    tools = ({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},)
    request = ChatRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content=(ImagePart(image=picture), TextPart(text="What?"))),
            Message(role="assistant", tool_calls=(ToolCall(id="c1", name="f", arguments={"x": 1}),)),
            Message(role="tool", content="42", tool_call_id="c1"),
        ),
        params=GenerationParams(max_new_tokens=9, temperature=0.5, top_p=0.9, stop=("END",), seed=3),
        tools=tools,
    )
    assert to_payload(request, "m") == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_to_data_url(picture)}},
                    {"type": "text", "text": "What?"},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 3,
        "tools": list(tools),
    }


def test_reply_translation_reads_text_tool_calls_and_usage() -> None:
    body = completion("")
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": "c9", "type": "function", "function": {"name": "search", "arguments": '{"q": "cats"}'}}
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    reply = from_payload(body)
    assert reply.tool_calls == (ToolCall(id="c9", name="search", arguments={"q": "cats"}),)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.finish_reason) == (11, 2, "tool_calls")
    with pytest.raises(BackendError, match="malformed"):
        from_payload({"choices": []})
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    with pytest.raises(BackendError, match="invalid JSON"):
        from_payload(body)


def test_score_from_logprobs_sums_spellings() -> None:
    score = score_from_payload(logprob_completion(0.7, 0.2))
    assert score is not None
    assert score.p_yes == pytest.approx(0.7)
    assert score.p_no == pytest.approx(0.2)
    assert score_from_payload(completion("Yes")) is None


def test_generate_posts_the_exact_body_with_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    handler = Recorder(completion("fine"))
    request = ChatRequest(messages=(Message(role="user", content="hi"),), params=GenerationParams(max_new_tokens=5))
    (reply,) = backend(handler).generate([request])
    assert reply.text == "fine"
    assert handler.bodies == [
        {"model": "vlm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0.0}
    ]
    assert handler.headers[0]["authorization"] == "Bearer sk-test"


def test_unset_max_new_tokens_sends_no_max_tokens_the_server_default_applies() -> None:
    handler = Recorder(completion("fine"))
    backend(handler).generate([ChatRequest(messages=(Message(role="user", content="hi"),))])
    assert handler.bodies == [{"model": "vlm", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}]


def test_scoring_requests_one_token_with_logprobs_and_ecso_uses_it() -> None:
    handler = Recorder(completion("an answer"), logprob_completion(0.1, 0.8))
    guard = ECSO(backend(handler))
    result = guard.ask("What is it?", [Image.new("RGB", (4, 4))])
    assert result.decision == "safe"
    assert result.verdict.method == "probability"
    check_body = handler.bodies[1]
    assert (check_body["max_tokens"], check_body["logprobs"], check_body["top_logprobs"]) == (1, True, 20)
    assert check_body["temperature"] == 0.0


def test_server_without_logprobs_says_it_cannot_score_and_is_not_asked_again() -> None:
    handler = Recorder(completion("Yes"))
    model = backend(handler)
    request = ChatRequest(messages=(Message(role="user", content="harmful? Answer yes or no:"),))
    assert model.score_yes_no([request]) == [None]  # no made-up 1/0 score from the text
    assert model.score_yes_no([request, request]) == [None, None]
    assert len(handler.bodies) == 1  # remembered: no second request
    assert model.capabilities.score_yes_no is True  # capabilities are frozen, never mutated
    never = backend(Recorder(completion("x")), logprobs="never")
    assert never.capabilities.score_yes_no is False


def test_guard_over_a_server_without_logprobs_reads_the_check_as_text_and_says_so() -> None:
    answer, check = completion("A cat."), completion("No, it is fine.")
    handler = Recorder(answer, check, check, answer, check)  # in order: the calls of two guarded runs
    guard = ECSO(backend(handler))
    request = ChatRequest(
        messages=(Message(role="user", content=(ImagePart(image=Image.new("RGB", (8, 8))), TextPart(text="What?"))),)
    )
    result = guard.run(request)
    assert result.decision == "safe"
    assert result.verdict.method == "text"
    assert result.verdict.fallback == "the judge gave no token probabilities"
    assert [s.name for s in result.steps] == ["answer", "check", "check"]
    assert [b.get("logprobs") for b in handler.bodies] == [None, True, None]
    again = guard.run(request)  # remembered: the check goes straight to text
    assert [s.name for s in again.steps] == ["answer", "check", "check"]
    assert len(handler.bodies) == 5
    assert (result.answer, again.answer, again.verdict.method) == ("A cat.", "A cat.", "text")


def test_retries_on_429_and_5xx_then_succeeds() -> None:
    handler = Recorder(
        httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}}),
        httpx.Response(503, json={"error": {"message": "busy"}}),
        completion("finally"),
    )
    request = ChatRequest(messages=(Message(role="user", content="hi"),))
    assert backend(handler).generate([request])[0].text == "finally"
    assert len(handler.bodies) == 3


def test_errors_are_typed() -> None:
    request = ChatRequest(messages=(Message(role="user", content="hi"),))
    bad = Recorder(httpx.Response(400, json={"error": {"message": "bad field"}}))
    with pytest.raises(BackendError, match="HTTP 400: bad field") as info:
        backend(bad).generate([request])
    assert info.value.status_code == 400
    assert len(bad.bodies) == 1
    down = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        backend(down, max_retries=1).generate([request])
    assert len(down.bodies) == 2
    slow = Recorder(httpx.ReadTimeout("too slow"))
    with pytest.raises(BackendTimeoutError):
        backend(slow, max_retries=0).generate([request])
    exhausted = Recorder(httpx.Response(500, text="oops"))
    with pytest.raises(BackendError, match="HTTP 500: oops"):
        backend(exhausted, max_retries=2).generate([request])
    assert len(exhausted.bodies) == 3
    garbage = Recorder(httpx.Response(200, text="<html>"))
    with pytest.raises(BackendError, match="non-JSON"):
        backend(garbage).generate([request])


def test_async_generate_runs_requests_concurrently_within_the_bound() -> None:
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return httpx.Response(200, json=completion(json.loads(request.content)["messages"][0]["content"]))

    model = OpenAIBackend(
        "vlm", base_url="http://vlm.test/v1", transport=httpx.MockTransport(handler), max_concurrency=3
    )
    requests = [ChatRequest(messages=(Message(role="user", content=f"q{i}"),)) for i in range(8)]
    replies = asyncio.run(model.agenerate(requests))
    assert [r.text for r in replies] == [f"q{i}" for i in range(8)]
    assert peak == 3


def test_load_backend_parses_openai_specs() -> None:
    model = load_backend("openai:llava-hf/llava-1.5-7b-hf@http://localhost:8000/v1")
    assert isinstance(model, OpenAIBackend)
    assert (model.settings.model, model.settings.base_url) == ("llava-hf/llava-1.5-7b-hf", "http://localhost:8000/v1")


def test_aclose_closes_the_loops_client() -> None:
    model = backend(Recorder(completion("x")))

    async def use_and_close() -> bool:
        await model.agenerate([ChatRequest(messages=(Message(role="user", content="hi"),))])
        client = model._loop_state()[0]
        await model.aclose()
        return client.is_closed

    assert asyncio.run(use_and_close()) is True
    assert model._client.is_closed
