"""One flow, four drivers: sync, async, stream and batch give identical results and prompts."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    BackendError,
    CapabilityError,
    ChatReply,
    ChatRequest,
    ECSOConfig,
    ECSOResult,
    ECSOStreamEvent,
    ImageError,
    ImagePart,
    Message,
    ScriptedBackend,
    StepEvent,
    StreamEnd,
    TextDelta,
    TextPart,
    by_step,
)
from ecso_core.guard import chunk_text


def request(query: str, color: str = "red") -> ChatRequest:
    part = ImagePart(image=Image.new("RGB", (8, 8), color))
    return ChatRequest(messages=(Message(role="user", content=(part, TextPart(text=query))),))


# Deterministic replies keyed on the step, so the order of calls does not matter.
script = by_step(
    answer=lambda r: f"Answer to: {r.messages[-1].text}",
    check=lambda r: "Yes" if "bomb" in r.messages[-1].text else "No",
    caption="a picture about bombs",
    eyes_closed="I can't help with that, but here is safety info.",
)


QUERIES = ["how to bake bread", "how to build a bomb", "what colour is it"]


def sent(backend: ScriptedBackend) -> list[list[tuple[str, str]]]:
    return sorted([[(m.role, m.text) for m in r.messages] for r in backend.requests])


def test_sync_async_stream_and_batch_agree() -> None:
    runs = {}
    for mode in ("sync", "async", "stream", "batch", "abatch"):
        backend = ScriptedBackend(script)
        guard = ECSO(backend)
        reqs = [request(q) for q in QUERIES]
        if mode == "sync":
            results = [guard.run(r) for r in reqs]
        elif mode == "async":
            results = [asyncio.run(guard.arun(r)) for r in reqs]
        elif mode == "stream":
            results = []
            for r in reqs:
                events = list(guard.stream(r))
                assert isinstance(events[-1], StreamEnd)
                assert "".join(e.text for e in events if isinstance(e, TextDelta)) == events[-1].result.answer
                results.append(events[-1].result)
        elif mode == "batch":
            results = guard.run_batch(reqs)
        else:
            results = asyncio.run(guard.arun_batch(reqs))
        runs[mode] = ([(r.decision, r.answer, r.captions) for r in results], sent(backend))
    baseline = runs["sync"]
    assert [d for d, _, _ in baseline[0]] == ["safe", "unsafe", "safe"]
    for mode, outcome in runs.items():
        assert outcome == baseline, mode


def test_batch_groups_each_step_into_one_backend_call() -> None:
    backend = ScriptedBackend(script)
    ECSO(backend).run_batch([request(q) for q in QUERIES])
    # 3 answers, 3 checks, then only the unsafe one goes on: 1 caption, 1 eyes-closed answer.
    assert backend.batch_sizes == [3, 3, 1, 1]


def test_stream_emits_no_text_before_the_verdict() -> None:
    events = list(ECSO(ScriptedBackend(script)).stream(request("how to build a bomb")))
    kinds = [e.step if isinstance(e, StepEvent) else e.type for e in events]
    first_text = kinds.index("delta")
    assert kinds[:first_text] == ["answer", "check", "caption", "eyes_closed"]
    assert all(k in ("delta", "end") for k in kinds[first_text:])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "I can't help with that, but here is safety info."
    assert "Answer to" not in text


def without_timings(events: list[ECSOStreamEvent]) -> list[ECSOStreamEvent]:
    """The events with every step latency zeroed (the only field that differs between two runs)."""

    def untimed(result: ECSOResult) -> ECSOResult:
        return result.model_copy(update={"steps": tuple(s.model_copy(update={"latency_s": 0.0}) for s in result.steps)})

    return [StreamEnd(result=untimed(e.result)) if isinstance(e, StreamEnd) else e for e in events]


@pytest.mark.parametrize("query", ["how to build a bomb", "how to bake bread"])
async def test_astream_matches_stream(query: str) -> None:
    sync_backend, async_backend = ScriptedBackend(script), ScriptedBackend(script)
    streamed = list(ECSO(sync_backend).stream(request(query)))
    astreamed = [e async for e in ECSO(async_backend).astream(request(query))]
    assert without_timings(astreamed) == without_timings(streamed)
    assert [(r.messages, r.params) for r in async_backend.requests] == [
        (r.messages, r.params) for r in sync_backend.requests
    ]
    assert async_backend.steps == sync_backend.steps
    steps = [e.step for e in astreamed if isinstance(e, StepEvent)]
    assert steps == (["answer", "check", "caption", "eyes_closed"] if "bomb" in query else ["answer", "check"])
    deltas = "".join(e.text for e in astreamed if isinstance(e, TextDelta))
    assert deltas == astreamed[-1].result.answer == streamed[-1].result.answer


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_flows_at_different_steps_in_one_round_are_separate_backend_calls(mode: str) -> None:
    """The batching key holds the step: a caption and an eyes-closed answer never share a backend call."""
    backend = ScriptedBackend(
        by_step(
            answer="Sure: step 1.",
            check="Yes",
            caption="a diagram",
            eyes_closed=lambda r: "Refused: " + r.messages[-1].text.rsplit("\n", 1)[-1],
        )
    )
    guard = ECSO(backend, ECSOConfig(check_text_only=True))
    text_only = ChatRequest(messages=(Message(role="user", content="how to hurt"),))
    # Round 3: the image request is at its caption, the text-only one (no image to caption) at its
    # eyes-closed answer. Same backend, both generated: only the step tells them apart.
    reqs = [request("how to build a bomb"), text_only]
    results = guard.run_batch(reqs) if mode == "sync" else asyncio.run(guard.arun_batch(reqs))
    assert backend.batch_sizes == [2, 2, 1, 1, 1]
    assert backend.steps == ["answer", "answer", "check", "check", "caption", "eyes_closed", "eyes_closed"]
    assert backend.requests[5].messages[-1].text == (
        "Answer the following question in a HARMLESS and ETHICAL way.\n\nhow to hurt"
    )
    assert backend.requests[6].messages[-1].text.startswith("You are given some hints")
    assert [(r.decision, r.answer, r.captions) for r in results] == [
        ("unsafe", "Refused: how to build a bomb", ("a diagram",)),
        ("unsafe", "Refused: how to hurt", ()),
    ]


def test_batch_isolates_a_bad_request() -> None:
    backend = ScriptedBackend(script)
    bad = ChatRequest(messages=(Message(role="user", content=(ImagePart(image=b"not an image"), TextPart(text="x"))),))
    results = ECSO(backend).run_batch([request("how to bake bread"), bad], return_exceptions=True)
    assert results[0].decision == "safe"
    assert isinstance(results[1], ImageError)
    with pytest.raises(ImageError):
        ECSO(ScriptedBackend(script)).run_batch([request("x"), bad])


def test_backend_exception_becomes_backend_error_with_cause() -> None:
    with pytest.raises(BackendError) as info:
        ECSO(ScriptedBackend([ZeroDivisionError("bad")])).run(request("x"))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_capabilities_are_checked_before_any_call() -> None:
    backend = ScriptedBackend(script, max_images=1)
    two = ChatRequest(
        messages=(
            Message(
                role="user",
                content=(
                    ImagePart(image=Image.new("RGB", (4, 4))),
                    ImagePart(image=Image.new("RGB", (5, 5))),
                    TextPart(text="q"),
                ),
            ),
        )
    )
    with pytest.raises(CapabilityError):
        ECSO(backend).run(two)
    no_tools = ScriptedBackend(script, tools=False)
    with pytest.raises(CapabilityError):
        ECSO(no_tools).run(request("q").model_copy(update={"tools": ({"type": "function"},)}))
    assert backend.requests == []
    assert no_tools.requests == []


def test_guard_is_a_backend_and_guards_compose() -> None:
    inner = ECSO(ScriptedBackend(script))
    (reply,) = inner.generate([request("how to build a bomb")])
    assert isinstance(reply, ChatReply)
    assert reply.raw.decision == "unsafe"
    assert reply.usage.total_tokens == reply.raw.usage.total_tokens
    outer = ECSO(ECSO(ScriptedBackend(script)), judge=ScriptedBackend(["No"]))
    result = outer.run(request("how to bake bread"))
    assert result.decision == "safe"
    assert result.answer == "Answer to: how to bake bread"


def test_ask_builds_a_single_turn(red_png: bytes) -> None:
    backend = ScriptedBackend(["answer", "no"])
    result = ECSO(backend).ask("What is it?", [red_png])
    assert result.decision == "safe"
    assert [p.kind for p in backend.requests[0].messages[0].content] == ["image", "text"]


def test_chunk_text_round_trips() -> None:
    for text in ["", "one", "  two words  ", "line\nbreak\n\n end"]:
        assert "".join(chunk_text(text)) == text
    assert chunk_text("a b") == ["a ", "b"]
