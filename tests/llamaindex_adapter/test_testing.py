"""ScriptedLLM: the signatures of LlamaIndex's FunctionCallingLLM, what a provider would get, scripted by step."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.tools import FunctionTool

from ecso_core import ECSO, ChatRequest, Message, by_step
from llamaindex_ecso import ECSOMultiModalLLM, LlamaIndexBackend
from llamaindex_ecso.testing import ScriptedLLM
from tests.llamaindex_adapter.test_llm import KITCHEN, text_of

OVERRIDDEN = [
    "chat",
    "achat",
    "stream_chat",
    "astream_chat",
    "complete",
    "acomplete",
    "stream_complete",
    "astream_complete",
    "_prepare_chat_with_tools",
    "get_tool_calls_from_response",
]


def shape(cls: type, name: str) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults of the parameters of ``cls.name`` as defined (under any decorator)."""
    function = next(c.__dict__[name] for c in cls.__mro__ if name in c.__dict__)
    function = getattr(function, "__wrapped__", function)  # under the dispatcher's span (wrapt)
    function = inspect.getclosurevars(function).nonlocals.get("f", function)  # under llm_*_callback
    parameters = inspect.signature(function, follow_wrapped=False).parameters.values()
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_every_override_takes_the_arguments_of_the_method_it_doubles(name: str) -> None:
    assert name in ScriptedLLM.__dict__
    assert shape(ScriptedLLM, name) == shape(FunctionCallingLLM, name)


def lookup_recipe(dish: str) -> str:
    """Look up a recipe for a dish."""
    return f"Recipe for {dish}."


TOOL = {"type": "function", "function": {"name": "lookup_recipe", "description": "Look up.", "parameters": {}}}


@pytest.mark.parametrize(("choice", "required"), [("required", True), ("auto", False)])
def test_chat_with_tools_passes_tool_required_and_call_options_on_as_a_provider_would(
    choice: str, required: bool
) -> None:
    llm = ScriptedLLM(reply=by_step(answer="Sure.", check="No"))
    tool = FunctionTool.from_defaults(fn=lookup_recipe)
    backend = LlamaIndexBackend(llm, tools=[tool])
    request = ChatRequest(
        messages=(Message(role="user", content="Find a bread recipe."),),
        tools=(TOOL,),
        tool_choice=choice,
        options={"temperature": 0.25},
    )
    (reply,) = ECSO(backend).generate([request])
    assert reply.text == "Sure."
    (messages, kwargs), *_ = llm.calls
    assert [text_of(m) for m in messages] == ["Find a bread recipe."]
    assert kwargs == {
        "tools": [tool],
        "tool_required": required,
        "allow_parallel_tool_calls": False,
        "temperature": 0.25,
    }
    assert llm.steps == ["answer"]  # a text-only request: no check


def test_complete_passes_its_keywords_and_records_one_call() -> None:
    llm = ScriptedLLM(reply=lambda messages, **kwargs: f"{text_of(messages[-1])} {sorted(kwargs)}")
    assert llm.complete("hello", temperature=0.5).text == "hello ['temperature']"
    assert [(text_of(m[-1]), kwargs) for m, kwargs in llm.calls] == [("hello", {"temperature": 0.5})]


@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_by_step_scripts_ecso_multimodal_llm_and_the_double_records_each_calls_step(mode: str) -> None:
    inner = ScriptedLLM(
        reply=by_step(answer="Step 1: explosives.", check="Yes", caption="a diagram", eyes_closed="I can't help.")
    )
    llm = ECSOMultiModalLLM(llm=inner)
    message = ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(path=KITCHEN), TextBlock(text="How?")])
    response = llm.chat([message]) if mode == "chat" else asyncio.run(llm.achat([message]))
    assert response.message.content == "I can't help."
    assert inner.steps == ["answer", "check", "caption", "eyes_closed"]
    assert [len(calls) for calls, _ in inner.calls] == [1, 1, 1, 1]
