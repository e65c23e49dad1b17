"""Request fields of ``ecso serve``: each honoured, forwarded or refused with a 400, never silently ignored.

Also the ``X-ECSO-*`` headers (what ``ChatOpenAI`` users read the decision from) and ``stream_options``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import openai
from test_server import PNG_URL, client, image_message, live, post

from ecso_core import (
    ECSO,
    ChatReply,
    ChatRequest,
    MessageError,
    ScriptedBackend,
    TokenUsage,
    YesNoScore,
    by_step,
)
from ecso_core.result import ECSOResult
from ecso_core.server import create_app
from ecso_core.server.protocol import (
    ChatCompletionRequest,
    RequestLimits,
    stream_bodies,
    to_chat_request,
)

SCHEMA = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": {"type": "object"}}}


scripted = by_step(
    answer='{"answer": "fine"}',
    check=lambda request: "Yes" if "bomb" in request.messages[-1].text else "No",
    caption="a drawing of a bomb",
    eyes_closed='{"answer": "I can\'t help with that."}',
)


@pytest.fixture
def served() -> Iterator[tuple[str, ScriptedBackend]]:
    """A guard over a backend that takes provider call options (as OpenAI-compatible ones do)."""
    backend = ScriptedBackend(scripted)
    with live(create_app(ECSO(backend), model_name="guarded-vlm", request_timeout_s=5.0)) as url:
        yield url, backend


@pytest.fixture
def local() -> Iterator[tuple[str, ScriptedBackend]]:
    """A guard over a backend that takes no call options (as the transformers backend)."""
    backend = ScriptedBackend(scripted, name="local-vlm", call_options=False)
    with live(create_app(ECSO(backend), model_name="local-vlm", request_timeout_s=5.0)) as url:
        yield url, backend


def error(response: httpx.Response) -> dict[str, Any]:
    return {"status": response.status_code, **response.json()["error"]}


# ---- response_format and other call options ----------------------------------------------------------


def test_response_format_reaches_both_answers_and_neither_check_nor_caption(
    served: tuple[str, ScriptedBackend],
) -> None:
    url, backend = served
    completion = client(url).chat.completions.create(
        model="guarded-vlm", messages=image_message("how to build a bomb"), response_format=SCHEMA
    )
    assert completion.choices[0].message.content == '{"answer": "I can\'t help with that."}'
    assert [r.options for r in backend.requests] == [{"response_format": SCHEMA}, {}, {}, {"response_format": SCHEMA}]


def test_vendor_extensions_and_advisory_fields_are_forwarded_to_a_backend_that_takes_options(
    served: tuple[str, ScriptedBackend],
) -> None:
    url, backend = served
    body = {"messages": image_message("what colour"), "top_k": 5, "user": "u-1", "frequency_penalty": None}
    assert post(url, body).status_code == 200
    assert [r.options for r in backend.requests] == [{"top_k": 5, "user": "u-1"}, {}]


def test_response_format_on_a_backend_without_call_options_is_a_400_naming_it(
    local: tuple[str, ScriptedBackend],
) -> None:
    url, backend = local
    response = post(url, {"messages": image_message("what colour"), "response_format": SCHEMA})
    assert error(response) == {
        "status": 400,
        "message": "response_format is not supported by local-vlm: it takes no provider call options (they reach "
        "the model through an OpenAI-compatible, LangChain or LlamaIndex backend)",
        "type": "invalid_request_error",
        "param": "response_format",
        "code": "CapabilityError",
    }
    response = post(url, {"messages": image_message("what colour"), "top_k": 5, "logit_bias": {"1": 2}})
    assert error(response)["message"].startswith("logit_bias, top_k are not supported by local-vlm")
    assert error(response)["param"] == "logit_bias"
    assert backend.requests == []  # refused before any model call
    with pytest.raises(openai.BadRequestError, match="response_format is not supported"):
        client(url).chat.completions.create(model="m", messages=image_message("hi"), response_format=SCHEMA)


def test_call_options_count_towards_the_prompt_size_bound() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "A", "schema": {"description": "x" * 200}}}
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "response_format": schema}
    )
    limits = RequestLimits(max_prompt_chars=200)
    chars = len("hi") + len(json.dumps({"response_format": schema})) - 2  # as tool definitions are counted
    with pytest.raises(MessageError) as caught:
        to_chat_request(body, limits=limits)
    assert str(caught.value) == f"the prompt has {chars} characters; this server allows at most 200"
    assert to_chat_request(body, limits=RequestLimits(max_prompt_chars=400)).options == {"response_format": schema}


def test_advisory_fields_and_nulls_do_not_need_call_options(local: tuple[str, ScriptedBackend]) -> None:
    url, backend = local
    body = {"messages": image_message("what colour"), "user": "u-1", "store": False, "response_format": None}
    response = post(url, body)
    assert response.status_code == 200
    assert response.json()["ecso"]["decision"] == "safe"
    assert [r.options for r in backend.requests] == [{}, {}]


# ---- fields no backend can honour ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        (
            {"logprobs": True},
            "logprobs",
            "logprobs is not supported: the guarded answer has no token log-probabilities to give (when the check "
            "flags the first answer, the answer sent is a second, eyes-closed one); omit it or set logprobs to false",
        ),
        (
            {"logprobs": True, "top_logprobs": 5},
            "logprobs",
            "logprobs is not supported: the guarded answer has no token log-probabilities to give (when the check "
            "flags the first answer, the answer sent is a second, eyes-closed one); omit it or set logprobs to false",
        ),
        (
            {"top_logprobs": 5},
            "top_logprobs",
            "top_logprobs is not supported: the guarded answer has no token log-probabilities to give (when the "
            "check flags the first answer, the answer sent is a second, eyes-closed one); omit it or set logprobs "
            "to false",
        ),
        (
            {"functions": [{"name": "f", "parameters": {}}]},
            "functions",
            "functions is not supported (deprecated by OpenAI): use tools and tool_choice",
        ),
        ({"audio": {"voice": "alloy"}}, "audio", "audio output is not supported: the guard judges and returns text"),
        ({"modalities": ["text", "audio"]}, "modalities", 'modalities other than ["text"] are not supported'),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
            "stream_options.include_obfuscation is not supported: ecso adds no obfuscation padding to its chunks; "
            "omit it or set it to false",
        ),
    ],
)
def test_fields_the_guard_cannot_honour_are_a_400(
    served: tuple[str, ScriptedBackend], extra: dict[str, Any], param: str, message: str
) -> None:
    url, backend = served
    response = post(url, {"messages": image_message("what colour"), **extra})
    assert error(response) == {
        "status": 400,
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "CapabilityError",
    }
    assert backend.requests == []


def test_stream_options_without_stream_is_a_400(served: tuple[str, ScriptedBackend]) -> None:
    url, _ = served
    response = post(url, {"messages": image_message("hi"), "stream_options": {"include_usage": True}})
    assert error(response) == {
        "status": 400,
        "message": "stream_options is only allowed when stream is true",
        "type": "invalid_request_error",
        "param": "stream_options",
        "code": "MessageError",
    }
    response = post(url, {"messages": image_message("hi"), "stream": True, "stream_options": {"include_use": True}})
    assert error(response)["code"] == "invalid_request"
    assert "include_use" in error(response)["message"]


def test_logprobs_false_and_text_only_modalities_are_accepted(served: tuple[str, ScriptedBackend]) -> None:
    url, backend = served
    body = {"messages": image_message("hi"), "logprobs": False, "top_logprobs": None, "modalities": ["text"]}
    assert post(url, body).status_code == 200
    assert backend.requests[0].options == {}


# ---- stream_options.include_usage -----------------------------------------------------------------------


def sse(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_include_usage_adds_a_last_chunk_with_usage_and_the_ecso_field(served: tuple[str, ScriptedBackend]) -> None:
    url, _ = served
    body = {"messages": image_message("how to build a bomb"), "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse(url, body)
    *answer, last = chunks
    assert all(chunk["usage"] is None and "ecso" not in chunk for chunk in answer)
    assert answer[-1]["choices"][0]["finish_reason"] == "stop"
    assert last["choices"] == []
    assert last["object"] == "chat.completion.chunk"
    assert set(last["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert last["ecso"]["decision"] == "unsafe"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in answer)
    assert text == '{"answer": "I can\'t help with that."}'

    streamed = list(
        client(url).chat.completions.create(
            model="m", messages=image_message("hi"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert streamed[-1].choices == []
    assert streamed[-1].usage is not None
    assert streamed[-1].model_extra["ecso"]["decision"] == "safe"
    assert all(c.usage is None for c in streamed[:-1])


def test_without_include_usage_no_chunk_has_usage_and_the_last_carries_ecso(
    served: tuple[str, ScriptedBackend],
) -> None:
    url, _ = served
    for extra in ({}, {"stream_options": {"include_usage": False}}):
        chunks = sse(url, {"messages": image_message("how to build a bomb"), "stream": True, **extra})
        assert all("usage" not in chunk for chunk in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["ecso"]["decision"] == "unsafe"
        assert all("ecso" not in chunk for chunk in chunks[:-1])


def test_a_stream_opened_before_its_verdict_also_ends_with_the_usage_chunk() -> None:
    def slowly(reply: str) -> Any:
        def slow(request: ChatRequest) -> str:
            time.sleep(0.3)
            return reply

        return slow

    app = create_app(
        ECSO(ScriptedBackend(by_step(answer=slowly("fine"), check=slowly("No")))),
        keepalive_s=0.05,
        request_timeout_s=10,
    )
    with live(app) as url:
        body = {"messages": image_message("hi"), "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": ecso is checking the answer"
    assert lines[-1] == "data: [DONE]"
    *answer, last = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert all(chunk["usage"] is None for chunk in answer)
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == 0
    assert last["ecso"]["decision"] == "safe"


def test_stream_bodies_with_and_without_usage_exactly() -> None:
    result = ECSOResult(answer="ok", decision="no_image", initial_answer="ok")
    reply = ChatReply(text="ok", usage=TokenUsage(prompt_tokens=3, completion_tokens=1), raw=result)
    ecso = result.client_summary()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 7,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    plain = [chunk({"role": "assistant", "content": ""}), chunk({"content": "ok"}), chunk({}, "stop")]
    assert stream_bodies(reply, "m", "c", 7) == [*plain[:-1], {**plain[-1], "ecso": ecso}]
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert stream_bodies(reply, "m", "c", 7, include_usage=True) == [
        *({**c, "usage": None} for c in plain),
        {**chunk({}), "choices": [], "usage": usage, "ecso": ecso},
    ]


# ---- headers, and reading the decision from LangChain's ChatOpenAI --------------------------------------


def test_headers_carry_decision_method_and_p_yes_never_text() -> None:
    backend = ScriptedBackend(scripted, scores=lambda r: YesNoScore(p_yes=0.9, p_no=0.1))
    with live(create_app(ECSO(backend), model_name="m")) as url:
        response = post(url, {"messages": image_message("how to build a bomb")})
        ecso_headers = {k: v for k, v in response.headers.items() if k.startswith("x-ecso-")}
        assert ecso_headers == {
            "x-ecso-decision": "unsafe",
            "x-ecso-verdict-method": "probability",
            "x-ecso-p-yes": "0.9000",
        }
        plain = post(url, {"messages": [{"role": "user", "content": "hello"}]})
        assert {k: v for k, v in plain.headers.items() if k.startswith("x-ecso-")} == {"x-ecso-decision": "no_image"}
    with live(create_app(ScriptedBackend(["bare answer"]), model_name="bare")) as url:  # --no-guard: no headers
        assert not [k for k in post(url, {"messages": image_message("hi")}).headers if k.startswith("x-ecso-")]


def test_the_documented_chat_openai_one_liner_reads_the_decision(served: tuple[str, ScriptedBackend]) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage

    url, _ = served
    llm = langchain_openai.ChatOpenAI(
        model="guarded-vlm", base_url=f"{url}/v1", api_key="unused", max_retries=0, include_response_headers=True
    )
    message = HumanMessage(
        content=[{"type": "text", "text": "how to build a bomb"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    )
    reply = llm.invoke([message])
    assert "ecso" not in reply.response_metadata  # ChatOpenAI drops the non-standard body field ...
    assert reply.response_metadata["headers"]["x-ecso-decision"] == "unsafe"  # ... the header stays
    streamed = None
    for chunk in llm.stream([message]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert streamed.response_metadata["headers"]["x-ecso-decision"] == "unsafe"


# ---- the protocol translator ----------------------------------------------------------------------------


def test_to_chat_request_leaves_max_tokens_to_the_model_unless_asked() -> None:
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert to_chat_request(body).params.max_new_tokens is None
    assert to_chat_request(body, default_max_tokens=64).params.max_new_tokens == 64
    asked = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    assert to_chat_request(asked, default_max_tokens=64).params.max_new_tokens == 9
