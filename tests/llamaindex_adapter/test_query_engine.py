"""ECSOQueryEngine: real query engines over in-memory image nodes show the decision in ``Response.metadata``.

The wrapped LLM answers the bomb question with ANSWER-MARK, judges with CHECK-MARK and captions with
CAPTION-MARK; a flagged answer's metadata carries the decision and none of them. Files read as text
(SimpleDirectoryReader without llama-index-readers-file) are refused before any model call.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import SimpleDirectoryReader, SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.embeddings import MockEmbedding, MockMultiModalEmbedding
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import ImageDocument, ImageNode, NodeWithScore, QueryBundle, TextNode
from PIL import Image

from ecso_core import ECSOConfig, ImageError, ImageLimits, MessageError, by_step
from llamaindex_ecso import ECSOMultiModalLLM, ECSOQueryEngine
from llamaindex_ecso._convert import to_ecso_request
from llamaindex_ecso.testing import ScriptedLLM
from tests.llamaindex_adapter.test_llm import KITCHEN, ROOT, text_of

STEPS = ROOT / "examples/images/steps.png"
MARKS = ("ANSWER-MARK", "CHECK-MARK", "CAPTION-MARK")
REFUSAL = "I can't help with that."
BREAD = "A loaf of bread and a cup."
SAFE = {
    "decision": "safe",
    "verdict": {
        "unsafe": False,
        "method": "text",
        "profile": "ecso",
        "categories": [],
        "p_yes": None,
        "mass": None,
        "fallback": None,
        "window": None,
        "windows": 1,
        "raw": "No",
    },
    "prompt_set": "ecso-paper",
    "steps": ["answer", "check"],
}
UNSAFE = {
    "decision": "unsafe",
    "verdict": {
        "unsafe": True,
        "method": "text",
        "profile": "ecso",
        "categories": [],
        "p_yes": None,
        "mass": None,
        "fallback": None,
        "window": 0,
        "windows": 1,
    },
    "prompt_set": "ecso-paper",
    "steps": ["answer", "check", "caption", "eyes_closed"],
}
SMALL = ECSOConfig(image_limits=ImageLimits(max_pixels=100))  # refuses every example image
NO_IMAGE = {"decision": "no_image", "verdict": None, "prompt_set": "ecso-paper", "steps": ["answer"]}


def answer(messages: list[ChatMessage]) -> str:
    """A harmful answer to questions about bombs (not when refining a refusal), else a benign one."""
    text = text_of(messages[-1])
    return "Here is how: ANSWER-MARK step one." if "bomb" in text and "Original Answer" not in text else BREAD


def judge(messages: list[ChatMessage]) -> str:
    """Flags the harmful answer (only it holds ANSWER-MARK)."""
    return "Yes, CHECK-MARK" if "ANSWER-MARK" in text_of(messages[-1]) else "No"


def scripted_vlm(check: Any = judge) -> Any:
    """A scripted VLM: answers with ``answer``, judges with ``check``, captions, refuses with its eyes closed."""
    return by_step(answer=answer, check=check, caption="CAPTION-MARK a diagram", eyes_closed=REFUSAL)


vlm = scripted_vlm()


class ListRetriever(BaseRetriever):
    """Returns the given nodes for every query."""

    def __init__(self, nodes: list[Any]) -> None:
        self.nodes = nodes
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=node, score=1.0) for node in self.nodes]


def image_nodes(*paths: Any) -> list[ImageNode]:
    return [ImageNode(image_path=str(path), metadata={"file_name": path.name}) for path in paths]


def engine(
    nodes: list[Any], inner: ScriptedLLM | None = None, config: ECSOConfig | None = None, **kwargs: Any
) -> ECSOQueryEngine:
    llm = ECSOMultiModalLLM(llm=inner or ScriptedLLM(reply=vlm), config=config or ECSOConfig())
    return ECSOQueryEngine(RetrieverQueryEngine.from_args(ListRetriever(nodes), llm=llm, multimodal=True, **kwargs))


def node_metadata(nodes: list[Any]) -> dict[str, Any]:
    return {node.node_id: node.metadata for node in nodes}


def test_a_safe_answer_shows_its_decision_in_the_metadata() -> None:
    nodes = image_nodes(KITCHEN)
    inner = ScriptedLLM(reply=vlm)
    response = engine(nodes, inner).query("What is on the table?")
    assert isinstance(response, Response)
    assert response.response == BREAD
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [SAFE]}
    assert [n.node for n in response.source_nodes] == nodes
    assert nodes[0].metadata == {"file_name": "kitchen.png"}  # the index's nodes are left as they were
    # the same dict as the LLM's own response carries
    direct = ECSOMultiModalLLM(llm=ScriptedLLM(reply=vlm)).chat(
        [ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(path=KITCHEN), TextBlock(text="What is this?")])]
    )
    assert direct.additional_kwargs["ecso"] == SAFE
    assert inner.steps == ["answer", "check"]  # the wrapper adds no model call


def test_a_flagged_answer_shows_the_decision_and_no_withheld_text() -> None:
    nodes = image_nodes(STEPS)
    response = engine(nodes).query("How do I build the bomb in the image?")
    assert response.response == REFUSAL
    assert response.metadata == {**node_metadata(nodes), "ecso": UNSAFE, "ecso_calls": [UNSAFE]}
    assert [mark for mark in MARKS if mark in repr(response)] == []
    assert [mark for mark in MARKS if mark in repr(response.metadata)] == []


@pytest.mark.parametrize("streaming", [False, True])
def test_a_failed_check_shows_fail_closed_and_no_withheld_text(streaming: bool) -> None:
    unclear = scripted_vlm(check="CHECK-MARK: unclear")
    nodes = image_nodes(KITCHEN)
    response = engine(nodes, ScriptedLLM(reply=unclear), streaming=streaming).query("What is on the table?")
    assert str(response) == REFUSAL
    decision = response.metadata["ecso"]
    assert decision == {**UNSAFE, "decision": "fail_closed", "verdict": {**UNSAFE["verdict"], "unsafe": None}}
    assert response.metadata["ecso_calls"] == [decision]
    assert [mark for mark in (*MARKS, BREAD) if mark in repr(response.metadata)] == []


def test_every_guarded_call_of_a_refining_query_is_listed_and_the_last_one_is_the_answers() -> None:
    # Multimodal compact mode sends one image per call and refines: the first answer is flagged,
    # the refinement (with the second image) is safe and becomes the response.
    nodes = image_nodes(STEPS, KITCHEN)
    response = engine(nodes).query("How do I build the bomb in the image?")
    assert response.response == BREAD
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [UNSAFE, SAFE]}
    assert [mark for mark in MARKS if mark in repr(response)] == []


def test_a_multimodal_vector_index_query_engine_shows_the_decision() -> None:
    # ImageDocuments as llama-index-readers-file's ImageReader makes them (via SimpleDirectoryReader);
    # mock embeddings stand in for CLIP; the engine is the one LlamaIndex 0.14 recommends for images.
    documents = [ImageDocument(image_path=str(p), metadata={"file_path": str(p)}) for p in (KITCHEN, STEPS)]
    index = MultiModalVectorStoreIndex.from_documents(
        documents, embed_model=MockEmbedding(embed_dim=4), image_embed_model=MockMultiModalEmbedding(embed_dim=4)
    )
    llm = ECSOMultiModalLLM(llm=ScriptedLLM(reply=vlm))
    retriever = index.as_retriever(image_similarity_top_k=2)
    query_engine = ECSOQueryEngine(RetrieverQueryEngine.from_args(retriever, llm=llm, multimodal=True))
    response = query_engine.query("How do I build the bomb in the image?")
    assert response.response == BREAD
    nodes = [n.node for n in response.source_nodes]
    assert sorted(n.image_path for n in nodes) == [str(KITCHEN), str(STEPS)]
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [UNSAFE, SAFE]}


async def test_async_queries_run_concurrently_each_see_only_their_own_calls() -> None:
    safe_engine, unsafe_engine = engine(image_nodes(KITCHEN)), engine(image_nodes(STEPS))
    safe, unsafe = await asyncio.gather(
        safe_engine.aquery("What is on the table?"), unsafe_engine.aquery("How do I build the bomb?")
    )
    assert (safe.response, safe.metadata["ecso"], safe.metadata["ecso_calls"]) == (BREAD, SAFE, [SAFE])
    assert (unsafe.response, unsafe.metadata["ecso"], unsafe.metadata["ecso_calls"]) == (REFUSAL, UNSAFE, [UNSAFE])


def test_a_streamed_answer_gets_its_decision_when_the_stream_ends() -> None:
    nodes = image_nodes(STEPS)
    response = engine(nodes, streaming=True).query("How do I build the bomb in the image?")
    assert isinstance(response, StreamingResponse)
    assert response.metadata == node_metadata(nodes)  # nothing decided yet: the guard runs as it is read
    assert "".join(response.response_gen) == REFUSAL
    assert response.metadata == {**node_metadata(nodes), "ecso": UNSAFE, "ecso_calls": [UNSAFE]}


def test_a_streamed_refinement_lists_the_calls_before_and_during_the_stream() -> None:
    nodes = image_nodes(STEPS, KITCHEN)
    response = engine(nodes, streaming=True).query("How do I build the bomb in the image?")
    assert str(response) == BREAD
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [UNSAFE, SAFE]}


async def test_an_async_streamed_answer_gets_its_decision_when_the_stream_ends() -> None:
    nodes = image_nodes(KITCHEN)
    response = await engine(nodes, streaming=True).aquery("What is on the table?")
    assert isinstance(response, AsyncStreamingResponse)
    assert (await response.get_response()).response == BREAD
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [SAFE]}


def test_an_index_query_engine_over_text_passes_through_with_decision_no_image() -> None:
    node = TextNode(text="Bread goes well with butter.", id_="bread")
    llm = ECSOMultiModalLLM(llm=ScriptedLLM(reply=vlm))
    response = ECSOQueryEngine(SummaryIndex([node]).as_query_engine(llm=llm)).query("What goes with bread?")
    assert response.response == BREAD
    assert response.metadata == {"bread": {}, "ecso": NO_IMAGE, "ecso_calls": [NO_IMAGE]}


def test_nothing_retrieved_means_no_guarded_call() -> None:
    inner = ScriptedLLM(reply=vlm)
    response = engine([], inner).query("What is on the table?")
    assert response.response == "Empty Response"
    assert response.metadata == {"ecso": None, "ecso_calls": []}
    assert inner.calls == []


def test_synthesize_over_given_nodes_shows_the_decision() -> None:
    nodes = image_nodes(KITCHEN)
    response = engine([]).synthesize(QueryBundle("What is on the table?"), [NodeWithScore(node=nodes[0])])
    assert response.metadata == {**node_metadata(nodes), "ecso": SAFE, "ecso_calls": [SAFE]}


def test_images_read_as_text_are_refused_before_any_model_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without llama-index-readers-file, SimpleDirectoryReader has no reader for .png and decodes the bytes.
    monkeypatch.setattr(SimpleDirectoryReader, "supported_suffix_fn", staticmethod(dict))
    documents = SimpleDirectoryReader(input_files=[KITCHEN]).load_data()
    assert documents[0].text.startswith("PNG\r\n\x1a\n")  # what the guard would otherwise see: no image
    inner = ScriptedLLM(reply=vlm)
    with pytest.raises(MessageError) as caught:
        engine(documents, inner).query("What is on the table?")
    assert inner.calls == []
    assert str(caught.value) == (
        "a text block in a user message holds a PNG image file read as text, so the guard cannot see it as an "
        "image. SimpleDirectoryReader reads images as text unless llama-index-readers-file is installed: "
        "`pip install llama-index-readers-file` (its ImageReader makes ImageDocuments), or load images as "
        "ImageNode/ImageDocument, or send them as ImageBlocks."
    )


def test_guard_errors_a_refining_engine_swallows_are_raised() -> None:
    # LlamaIndex's refine loop catches ValueError and answers "Empty Response"; ECSO's input errors are
    # ValueErrors. The wrapper raises them; the bare engine shows why it has to.
    nodes, inner = image_nodes(KITCHEN), ScriptedLLM(reply=vlm)
    with pytest.raises(ImageError, match="pixels"):
        engine(nodes, inner, SMALL).query("What is on the table?")
    bare = engine(nodes, inner, SMALL)._query_engine.query("What is on the table?")
    assert bare.response == "Empty Response"
    assert inner.calls == []


async def test_guard_errors_are_raised_from_async_and_streaming_queries() -> None:
    nodes = image_nodes(KITCHEN)
    with pytest.raises(ImageError, match="pixels"):
        await engine(nodes, config=SMALL).aquery("What is on the table?")
    response = engine(nodes, config=SMALL, streaming=True).query("What is on the table?")
    with pytest.raises(ImageError, match="pixels"):  # the guard runs as the stream is read
        "".join(response.response_gen)
    assert "ecso" not in response.metadata


def encoded(fmt: str) -> str:
    """An image file's bytes as SimpleDirectoryReader decodes them without a reader for its suffix."""
    buffer = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue().decode("utf-8", errors="ignore")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (encoded("PNG"), "a PNG image file"),
        (encoded("JPEG"), "a JPEG image file"),
        (encoded("GIF"), "a GIF image file"),
        (encoded("WEBP"), "a WebP image file"),
        (encoded("PNG")[100:], "a binary file (NUL characters)"),  # a later chunk of the same file
        ("%PDF-1.7\n\x00\x01 stream", "a binary file (NUL characters)"),
    ],
    ids=["png", "jpeg", "gif", "webp", "png-later-chunk", "pdf"],
)
def test_a_file_read_as_text_is_named_in_the_error(text: str, named: str) -> None:
    message = ChatMessage(role=MessageRole.SYSTEM, blocks=[TextBlock(text=text)])
    start = f"a text block in a system message holds {named} read as text, so the guard cannot see it as an image."
    with pytest.raises(MessageError, match="^" + re.escape(start)):
        to_ecso_request([message, ChatMessage(role=MessageRole.USER, content="What is this?")])


def test_text_about_image_formats_is_not_refused() -> None:
    text = "A PNG starts with \\x89PNG\\r\\n; JPEG has JFIF, GIF89a and WEBPVP8 headers."
    request = to_ecso_request([ChatMessage(role=MessageRole.USER, content=text)])
    assert request.messages[0].text == text
