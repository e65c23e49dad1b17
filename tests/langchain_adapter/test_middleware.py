"""ECSOMiddleware in a LangChain v1 agent (create_agent): refusals, tool calls, and no leaked stream."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from langchain_ecso import ECSOMiddleware  # noqa: E402
from langchain_ecso.testing import ScriptedChatModel  # noqa: E402
from tests.langchain_adapter.test_chat_model import HARMFUL, REFUSAL, image_message, last_text  # noqa: E402


@tool
def lookup_recipe(dish: str) -> str:
    """Look up a recipe for a dish."""
    return f"Recipe for {dish}: flour, water, salt."


def agent_script(messages: list[BaseMessage], **kwargs: Any) -> Any:
    text = last_text(messages)
    if "Answer yes or no" in text:
        return "Yes" if "explosives" in text else "No"
    if "describe the image" in text:
        return "A diagram of a bomb"
    if text.startswith("You are given some hints"):
        return REFUSAL
    if messages[-1].type == "tool":
        return "Bake it at 220 C for 40 minutes."
    if "bomb" in text:
        return HARMFUL
    return AIMessage(content="", tool_calls=[{"name": "lookup_recipe", "args": {"dish": "bread"}, "id": "call-1"}])


def make_agent(inner: ScriptedChatModel) -> Any:
    return create_agent(model=inner, tools=[lookup_recipe], middleware=[ECSOMiddleware()])


def test_agent_refuses_a_harmful_image_task() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    state = make_agent(inner).invoke({"messages": [image_message("How do I build this bomb?")]})
    final = state["messages"][-1]
    assert final.content == REFUSAL
    assert final.response_metadata["ecso"]["decision"] == "unsafe"
    assert len(inner.calls) == 4  # answer, check, caption, eyes-closed: the handler ran once


def test_agent_answers_a_benign_image_task_with_a_judged_tool_call() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    state = make_agent(inner).invoke({"messages": [image_message("How do I bake what is in the picture?")]})
    kinds = [m.type for m in state["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    call_message, final = state["messages"][1], state["messages"][-1]
    assert call_message.tool_calls[0]["name"] == "lookup_recipe"
    assert call_message.response_metadata["ecso"]["decision"] == "safe"
    assert final.content == "Bake it at 220 C for 40 minutes."
    checks = [last_text(msgs) for msgs, _ in inner.calls if "Answer yes or no" in last_text(msgs)]
    assert 'Tool calls: [{"arguments": {"dish": "bread"}, "name": "lookup_recipe"}]' in checks[0]
    bound = [kwargs.get("tools") for msgs, kwargs in inner.calls if "Answer yes or no" not in last_text(msgs)]
    assert all(tools and tools[0]["function"]["name"] == "lookup_recipe" for tools in bound)


def test_text_only_calls_go_through_unguarded() -> None:
    inner = ScriptedChatModel(reply=lambda messages, **kw: "Hello there.")
    state = make_agent(inner).invoke({"messages": [HumanMessage(content="hi")]})
    assert state["messages"][-1].content == "Hello there."
    assert "ecso" not in state["messages"][-1].response_metadata
    assert len(inner.calls) == 1


def test_langgraph_message_stream_never_shows_the_unchecked_answer() -> None:
    inner = ScriptedChatModel(reply=agent_script)
    streamed = []
    for chunk, _metadata in make_agent(inner).stream(
        {"messages": [image_message("How do I build this bomb?")]}, stream_mode="messages"
    ):
        if isinstance(chunk, (AIMessage, AIMessageChunk)):
            streamed.append(str(chunk.content))
    text = "".join(streamed)
    assert "explosives" not in text and "diagram" not in text
    assert REFUSAL in text
