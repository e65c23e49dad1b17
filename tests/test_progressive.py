"""Progressive streaming: every released character was inside a window judged safe before it left.

A streaming scripted model writes its answer word by word and records how far the consumer pulled it;
its judge replies "Yes" when the judged text holds BAD and records, in order, what it judged safe. The
consumer checks at each released delta that all text released so far had been judged safe already.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    ChatReply,
    ChatRequest,
    ECSOConfig,
    ECSOResult,
    GenerationParams,
    ImagePart,
    Message,
    ScriptedBackend,
    StepEvent,
    StreamEnd,
    TextDelta,
    TextPart,
)
from ecso_core.steps import current_step

BENIGN = " ".join(f"word{i}" for i in range(60))  # about 470 characters
HARMFUL_TAIL = BENIGN + " BAD " + " ".join(f"more{i}" for i in range(40))
RESPONSE = re.compile(r"RESPONSE:\n(.*)\n\nIs the RESPONSE", re.DOTALL)


class StreamingModel(ScriptedBackend):
    """Answers ``answer`` word by word; judges by BAD; records what was pulled and judged safe."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.pulled = 0  # words handed to the consumer
        self.judged_safe: list[str] = []  # answer texts judged safe, in order
        self.log: list[str] = []
        super().__init__(self.reply)

    def reply(self, request: ChatRequest) -> str:
        step = current_step()
        text = request.messages[-1].text
        if step == "check":
            judged = RESPONSE.search(text)
            assert judged is not None
            if "BAD" in judged.group(1):
                return "Yes"
            self.judged_safe.append(judged.group(1))
            self.log.append(f"safe:{len(judged.group(1))}")
            return "No"
        if step == "caption":
            return "a picture"
        if step == "eyes_closed":
            return "I can't help with that part."
        return self.answer

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        if current_step() != "answer":
            yield from super().stream_generate(request)
            return
        self.requests.append(request)
        words = re.findall(r"\S+\s*", self.answer)
        for word in words:
            self.pulled += 1
            yield word
        yield ChatReply(text=self.answer, finish_reason="stop")


def request() -> ChatRequest:
    parts = (ImagePart(image=Image.new("RGB", (8, 8), "red")), TextPart(text="Describe the picture."))
    return ChatRequest(messages=(Message(role="user", content=parts),), params=GenerationParams(max_new_tokens=64))


def progressive(window: int = 100, **settings: object) -> ECSOConfig:
    return ECSOConfig(stream="progressive", stream_window_chars=window, **settings)  # type: ignore[arg-type]


def released_in_order(model: StreamingModel, guard: ECSO) -> tuple[str, ECSOResult]:
    """Consume the stream; at every delta of the answer, all of it released so far was judged safe before."""
    released, answer_part, result = "", "", None
    rewriting = False
    for event in guard.stream(request()):
        if isinstance(event, StepEvent) and event.step == "caption":
            rewriting = True  # from here on the text is the eyes-closed answer
        elif isinstance(event, TextDelta):
            released += event.text
            rewriting = rewriting or event.text == guard.config.stream_separator
            if not rewriting:
                answer_part += event.text
                assert any(text.startswith(answer_part) for text in model.judged_safe), (
                    f"released {len(answer_part)} characters before they were judged safe"
                )
        elif isinstance(event, StreamEnd):
            result = event.result
    assert result is not None
    return released, result


def test_a_benign_answer_leaves_window_by_window_each_judged_safe_first() -> None:
    model = StreamingModel(BENIGN)
    released, result = released_in_order(model, ECSO(model, progressive(window=100)))
    assert released == BENIGN
    assert result.answer == BENIGN
    assert result.decision == "safe"
    checks = [s for s in result.steps if s.name == "check"]
    assert len(BENIGN) == 409
    assert len(checks) == 4
    assert [len(t) for t in model.judged_safe] == sorted(len(t) for t in model.judged_safe)


def test_a_flagged_window_stops_the_answer_and_hands_over_to_the_eyes_closed_answer() -> None:
    model = StreamingModel(HARMFUL_TAIL)
    guard = ECSO(model, progressive(window=100))
    released, result = released_in_order(model, guard)
    assert "BAD" not in released
    assert "more" not in released
    assert result.decision == "unsafe"
    assert result.verdict is not None
    assert result.verdict.unsafe is True
    before, separator, after = released.partition("\n\n")
    assert BENIGN.startswith(before)
    assert len(before) == 312
    assert after == "I can't help with that part."
    assert result.answer == released
    words = len(re.findall(r"\S+\s*", HARMFUL_TAIL))
    assert model.pulled < words  # generation stopped at the flagged window, not run to the end
    assert [s.name for s in result.steps if s.name != "check"] == ["answer", "caption", "eyes_closed"]
    assert "BAD" in result.initial_answer  # kept in-process for audit, never released
    assert "BAD" not in str(result.client_summary())


def test_a_harmful_first_window_releases_nothing_but_the_eyes_closed_answer() -> None:
    model = StreamingModel("BAD " + BENIGN)
    released, result = released_in_order(model, ECSO(model, progressive(window=100)))
    assert released == "I can't help with that part."
    assert result.decision == "unsafe"


def test_fail_closed_with_refuse_streams_the_refusal_after_what_was_released() -> None:
    model = StreamingModel(HARMFUL_TAIL)

    def unclear(request: ChatRequest) -> str:
        return "Maybe" if current_step() == "check" and "BAD" in request.messages[-1].text else model.reply(request)

    model._replies = unclear  # type: ignore[assignment]
    config = progressive(window=100, fail_mode="refuse", refusal_message="Refused.")
    released, result = released_in_order(model, ECSO(model, config))
    assert released.endswith("\n\nRefused.")
    assert "BAD" not in released
    assert result.decision == "fail_closed"


def test_whole_mode_releases_nothing_before_the_whole_answer_is_checked() -> None:
    model = StreamingModel(BENIGN)
    events = list(ECSO(model).stream(request()))
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    steps = [e.step for e in events[:first_text] if isinstance(e, StepEvent)]
    assert steps == ["answer", "check"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == BENIGN
    assert len(model.judged_safe) == 1
    assert model.judged_safe[0] == BENIGN


def test_whole_mode_streams_the_eyes_closed_answer_as_the_model_writes_it() -> None:
    model = StreamingModel(HARMFUL_TAIL)
    pieces: list[str] = []

    def eyes_closed_stream(request: ChatRequest) -> Iterator[str | ChatReply]:
        for word in ("I ", "can't ", "help."):
            pieces.append(word)
            yield word
        yield ChatReply(text="I can't help.", finish_reason="stop")

    original = model.stream_generate

    def stream(request: ChatRequest) -> Iterator[str | ChatReply]:
        return eyes_closed_stream(request) if current_step() == "eyes_closed" else original(request)

    model.stream_generate = stream  # type: ignore[method-assign]
    deltas = [e.text for e in ECSO(model).stream(request()) if isinstance(e, TextDelta)]
    assert deltas == ["I ", "can't ", "help."]


@pytest.mark.parametrize("stream", ["whole", "progressive"])
async def test_astream_gives_the_same_events_as_stream(stream: str) -> None:
    config = ECSOConfig(stream=stream, stream_window_chars=100)  # type: ignore[arg-type]
    sync = [e for e in ECSO(StreamingModel(HARMFUL_TAIL), config).stream(request())]
    model = StreamingModel(HARMFUL_TAIL)
    asynchronous = [e async for e in ECSO(model, config).astream(request())]
    strip = [(type(e).__name__, getattr(e, "text", None), getattr(e, "step", None)) for e in sync[:-1]]
    assert strip == [(type(e).__name__, getattr(e, "text", None), getattr(e, "step", None)) for e in asynchronous[:-1]]
    assert isinstance(asynchronous[-1], StreamEnd)
    assert asynchronous[-1].result.answer == sync[-1].result.answer


def test_closing_a_progressive_stream_stops_the_answer() -> None:
    model = StreamingModel(BENIGN * 3)
    events = ECSO(model, progressive(window=100)).stream(request())
    for event in events:
        if isinstance(event, TextDelta):
            break
    events.close()
    assert model.pulled < len(re.findall(r"\S+\s*", BENIGN * 3))


def test_transformers_streams_pause_for_checks_and_a_flag_stops_generation() -> None:
    pytest.importorskip("transformers")
    from ecso_core import load_backend

    backend = load_backend("tiny-random:llava-small")
    req = request().model_copy(update={"params": GenerationParams(max_new_tokens=48)})
    whole = backend.generate([req])[0]
    pieces = list(backend.stream_generate(req))
    assert isinstance(pieces[-1], ChatReply)
    assert "".join(p for p in pieces[:-1]) == whole.text
    common = {"stream": "progressive", "stream_window_chars": 16, "min_score_mass": 0.0}
    safe = ECSO(backend, ECSOConfig(verdict_threshold=1.0, **common))  # type: ignore[arg-type]
    events = list(safe.stream(req))
    result = events[-1].result
    assert result.decision == "safe"
    assert result.answer == whole.text
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == whole.text
    assert sum(s.name == "check" for s in result.steps) >= 3  # checks ran while the answer was generated
    flagged = ECSO(backend, ECSOConfig(verdict_threshold=0.0, **common))  # type: ignore[arg-type]
    result = list(flagged.stream(req))[-1].result
    answer = next(s for s in result.steps if s.name == "answer")
    assert result.decision == "unsafe"
    assert result.verdict is not None
    assert result.verdict.unsafe
    assert answer.usage.completion_tokens < 48  # stopped at the first window, not generated to the end


def test_each_progressive_check_reuses_the_previous_ones_prefix_exactly() -> None:
    pytest.importorskip("transformers")
    from ecso_core import load_backend

    backend = load_backend("tiny-random:llava-small")
    req = request().model_copy(update={"params": GenerationParams(max_new_tokens=48)})
    config = ECSOConfig(stream="progressive", stream_window_chars=16, verdict_threshold=1.0, min_score_mass=0.0)

    def scores(result: ECSOResult) -> list[float]:
        return [float(s.output.split()[0].split("=")[1]) for s in result.steps if s.name == "check" and s.output]

    before = backend.reused_calls
    fast = list(ECSO(backend, config).stream(req))[-1].result
    checks = sum(s.name == "check" for s in fast.steps)
    assert checks >= 3
    assert backend.reused_calls - before >= checks - 1  # every check after the first started from a cached prefix
    with backend.reuse_disabled():
        plain = list(ECSO(backend, config).stream(req))[-1].result
    assert fast.answer == plain.answer
    assert scores(fast) == pytest.approx(scores(plain), abs=1e-4)


def test_a_tail_of_whitespace_and_separators_is_judged_before_it_leaves() -> None:
    tail = "\x1c\x1d\x1e\x1f\x85\u2028\u2029\u3000"  # all str.isspace(): must not ride on an earlier verdict

    class Tail(StreamingModel):
        def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
            if current_step() != "answer":
                yield from super().stream_generate(request)
                return
            yield "a" * 20  # a full window: judged and released
            yield tail  # shorter than a window: held back until the end
            yield ChatReply(text="a" * 20 + tail, finish_reason="stop")

    model = Tail("")
    released, result = released_in_order(model, ECSO(model, progressive(window=16)))
    assert released == "a" * 20 + tail
    assert model.judged_safe == ["a" * 20, "a" * 20 + tail]
    assert result.decision == "safe"
