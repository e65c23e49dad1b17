"""ScriptedChatModel: scripted by ECSO step (by_step), also when LangChain batches in its thread pool."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import BaseMessage, HumanMessage

from ecso_core import ECSO, ChatRequest, ImagePart, Message, TextPart, by_step
from langchain_ecso import ChatECSO, LangChainBackend
from langchain_ecso.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[2]
PNG_BYTES = (ROOT / "examples/images/kitchen.png").read_bytes()
IMAGE = {"type": "image", "base64": base64.b64encode(PNG_BYTES).decode(), "mime_type": "image/png"}


def last_text(messages: list[BaseMessage]) -> str:
    return "".join(b.get("text", "") for b in messages[-1].content_blocks if b.get("type") == "text")


def guarded_script() -> Any:
    return by_step(
        answer=lambda messages: f"Answer: {last_text(messages)}",
        check=lambda messages: "Yes" if "bomb" in last_text(messages) else "No",
        caption="a diagram",
        eyes_closed="I can't help with that.",
    )


def image_request(query: str) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=(ImagePart(image=PNG_BYTES), TextPart(text=query))),))


def test_by_step_scripts_chat_ecso_and_the_double_records_each_calls_step() -> None:
    inner = ScriptedChatModel(reply=guarded_script())
    message = HumanMessage(content=[{"type": "text", "text": "Build a bomb?"}, IMAGE])
    answer = ChatECSO(model=inner).invoke([message])
    assert answer.content == "I can't help with that."
    assert answer.response_metadata["ecso"]["decision"] == "unsafe"
    assert inner.steps == ["answer", "check", "caption", "eyes_closed"]
    assert [last_text(messages) for messages, _ in inner.calls][0] == "Build a bomb?"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batched_steps_reach_the_script_with_their_step(mode: str) -> None:
    """The backend sends a round as one ``batch``/``abatch``: LangChain's workers must see the step."""
    inner = ScriptedChatModel(reply=guarded_script())
    guard = ECSO(LangChainBackend(inner))
    requests = [image_request("Build a bomb?"), image_request("Bake bread?"), image_request("Bake a cake?")]
    results = guard.run_batch(requests) if mode == "sync" else asyncio.run(guard.arun_batch(requests))
    assert [(r.decision, r.answer) for r in results] == [
        ("unsafe", "I can't help with that."),
        ("safe", "Answer: Bake bread?"),
        ("safe", "Answer: Bake a cake?"),
    ]
    assert sorted(inner.steps) == sorted(["answer"] * 3 + ["check"] * 3 + ["caption", "eyes_closed"])
    assert inner.steps[:3] == ["answer"] * 3
    assert inner.steps[3:6] == ["check"] * 3


def test_chat_ecso_batch_runs_each_input_through_the_guard() -> None:
    inner = ScriptedChatModel(reply=guarded_script())
    llm = ChatECSO(model=inner)
    inputs = [[HumanMessage(content=[{"type": "text", "text": q}, IMAGE])] for q in "ab"]
    assert [m.content for m in llm.batch(inputs)] == ["Answer: a", "Answer: b"]
    assert sorted(inner.steps) == ["answer", "answer", "check", "check"]


def test_the_script_gets_the_keywords_it_names_and_its_type_errors_surface() -> None:
    seen: list[Any] = []

    def named(messages: list[BaseMessage], tools: Any = None) -> str:
        seen.append(tools)
        return "ok"

    def broken(messages: list[BaseMessage]) -> str:
        seen.append("called")
        raise TypeError("inside the script")

    tools = [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {}}}]
    assert ScriptedChatModel(reply=named).bind(tools=tools).invoke("hi").content == "ok"
    assert ScriptedChatModel(reply=lambda messages: "plain").bind(tools=tools).invoke("hi").content == "plain"
    assert seen == [tools]
    with pytest.raises(TypeError, match="inside the script"):
        ScriptedChatModel(reply=broken).invoke("hi")
    assert seen == [tools, "called"]  # called once: a TypeError is never retried without the keywords


def test_calls_outside_the_guard_get_the_default() -> None:
    inner = ScriptedChatModel(reply=by_step(check="No", default="direct"))
    assert inner.invoke("hi").content == "direct"
    assert inner.steps == [None]
