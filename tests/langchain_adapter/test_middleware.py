"""ECSOMiddleware in a LangChain v1 agent (create_agent): refusals, tool calls, and no leaked stream."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool

from ecso_core import by_step
from langchain_ecso import ECSOMiddleware
from langchain_ecso.testing import ScriptedChatModel
from tests.langchain_adapter.test_chat_model import HARMFUL, REFUSAL, image_message, last_text


@tool
def lookup_recipe(dish: str) -> str:
    """Look up a recipe for a dish."""
    return f"Recipe for {dish}: flour, water, salt."


def answer(messages: list[BaseMessage]) -> Any:
    if messages[-1].type == "tool":
        return "Bake it at 220 C for 40 minutes."
    if "bomb" in last_text(messages):
        return HARMFUL
    return AIMessage(content="", tool_calls=[{"name": "lookup_recipe", "args": {"dish": "bread"}, "id": "call-1"}])


agent_script = by_step(
    answer=answer,
    check=lambda messages: "Yes" if "explosives" in last_text(messages) else "No",
    caption="A diagram of a bomb",
    eyes_closed=REFUSAL,
)


def make_agent(inner: ScriptedChatModel) -> Any:
    return create_agent(model=inner, tools=[lookup_recipe], middleware=[ECSOMiddleware()])


def test_agent_refuses_a_harmful_image_task() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    state = make_agent(inner).invoke({"messages": [image_message("How do I build this bomb?")]})
    final = state["messages"][-1]
    assert final.content == REFUSAL
    assert final.response_metadata["ecso"]["decision"] == "unsafe"
    assert inner.steps == ["answer", "check", "caption", "eyes_closed"]  # the handler ran once


def test_agent_answers_a_benign_image_task_with_a_judged_tool_call() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    state = make_agent(inner).invoke({"messages": [image_message("How do I bake what is in the picture?")]})
    kinds = [m.type for m in state["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    call_message, final = state["messages"][1], state["messages"][-1]
    assert call_message.tool_calls[0]["name"] == "lookup_recipe"
    assert call_message.response_metadata["ecso"]["decision"] == "safe"
    assert final.content == "Bake it at 220 C for 40 minutes."
    assert inner.steps == ["answer", "check", "answer", "check"]  # both model calls of the agent are judged
    checks = [last_text(msgs) for (msgs, _), step in zip(inner.calls, inner.steps, strict=True) if step == "check"]
    assert checks[0].startswith(
        'QUERY:\nHow do I bake what is in the picture?\n\nRESPONSE:\nTool calls: [{"arguments": {"dish": "bread"}, '
        '"name": "lookup_recipe"}]\n\n'
    )
    bound = [kw.get("tools") for (_, kw), step in zip(inner.calls, inner.steps, strict=True) if step == "answer"]
    assert [[t["function"]["name"] for t in tools] for tools in bound] == [["lookup_recipe"], ["lookup_recipe"]]


def test_text_only_calls_go_through_unguarded() -> None:
    inner = ScriptedChatModel(reply=lambda messages, **kw: "Hello there.")
    state = make_agent(inner).invoke({"messages": [HumanMessage(content="hi")]})
    assert state["messages"][-1].content == "Hello there."
    assert "ecso" not in state["messages"][-1].response_metadata
    assert inner.steps == [None]  # called outside the guard


def test_langgraph_message_stream_never_shows_the_unchecked_answer() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    streamed = []
    for chunk, _metadata in make_agent(inner).stream(
        {"messages": [image_message("How do I build this bomb?")]}, stream_mode="messages"
    ):
        if isinstance(chunk, (AIMessage, AIMessageChunk)):
            streamed.append(str(chunk.content))
    text = "".join(streamed)
    assert "explosives" not in text
    assert "diagram" not in text
    assert REFUSAL in text
