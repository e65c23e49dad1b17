"""No withheld text reaches a LlamaIndex caller or any instrumentation handler; step events stay useful.

The wrapped LLM answers with ANSWER-MARK, judges with CHECK-MARK and captions with CAPTION-MARK.
Whatever the decision, none of them may appear in responses (content, ``additional_kwargs``, ``raw``),
in dispatcher events or spans seen by handlers, in legacy callback payloads, or in an agent's event
stream. ``instrument_steps=True`` is the positive control: the same handlers then do see the text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

from ecso_core import ECSOConfig, by_step
from llamaindex_ecso import ECSOMultiModalLLM, ECSOStepEndEvent, ECSOStepStartEvent
from llamaindex_ecso.testing import ScriptedLLM
from tests.llamaindex_adapter.test_llm import KITCHEN

MARKS = ("ANSWER-MARK", "CHECK-MARK", "CAPTION-MARK")
REFUSAL = "I can't help with that."
VERDICTS = {"unsafe": "Yes, CHECK-MARK", "fail_closed": "CHECK-MARK: unclear"}
CONFIGS = {
    "unsafe": ECSOConfig(),
    "fail_closed": ECSOConfig(),
    "fail_closed-refuse": ECSOConfig(fail_mode="refuse", refusal_message=REFUSAL),
}


def leaks(items: Any) -> list[str]:
    text = repr(items)
    return [mark for mark in MARKS if mark in text]


def inner(decision: str) -> ScriptedLLM:
    verdict = VERDICTS[decision.split("-")[0]]

    answer = "Here is how: ANSWER-MARK step one."
    # default: the answer also when called directly, outside the guard
    reply = by_step(answer=answer, check=verdict, caption="CAPTION-MARK a drawing", eyes_closed=REFUSAL, default=answer)
    return ScriptedLLM(reply=reply, callback_manager=CallbackManager([LegacyRecorder()]))


def guarded(decision: str, **options: Any) -> ECSOMultiModalLLM:
    return ECSOMultiModalLLM(llm=inner(decision), config=CONFIGS[decision], **options)


def ask() -> list[ChatMessage]:
    blocks = [ImageBlock(image=KITCHEN.read_bytes()), TextBlock(text="How do I build what is shown?")]
    return [ChatMessage(role=MessageRole.USER, blocks=blocks)]


class EventRecorder(BaseEventHandler):
    events: list[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


class SpanRecorder(SimpleSpanHandler):
    """Records what span handlers receive: the call's arguments and its result."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["seen"] = []

    def new_span(self, id_: str, bound_args: Any, instance: Any = None, **kwargs: Any) -> Any:
        self.seen.append(("enter", bound_args.arguments))
        return super().new_span(id_, bound_args, instance, **kwargs)

    def prepare_to_exit_span(
        self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any
    ) -> Any:
        self.seen.append(("exit", result))
        return super().prepare_to_exit_span(id_, bound_args, instance, result, **kw)


class LegacyRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.payloads: list[Any] = []

    def on_event_start(self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any) -> str:
        self.payloads.append(payload)
        return event_id

    def on_event_end(self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any) -> None:
        self.payloads.append(payload)

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        pass


@pytest.fixture
def handlers() -> Any:
    events, spans = EventRecorder(events=[]), SpanRecorder()
    root = get_dispatcher()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    yield events, spans
    root.event_handlers.remove(events)
    root.span_handlers.remove(spans)


def everything(llm: ECSOMultiModalLLM) -> list[Any]:
    async def asynchronous() -> list[Any]:
        return [
            await llm.achat(ask()),
            [r async for r in await llm.astream_chat(ask())],
        ]

    return [
        llm.chat(ask()),
        list(llm.stream_chat(ask())),
        *asyncio.run(asynchronous()),
    ]


@pytest.mark.parametrize("decision", sorted(CONFIGS))
def test_responses_and_instrumentation_hold_no_withheld_text(decision: str, handlers: Any) -> None:
    events, spans = handlers
    llm = guarded(decision)
    outputs = everything(llm)
    legacy = llm.llm.callback_manager.handlers[0].payloads
    assert leaks(outputs) == []
    assert leaks(events.events) == []
    assert leaks(spans.seen) == []
    assert leaks(legacy) == []
    assert outputs[0].message.content == REFUSAL
    assert outputs[0].additional_kwargs["ecso"]["decision"] == decision.split("-")[0]
    # step events stay: which step, which model, how long, how many tokens, for each of the four calls
    ends = [e for e in events.events if isinstance(e, ECSOStepEndEvent)]
    starts = [e.step for e in events.events if isinstance(e, ECSOStepStartEvent)]
    expected = ["answer", "check", "caption", "eyes_closed"]
    if decision.endswith("refuse"):
        expected = ["answer", "check"]
    assert starts[: len(expected)] == expected
    assert len(ends) == len(starts) == 4 * len(expected)
    assert all(e.latency_s >= 0 and e.model == "scripted" for e in ends)
    assert ends[0].prompt_tokens > 0


def test_positive_control_instrument_steps_lets_the_inner_reports_through(handlers: Any) -> None:
    events, _ = handlers
    llm = guarded("unsafe", instrument_steps=True)
    llm.chat(ask())
    assert "ANSWER-MARK" in leaks(events.events)
    assert leaks(llm.llm.callback_manager.handlers[0].payloads)


def test_in_band_audit_shows_the_withheld_text_on_request() -> None:
    response = ECSOMultiModalLLM(llm=inner("unsafe"), config=ECSOConfig(in_band_audit=True)).chat(ask())
    assert response.additional_kwargs["ecso"]["initial_answer"] == "Here is how: ANSWER-MARK step one."


def test_instrumentation_outside_the_steps_is_untouched(handlers: Any) -> None:
    events, _ = handlers
    plain = inner("unsafe")
    guarded("unsafe").chat(ask())
    plain.chat(ask())  # the same kind of LLM, called directly: its events reach the handlers as always
    assert "ANSWER-MARK" in leaks(events.events)


def test_an_agents_event_stream_holds_no_withheld_text(handlers: Any) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    events, _ = handlers
    agent = FunctionAgent(tools=[], llm=guarded("unsafe"))

    async def run() -> list[Any]:
        handler = agent.run(user_msg=ask()[0])
        streamed = [event async for event in handler.stream_events()]
        return [*streamed, await handler]

    streamed = asyncio.run(run())
    assert leaks(streamed) == []
    assert leaks(events.events) == []
    assert REFUSAL in str(streamed[-1])
