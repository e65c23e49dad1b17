"""Cancelled requests stop: before their next step, inside a running generation, and over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    CancelToken,
    ChatReply,
    ChatRequest,
    GenerationParams,
    ImagePart,
    Message,
    OpenAIBackend,
    RequestCancelledError,
    ScriptedBackend,
    TextPart,
    by_step,
)


def request(query: str = "What is it?", token: CancelToken | None = None, max_new_tokens: int = 8) -> ChatRequest:
    part = ImagePart(image=Image.new("RGB", (16, 16), "green"))
    return ChatRequest(
        messages=(Message(role="user", content=(part, TextPart(text=query))),),
        params=GenerationParams(max_new_tokens=max_new_tokens),
        cancel=token,
    )


def test_a_token_calls_back_once_and_keeps_the_first_reason() -> None:
    token, seen = CancelToken(), []
    forget = token.on_cancel(lambda: seen.append("a"))
    token.on_cancel(lambda: seen.append("b"))
    forget()
    token.cancel("deadline")
    token.cancel("again")
    token.on_cancel(lambda: seen.append("late"))  # already cancelled: called at once
    assert seen == ["b", "late"]
    assert token.cancelled
    assert token.reason == "deadline"


def test_a_cancelled_request_makes_no_call() -> None:
    token = CancelToken()
    token.cancel("client disconnected")
    backend = ScriptedBackend(["never"])
    with pytest.raises(RequestCancelledError, match="client disconnected"):
        ECSO(backend).run(request(token=token))
    assert backend.requests == []


def test_cancelling_one_request_of_a_batch_stops_it_and_spares_the_others() -> None:
    token = CancelToken()

    def answer(req: ChatRequest) -> str:
        if req.messages[-1].text == "stop me":
            token.cancel("deadline")  # cancelled while its answer is being generated
            return "half an answer"
        return "A green square."

    backend = ScriptedBackend(by_step(answer=answer, check="No"))
    results = ECSO(backend).run_batch([request("stop me", token), request("keep me")], return_exceptions=True)
    assert isinstance(results[0], RequestCancelledError)
    assert results[1].decision == "safe"
    assert all("half an answer" not in r.messages[-1].text for r in backend.requests)  # never checked
    assert [r.cancel is token for r in backend.requests] == [True, False, False]


def test_every_step_of_a_request_carries_its_token() -> None:
    token = CancelToken()
    backend = ScriptedBackend(["bad", "Yes", "a picture", "refused"])
    ECSO(backend).run(request(token=token))
    assert [r.cancel for r in backend.requests] == [token] * 4


def test_the_guard_gives_every_request_a_token_and_cancels_it_when_its_driver_stops() -> None:
    backend = ScriptedBackend(["An answer.", "No"])
    stream = ECSO(backend).stream(request())
    next(stream), next(stream)  # step events: answer, then check (the answer was generated in between)
    stream.close()  # the consumer went away before the check
    (answer,) = backend.requests
    assert answer.cancel is not None
    assert answer.cancel.cancelled


def model_slow_on(word: str) -> Any:
    async def handler(http: httpx.Request) -> httpx.Response:
        text = http.content.decode()
        if word in text:
            await asyncio.sleep(30)
        message = {"role": "assistant", "content": "done"}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    return httpx.MockTransport(handler)


async def test_an_http_call_in_flight_is_dropped_when_its_request_is_cancelled() -> None:
    backend = OpenAIBackend("vlm", base_url="http://vlm.test/v1", transport=model_slow_on("slow"), logprobs="never")
    token = CancelToken()
    slow = ChatRequest(messages=(Message(role="user", content="slow"),), cancel=token)
    quick = ChatRequest(messages=(Message(role="user", content="quick"),))
    asyncio.get_running_loop().call_later(0.2, token.cancel, "deadline")
    start = time.perf_counter()
    dropped, answered = await backend.agenerate([slow, quick])
    assert time.perf_counter() - start < 5
    assert dropped == ChatReply(finish_reason="cancelled")
    assert answered.text == "done"


@pytest.mark.parametrize("spec", ["tiny-random:llava-small"])
def test_a_running_generation_stops_at_the_next_token(spec: str) -> None:
    pytest.importorskip("transformers")
    from ecso_core import load_backend

    backend = load_backend(spec)
    token = CancelToken()
    long = request("Tell me a very long story.", token, max_new_tokens=4000)
    short = request("And you?", None, max_new_tokens=4)
    threading.Timer(0.5, token.cancel, args=("deadline",)).start()
    start = time.perf_counter()
    cancelled, other = backend.generate([long, short])
    elapsed = time.perf_counter() - start
    assert cancelled.finish_reason == "cancelled"
    assert cancelled.text == ""
    # the other request of the batch runs on to its bound (random weights do not pick the end token)
    assert (other.finish_reason, other.usage.completion_tokens) == ("length", 4)
    assert elapsed < 10  # 4,000 tokens would take far longer


async def test_cancelling_arun_stops_the_generation_running_in_its_thread() -> None:
    pytest.importorskip("transformers")
    from ecso_core import load_backend

    backend = load_backend("tiny-random:llava-small")
    task = asyncio.ensure_future(ECSO(backend).arun(request("Tell me everything.", max_new_tokens=4000)))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = time.perf_counter()
    await asyncio.to_thread(backend.generate, [request("next", max_new_tokens=2)])  # waits for the model lock
    assert time.perf_counter() - start < 5  # the cancelled generation let go of the model at once
