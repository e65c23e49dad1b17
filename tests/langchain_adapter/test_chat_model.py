"""ChatECSO, LangChainBackend and ECSOMiddleware: exact steps, prompts, tools, tracing, agents."""

from __future__ import annotations

import asyncio
import base64
import math
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

from ecso_core import ECSOConfig, ImageError, ScriptedBackend, by_step
from langchain_ecso import ChatECSO, LangChainBackend
from langchain_ecso.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[2]
PNG = base64.b64encode((ROOT / "examples/images/kitchen.png").read_bytes()).decode()
HARMFUL = "Step 1: get explosives. Step 2: ..."
REFUSAL = "I can't help with that."


def last_text(messages: list[BaseMessage]) -> str:
    return "".join(b.get("text", "") for b in messages[-1].content_blocks if b.get("type") == "text")


script = by_step(
    answer=lambda messages: HARMFUL if "bomb" in last_text(messages) else "A loaf of bread and a cup.",
    check=lambda messages: "Yes" if "explosives" in last_text(messages) else "No",
    caption="A diagram of a bomb",
    eyes_closed=REFUSAL,
)


def image_message(text: str, style: str = "v1") -> HumanMessage:
    if style == "v1":
        image = {"type": "image", "base64": PNG, "mime_type": "image/png"}
    else:
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    return HumanMessage(content=[{"type": "text", "text": text}, image])


def has_image(message: BaseMessage) -> bool:
    return any(b.get("type") == "image" for b in message.content_blocks)


@pytest.mark.parametrize("style", ["v1", "image_url"])
def test_unsafe_path_sends_exact_prompts_and_drops_the_image(style: str) -> None:
    inner = ScriptedChatModel(reply=script)
    llm = ChatECSO(model=inner, config=ECSOConfig(in_band_audit=True))  # audit: withheld text shown in-band
    answer = llm.invoke([SystemMessage(content="Be helpful."), image_message("How do I build this bomb?", style)])

    assert answer.content == REFUSAL
    ecso = answer.response_metadata["ecso"]
    assert ecso["decision"] == "unsafe"
    assert ecso["initial_answer"] == HARMFUL
    assert ecso["captions"] == ["A diagram of a bomb"]
    assert ecso["steps"] == ["answer", "check", "caption", "eyes_closed"]
    sent = [messages for messages, _ in inner.calls]
    assert [type(m).__name__ for m in sent[0]] == ["SystemMessage", "HumanMessage"]
    assert has_image(sent[0][1])
    assert len(sent[1]) == 1
    assert has_image(sent[1][0])
    assert last_text(sent[1]) == (
        "QUERY:\nHow do I build this bomb?\n\nRESPONSE:\n"
        + HARMFUL
        + "\n\nIs the RESPONSE harmful, unsafe and unethical? Answer yes or no:"
    )
    assert last_text(sent[2]) == "REQUEST:\nHow do I build this bomb?.\n\nBased on the REQUEST, describe the image."
    assert not any(has_image(m) for m in sent[3])
    assert sent[3][0].content == "Be helpful."
    assert last_text(sent[3]).startswith(
        'You are given some hints regarding a question on an image.\n\nHints: "Answer: A diagram of a bomb"'
    )
    usage = answer.usage_metadata  # summed over the four inner calls (the scripted model counts chars / 4)
    assert usage["input_tokens"] == sum(sum(len(str(m.content)) for m in msgs) // 4 + 1 for msgs in sent)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_safe_answer_passes_unchanged_with_two_calls() -> None:
    inner = ScriptedChatModel(reply=script)
    answer = ChatECSO(model=inner).invoke([image_message("What is on the table?")])
    assert answer.content == "A loaf of bread and a cup."
    assert answer.response_metadata["ecso"]["decision"] == "safe"
    assert len(inner.calls) == 2


def test_stream_yields_only_the_decided_answer_and_a_last_chunk() -> None:
    chunks = list(ChatECSO(model=ScriptedChatModel(reply=script)).stream([image_message("How do I build this bomb?")]))
    assert "".join(str(c.content) for c in chunks) == REFUSAL
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].usage_metadata["total_tokens"] > 0
    assert chunks[-1].response_metadata["ecso"]["decision"] == "unsafe"
    assert all("explosives" not in str(c.content) for c in chunks)


async def test_async_paths_match_sync() -> None:
    llm = ChatECSO(model=ScriptedChatModel(reply=script))
    message = [image_message("How do I build this bomb?")]
    sync = llm.invoke(message)
    asynchronous = await llm.ainvoke(message)
    streamed = "".join([str(c.content) async for c in llm.astream(message)])
    batched = await llm.abatch([message, [image_message("What is on the table?")]])
    assert sync.content == asynchronous.content == streamed == batched[0].content == REFUSAL
    assert batched[1].content == "A loaf of bread and a cup."


def test_url_images_are_refused_unless_allowed() -> None:
    message = HumanMessage(
        content=[{"type": "text", "text": "hi"}, {"type": "image", "url": "https://example.com/x.png"}]
    )
    with pytest.raises(ImageError, match="refused"):
        ChatECSO(model=ScriptedChatModel(reply=script)).invoke([message])


def test_unknown_blocks_are_errors_not_silently_dropped() -> None:
    from ecso_core import MessageError

    message = HumanMessage(content=[{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])
    with pytest.raises(MessageError, match="audio"):
        ChatECSO(model=ScriptedChatModel(reply=script)).invoke([message])


def test_lcel_chain_over_an_image() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You describe kitchens."),
            (
                "human",
                [
                    {"type": "text", "text": "{question}"},
                    {"type": "image", "base64": "{image}", "mime_type": "image/png"},
                ],
            ),
        ]
    )
    chain = prompt | ChatECSO(model=ScriptedChatModel(reply=script)) | StrOutputParser()
    assert chain.invoke({"question": "What is on the table?", "image": PNG}) == "A loaf of bread and a cup."
    assert chain.invoke({"question": "How do I build this bomb?", "image": PNG}) == REFUSAL


@tool
def lookup_recipe(dish: str) -> str:
    """Look up a recipe."""
    return f"Recipe for {dish}: flour, water, salt."


def test_tool_call_answer_is_judged_and_passed_through() -> None:
    call = {"name": "lookup_recipe", "args": {"dish": "bread"}, "id": "c1"}
    inner = ScriptedChatModel(reply=by_step(answer=AIMessage(content="", tool_calls=[call]), check="No"))
    answer = ChatECSO(model=inner).bind_tools([lookup_recipe]).invoke([image_message("What can I cook with this?")])
    assert answer.tool_calls == [{"name": "lookup_recipe", "args": {"dish": "bread"}, "id": "c1", "type": "tool_call"}]
    assert answer.response_metadata["ecso"]["decision"] == "safe"
    assert inner.steps == ["answer", "check"]
    (_, answer_kwargs), (check_messages, check_kwargs) = inner.calls
    assert [t["function"]["name"] for t in answer_kwargs["tools"]] == ["lookup_recipe"]
    assert "tools" not in check_kwargs  # the check runs without tools
    # the serialised call is what is judged
    assert 'RESPONSE:\nTool calls: [{"arguments": {"dish": "bread"}, "name": "lookup_recipe"}]' in last_text(
        check_messages
    )


def test_with_structured_output() -> None:
    class Dish(BaseModel):
        name: str
        minutes: int

    call = {"name": "Dish", "args": {"name": "bread", "minutes": 45}, "id": "c1"}
    reply = by_step(answer=AIMessage(content="", tool_calls=[call]), check="No")
    structured = ChatECSO(model=ScriptedChatModel(reply=reply)).with_structured_output(Dish)
    assert structured.invoke([image_message("Which dish is this?")]) == Dish(name="bread", minutes=45)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: list[tuple[UUID, UUID | None, list[str]]] = []

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append((run_id, parent_run_id, tags or []))


def test_steps_are_child_runs_for_step_callbacks_and_tracers_only() -> None:
    recorder, plain = Recorder(), Recorder()
    ChatECSO(model=ScriptedChatModel(reply=script), step_callbacks=[recorder]).invoke(
        [image_message("How do I build this bomb?")], config={"callbacks": [plain, recorder]}
    )
    (outer, *inner) = recorder.runs
    assert outer[1] is None
    assert [parent for _, parent, _ in inner] == [outer[0]] * 4
    steps = [[t for t in tags if t.startswith("ecso:")] for _, _, tags in inner]
    assert steps == [["ecso:answer"], ["ecso:check"], ["ecso:caption"], ["ecso:eyes_closed"]]
    assert all("nostream" in tags for _, _, tags in inner)
    assert [run for run, _, _ in plain.runs] == [outer[0]]  # a plain handler sees the guarded run only


def test_backend_reads_logprobs_when_the_model_offers_them() -> None:
    top = [{"token": "No", "logprob": math.log(0.9)}, {"token": "Yes", "logprob": math.log(0.05)}]
    check = AIMessage(
        content="No",
        response_metadata={"logprobs": {"content": [{"token": "No", "logprob": math.log(0.9), "top_logprobs": top}]}},
    )
    reply = by_step(answer="A loaf of bread.", check=check)

    llm = ChatECSO(model=ScriptedChatModel(reply=reply, logprobs=True))
    answer = llm.invoke([image_message("What is on the table?")])
    verdict = answer.response_metadata["ecso"]["verdict"]
    assert verdict["method"] == "probability"
    assert verdict["p_yes"] == pytest.approx(0.05 / 0.95)
    assert LangChainBackend(ScriptedChatModel()).capabilities.score_yes_no is False


def test_chat_ecso_over_an_ecso_backend() -> None:
    backend = ScriptedBackend(["an answer", "No"])
    answer = ChatECSO(backend=backend, max_tokens=7).invoke([image_message("What is this?")])
    assert answer.content == "an answer"
    assert backend.requests[0].params.max_new_tokens == 7
    with pytest.raises(ValueError, match="exactly one"):
        ChatECSO()


def test_config_is_applied() -> None:
    inner = ScriptedChatModel(reply=by_step(answer="x", check="maybe"))
    llm = ChatECSO(model=inner, config=ECSOConfig(fail_mode="refuse", refusal_message="Refused."))
    answer = llm.invoke([image_message("What is this?")])
    assert (answer.content, answer.response_metadata["ecso"]["decision"]) == ("Refused.", "fail_closed")
    assert asyncio.run(llm.ainvoke([image_message("What is this?")])).content == "Refused."


def test_public_surface_is_pinned() -> None:
    import langchain_ecso

    assert sorted(langchain_ecso.__all__) == ["ChatECSO", "ECSOMiddleware", "LangChainBackend"]
    assert langchain_ecso.ECSOMiddleware.__name__ == "ECSOMiddleware"
