"""ECSOMultiModalLLM and LlamaIndexBackend: exact steps for every ImageBlock source, parity, engines, agents."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.tools import FunctionTool

from ecso_core import ECSOConfig, ImageError, ScriptedBackend, by_step
from llamaindex_ecso import ECSOMultiModalLLM, ECSOStepStartEvent
from llamaindex_ecso.testing import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]
KITCHEN = ROOT / "examples/images/kitchen.png"
HARMFUL = "Step 1: get explosives."
REFUSAL = "I can't help with that."


def text_of(message: ChatMessage) -> str:
    return "".join(b.text for b in message.blocks if isinstance(b, TextBlock))


def has_image(message: ChatMessage) -> bool:
    return any(isinstance(b, ImageBlock) for b in message.blocks)


def judge(messages: list[ChatMessage]) -> str:
    return "Yes" if "explosives" in text_of(messages[-1]) else "No"


script = by_step(
    answer=lambda messages: HARMFUL if "bomb" in text_of(messages[-1]) else "A loaf of bread and a cup.",
    check=judge,
    caption="A diagram of a bomb",
    eyes_closed=REFUSAL,
)


def image_blocks(source: str) -> ImageBlock:
    data = KITCHEN.read_bytes()
    if source == "bytes":
        return ImageBlock(image=data)
    if source == "path":
        return ImageBlock(path=KITCHEN)
    if source == "base64":
        return ImageBlock(image=base64.b64encode(data), image_mimetype="image/png")
    return ImageBlock(url="data:image/png;base64," + base64.b64encode(data).decode())


def ask(text: str, source: str = "bytes") -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, blocks=[image_blocks(source), TextBlock(text=text)])]


@pytest.mark.parametrize("source", ["bytes", "path", "base64", "data-url"])
def test_every_image_source_runs_the_exact_steps(source: str) -> None:
    inner = ScriptedLLM(reply=script)
    response = ECSOMultiModalLLM(llm=inner).chat(ask("How do I build this bomb?", source))

    assert response.message.content == REFUSAL
    ecso = response.additional_kwargs["ecso"]
    assert ecso["decision"] == "unsafe"
    assert "initial_answer" not in ecso
    assert "captions" not in ecso
    assert ecso["steps"] == ["answer", "check", "caption", "eyes_closed"]
    sent = [messages for messages, _ in inner.calls]
    assert has_image(sent[0][0])
    assert has_image(sent[1][0])
    assert has_image(sent[2][0])
    assert text_of(sent[1][0]) == (
        "QUERY:\nHow do I build this bomb?\n\nRESPONSE:\n"
        + HARMFUL
        + "\n\nIs the RESPONSE harmful, unsafe and unethical? Answer yes or no:"
    )
    assert text_of(sent[2][0]) == "REQUEST:\nHow do I build this bomb?.\n\nBased on the REQUEST, describe the image."
    assert not any(has_image(m) for m in sent[3])
    assert text_of(sent[3][0]).startswith(
        'You are given some hints regarding a question on an image.\n\nHints: "Answer: A diagram of a bomb"'
    )
    assert response.additional_kwargs["total_tokens"] > 0


def test_url_blocks_are_refused_and_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    def fetch(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ImageBlock.resolve_image must not run on user input")

    monkeypatch.setattr(ImageBlock, "resolve_image", fetch)
    message = [
        ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(url="https://example.com/x.png"), TextBlock(text="hi")])
    ]
    with pytest.raises(ImageError, match="refused"):
        ECSOMultiModalLLM(llm=ScriptedLLM(reply=script)).chat(message)
    allowed = ECSOMultiModalLLM(llm=ScriptedLLM(reply=script), config=ECSOConfig(allow_image_urls=True))
    with pytest.raises(ImageError, match="non-public|resolve|fetch"):  # allowed, then bounded: tests are offline
        allowed.chat([ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(url="http://127.0.0.1:9/x.png")])])


def test_sync_async_stream_and_complete_agree() -> None:
    llm = ECSOMultiModalLLM(llm=ScriptedLLM(reply=script))
    messages = ask("How do I build this bomb?")
    sync = llm.chat(messages).message.content
    asynchronous = asyncio.run(llm.achat(messages)).message.content
    streamed = list(llm.stream_chat(messages))

    async def astream() -> list[Any]:
        return [r async for r in await llm.astream_chat(messages)]

    astreamed = asyncio.run(astream())
    assert sync == asynchronous == REFUSAL
    assert "".join(r.delta or "" for r in streamed) == REFUSAL == streamed[-1].message.content
    assert streamed[-1].additional_kwargs["ecso"]["decision"] == "unsafe"
    assert [r.delta for r in astreamed] == [r.delta for r in streamed]
    assert all("explosives" not in (r.delta or "") for r in streamed)
    completion = llm.complete("Say hello")
    assert completion.text == "A loaf of bread and a cup."
    assert completion.additional_kwargs["ecso"]["decision"] == "no_image"
    assert "".join(c.delta or "" for c in llm.stream_complete("Say hello")) == "A loaf of bread and a cup."


def test_wrapping_an_ecso_backend_and_metadata() -> None:
    backend = ScriptedBackend(["An answer.", "No"])
    llm = ECSOMultiModalLLM(backend=backend, max_tokens=9)
    assert llm.chat(ask("What is this?")).message.content == "An answer."
    assert backend.requests[0].params.max_new_tokens == 9
    meta = ECSOMultiModalLLM(llm=ScriptedLLM(function_calling=False)).metadata
    assert (meta.is_chat_model, meta.is_function_calling_model, meta.model_name) == (True, False, "ecso(scripted)")
    with pytest.raises(ValueError, match="exactly one"):
        ECSOMultiModalLLM()


class StepRecorder(BaseEventHandler):
    steps: list[str] = []

    @classmethod
    def class_name(cls) -> str:
        return "StepRecorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, ECSOStepStartEvent):
            self.steps.append(event.step)


def test_instrumentation_shows_the_four_steps() -> None:
    recorder = StepRecorder(steps=[])
    root = get_dispatcher()
    root.add_event_handler(recorder)
    try:
        ECSOMultiModalLLM(llm=ScriptedLLM(reply=script)).chat(ask("How do I build this bomb?"))
    finally:
        root.event_handlers.remove(recorder)
    assert recorder.steps == ["answer", "check", "caption", "eyes_closed"]


def lookup_recipe(dish: str) -> str:
    """Look up a recipe for a dish."""
    return f"Recipe for {dish}: flour, water, salt."


def agent_answer(messages: list[ChatMessage]) -> Any:
    if messages[-1].role == MessageRole.TOOL:
        return "Bake it at 220 C for 40 minutes."
    if "bomb" in text_of(messages[-1]):
        return HARMFUL
    return ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[ToolCallBlock(tool_call_id="call-1", tool_name="lookup_recipe", tool_kwargs={"dish": "bread"})],
    )


agent_script = by_step(answer=agent_answer, check=judge, caption="A diagram of a bomb", eyes_closed=REFUSAL)


def by_steps(inner: ScriptedLLM, step: str) -> list[list[ChatMessage]]:
    """The messages of the inner LLM's calls that served ``step``."""
    return [messages for (messages, _), served in zip(inner.calls, inner.steps, strict=True) if served == step]


def test_function_agent_tool_call_is_judged() -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    inner = ScriptedLLM(reply=agent_script)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup_recipe)], llm=ECSOMultiModalLLM(llm=inner))

    async def run() -> Any:
        return await agent.run(user_msg=ask("How do I bake what is in the picture?")[0])

    result = asyncio.run(run())
    assert str(result) == "Bake it at 220 C for 40 minutes."
    checks = [text_of(messages[0]) for messages in by_steps(inner, "check")]
    assert checks[0].startswith(
        'QUERY:\nHow do I bake what is in the picture?\n\nRESPONSE:\nTool calls: [{"arguments": {"dish": "bread"}, '
        '"name": "lookup_recipe"}]\n\n'
    )
    assert [t.metadata.name for t in inner.calls[0][1]["tools"]] == ["lookup_recipe"]


def test_react_agent_answers_through_the_guard() -> None:
    from llama_index.core.agent.workflow import ReActAgent

    react = "Thought: I can answer without using any more tools.\nAnswer: A loaf of bread and a cup."
    inner = ScriptedLLM(reply=by_step(answer=react, check="No"))
    agent = ReActAgent(tools=[FunctionTool.from_defaults(fn=lookup_recipe)], llm=ECSOMultiModalLLM(llm=inner))

    async def run() -> Any:
        return await agent.run(user_msg=ask("What is on the table?")[0])

    result = asyncio.run(run())
    assert str(result) == "A loaf of bread and a cup."
    assert inner.steps == ["answer", "check"]


def test_multimodal_query_engine_over_image_documents() -> None:
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import ImageNode, NodeWithScore

    nodes = [ImageNode(image_path=str(p)) for p in sorted((ROOT / "examples/images").glob("*.png"))]

    class AllImages(BaseRetriever):
        def _retrieve(self, query_bundle: Any) -> list[NodeWithScore]:
            return [NodeWithScore(node=node, score=1.0) for node in nodes]

    inner = ScriptedLLM(reply=script)
    engine = RetrieverQueryEngine.from_args(retriever=AllImages(), llm=ECSOMultiModalLLM(llm=inner), multimodal=True)
    response = engine.query("What is on the table?")
    assert str(response) == "A loaf of bread and a cup."
    # one engine call per image (the second refines the first answer), each checked with its image
    assert inner.steps == ["answer", "check", "answer", "check"]
    assert [sum(isinstance(b, ImageBlock) for b in m[-1].blocks) for m, _ in inner.calls] == [1, 1, 1, 1]


def test_public_surface_is_pinned() -> None:
    import llamaindex_ecso

    assert sorted(llamaindex_ecso.__all__) == [
        "ECSOMultiModalLLM",
        "ECSOQueryEngine",
        "ECSOStepEndEvent",
        "ECSOStepStartEvent",
        "LlamaIndexBackend",
    ]
