"""Progressive streaming on every surface: server SSE, ChatECSO stream/astream, LangGraph, LlamaIndex.

The model streams 312 characters of benign words, then BAD, then more; windows of 100 characters. Every
surface must show exactly the text the core released (three checked windows, the separator, the
eyes-closed answer), never BAD or what follows it, and end with the decision.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest

from ecso_core import ECSO, ECSOConfig
from tests.conftest import png_bytes
from tests.test_progressive import HARMFUL_TAIL, StreamingModel, request

CONFIG = ECSOConfig(stream="progressive", stream_window_chars=100)
EXPECTED = HARMFUL_TAIL[:312] + "\n\nI can't help with that part."
PNG = base64.b64encode(png_bytes("red", (8, 8))).decode()


def test_the_core_stream_releases_the_expected_text() -> None:
    events = list(ECSO(StreamingModel(HARMFUL_TAIL), CONFIG).stream(request()))
    assert "".join(getattr(e, "text", "") for e in events[:-1]) == EXPECTED
    assert events[-1].result.decision == "unsafe"


def test_server_sse_sends_each_released_piece_and_the_decision_last() -> None:
    pytest.importorskip("fastapi")
    from ecso_core.server import create_app
    from tests.test_server import live

    model = StreamingModel(HARMFUL_TAIL)
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the picture."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
        "stream": True,
    }
    with live(create_app(ECSO(model, CONFIG))) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=20) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert "BAD" not in "".join(lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert "".join(pieces) == EXPECTED
    assert pieces[1:4] == [HARMFUL_TAIL[:102], HARMFUL_TAIL[102:207], HARMFUL_TAIL[207:312]]  # window by window
    assert chunks[-1]["ecso"]["decision"] == "unsafe"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_ecso_stream_and_astream() -> None:
    pytest.importorskip("langchain_core")
    import asyncio

    from langchain_ecso import ChatECSO

    def guarded() -> Any:
        return ChatECSO(backend=StreamingModel(HARMFUL_TAIL), config=CONFIG)

    message = [{"role": "user", "content": [{"type": "text", "text": "Describe."}, _image_block()]}]
    chunks = list(guarded().stream(message))
    assert "".join(str(c.content) for c in chunks) == EXPECTED
    assert chunks[-1].response_metadata["ecso"]["decision"] == "unsafe"

    async def collect() -> list[Any]:
        return [c async for c in guarded().astream(message)]

    assert "".join(str(c.content) for c in asyncio.run(collect())) == EXPECTED


async def test_langgraph_messages_mode_and_astream_events_show_only_released_text() -> None:
    pytest.importorskip("langgraph")
    from langgraph.graph import END, START, MessagesState, StateGraph

    from langchain_ecso import ChatECSO

    llm = ChatECSO(backend=StreamingModel(HARMFUL_TAIL), config=CONFIG)

    def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("model", node).add_edge(START, "model").add_edge("model", END).compile()
    inputs = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."}, _image_block()]}]}
    streamed = [chunk async for chunk, _ in graph.astream(inputs, stream_mode="messages")]
    assert "".join(str(c.content) for c in streamed if c.type == "AIMessageChunk") == EXPECTED
    events = [e async for e in graph.astream_events(inputs, version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == EXPECTED
    assert "BAD" not in repr(events)


def test_llamaindex_stream_chat() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

    from llamaindex_ecso import ECSOMultiModalLLM

    llm = ECSOMultiModalLLM(backend=StreamingModel(HARMFUL_TAIL), config=CONFIG)
    blocks = [ImageBlock(image=png_bytes("red", (8, 8))), TextBlock(text="Describe the picture.")]
    responses = list(llm.stream_chat([ChatMessage(role=MessageRole.USER, blocks=blocks)]))
    assert "".join(r.delta or "" for r in responses) == EXPECTED
    assert responses[-1].message.content == EXPECTED
    assert responses[-1].additional_kwargs["ecso"]["decision"] == "unsafe"


def _image_block() -> dict[str, Any]:
    return {"type": "image", "base64": PNG, "mime_type": "image/png"}


def test_chat_ecso_around_a_langchain_model_streams_it_progressively() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import BaseMessage

    from ecso_core.steps import current_step
    from langchain_ecso import ChatECSO
    from langchain_ecso.testing import ScriptedChatModel

    pulled: list[str] = []

    def reply(messages: list[BaseMessage], **kwargs: Any) -> str:
        step = current_step()
        if step == "check":
            return "Yes" if "BAD" in messages[-1].text else "No"
        if step == "caption":
            return "a picture"
        if step == "eyes_closed":
            return "I can't help with that part."
        pulled.append("answer")
        return HARMFUL_TAIL

    llm = ChatECSO(model=ScriptedChatModel(reply=reply), config=CONFIG)
    message = [{"role": "user", "content": [{"type": "text", "text": "Describe."}, _image_block()]}]
    chunks = list(llm.stream(message))
    assert "".join(str(c.content) for c in chunks) == EXPECTED
    result_steps = chunks[-1].response_metadata["ecso"]["steps"]
    assert result_steps.count("check") == 4
    assert result_steps[-2:] == ["caption", "eyes_closed"]


def test_an_openai_compatible_server_streams_the_answer_over_sse_and_is_checked_between_deltas() -> None:
    from ecso_core.backends.openai import OpenAIBackend

    bodies: list[dict[str, Any]] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        body = json.loads(http_request.content)
        bodies.append(body)
        prompt = body["messages"][-1]["content"]
        text = prompt if isinstance(prompt, str) else " ".join(p.get("text", "") for p in prompt)
        if body.get("stream"):
            words = re.findall(r"\S+\s*", HARMFUL_TAIL) if "hints" not in text else ["I can't ", "help."]
            events = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
            events.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(words)}})
            sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        reply = "a picture"
        if "Answer yes or no" in text:
            reply = "Yes" if "BAD" in text else "No"
        return httpx.Response(200, json={"choices": [{"message": {"content": reply}, "finish_reason": "stop"}]})

    backend = OpenAIBackend(
        "m", base_url="http://upstream/v1", transport=httpx.MockTransport(handler), logprobs="never"
    )
    events = list(ECSO(backend, CONFIG).stream(request()))
    released = "".join(getattr(e, "text", "") for e in events[:-1])
    assert released == HARMFUL_TAIL[:312] + "\n\nI can't help."
    assert events[-1].result.decision == "unsafe"
    streamed = [b for b in bodies if b.get("stream")]
    assert len(streamed) == 2
    assert streamed[0]["stream_options"] == {"include_usage": True}
    checks = [b for b in bodies if "Answer yes or no" in json.dumps(b)]
    assert len(checks) == 4
    assert not any(b.get("stream") for b in checks)


async def test_a_streaming_inner_langchain_model_never_reaches_event_streams() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.messages import BaseMessage

    from ecso_core.steps import current_step
    from langchain_ecso import ChatECSO
    from langchain_ecso.testing import ScriptedChatModel

    def reply(messages: list[BaseMessage], **kwargs: Any) -> str:
        step = current_step()
        if step == "check":
            return "Yes" if "BAD" in messages[-1].text else "No"
        return {"caption": "a picture", "eyes_closed": "I can't help with that part."}.get(step or "", HARMFUL_TAIL)

    llm = ChatECSO(model=ScriptedChatModel(reply=reply), config=CONFIG)
    message = [{"role": "user", "content": [{"type": "text", "text": "Describe."}, _image_block()]}]
    events = [e async for e in llm.astream_events(message, version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == EXPECTED
    assert "BAD" not in repr(events)
    assert "more0" not in repr(events)
    assert {e["name"] for e in events if e["event"] == "on_chat_model_start"} == {"ChatECSO"}


def test_a_progressive_server_stream_is_bounded_in_time_and_stops_the_model() -> None:
    pytest.importorskip("fastapi")
    import time

    from ecso_core.server import create_app
    from tests.test_server import live

    class Slow(StreamingModel):
        def stream_generate(self, request: Any) -> Any:
            for piece in super().stream_generate(request):
                if isinstance(piece, str):
                    time.sleep(0.05)
                yield piece

    model = Slow(" ".join(f"w{i}" for i in range(400)))
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe the picture."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ],
        "stream": True,
    }
    with live(create_app(ECSO(model, CONFIG), request_timeout_s=1.0)) as url:
        start = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=20) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        elapsed = time.monotonic() - start
        time.sleep(0.3)  # the stopped generation does not go on pulling words
        pulled = model.pulled
    assert elapsed < 3
    errors = [json.loads(line[6:]) for line in lines[:-1] if "error" in json.loads(line[6:])]
    assert len(errors) == 1
    assert "no complete answer within 1 s" in errors[0]["error"]["message"]
    assert pulled < 60


async def test_a_progressive_sse_times_out_on_time_even_while_a_step_blocks() -> None:
    pytest.importorskip("fastapi")
    import time

    from ecso_core import ChatReply
    from ecso_core.server.admission import PixelBudget
    from ecso_core.server.app import _progressive_sse
    from ecso_core.steps import current_step

    class Stall(StreamingModel):
        def stream_generate(self, request: Any) -> Any:
            if current_step() != "answer":
                yield from super().stream_generate(request)
                return
            yield "hello "
            time.sleep(3)  # an upstream stalled between two tokens
            yield "world"
            yield ChatReply(text="hello world", finish_reason="stop")

    guard = ECSO(Stall(""), ECSOConfig(stream="progressive", stream_window_chars=16))
    start = time.monotonic()
    lines = [line async for line in _progressive_sse(guard, request(), "m", False, False, PixelBudget(1), 0, 0.5)]
    assert time.monotonic() - start < 1.5
    assert b"no complete answer within 0.5 s" in lines[-2]
    assert lines[-1] == b"data: [DONE]\n\n"
    assert not any(b"hello" in line for line in lines)  # held back: never judged
