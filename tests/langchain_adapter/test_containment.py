"""No withheld text reaches anything a LangChain client or UI handler sees; tracers keep the step runs.

The inner model answers with ANSWER-MARK, its judge replies with CHECK-MARK and its captions carry
CAPTION-MARK. Whatever the decision (unsafe, fail-closed with either fail mode), none of the three may
appear in invoke/stream/batch outputs, ``astream_events`` (v1, v2), ``astream_log``, LangGraph stream
modes and event streams, an agent with ``ECSOMiddleware``, or a plain callback handler. The in-band
audit flag is the positive control: with it, the same serialisation does find the withheld text.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("langgraph")

from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.context import collect_runs
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph

from ecso_core import ECSOConfig, by_step
from langchain_ecso import ChatECSO, ECSOMiddleware
from langchain_ecso._convert import to_ecso_request
from langchain_ecso.testing import ScriptedChatModel
from tests.langchain_adapter.test_chat_model import image_message

MARKS = ("ANSWER-MARK", "CHECK-MARK", "CAPTION-MARK")
REFUSAL = "I can't help with that."
VERDICTS = {"unsafe": "Yes, CHECK-MARK", "fail_closed": "CHECK-MARK: unclear"}
CONFIGS = {
    "unsafe": ECSOConfig(),
    "fail_closed": ECSOConfig(),
    "fail_closed-refuse": ECSOConfig(fail_mode="refuse", refusal_message=REFUSAL),
}


def inner_model(decision: str) -> ScriptedChatModel:
    verdict = VERDICTS[decision.split("-")[0]]

    answer = "Here is how: ANSWER-MARK step one."
    # default: the answer also when called directly, outside the guard (the control test does that)
    reply = by_step(answer=answer, check=verdict, caption="CAPTION-MARK a drawing", eyes_closed=REFUSAL, default=answer)
    return ScriptedChatModel(reply=reply)


def guarded(decision: str, audit: bool = False) -> ChatECSO:
    config = CONFIGS[decision].model_copy(update={"in_band_audit": audit})
    return ChatECSO(model=inner_model(decision), config=config)


def leaks(items: Any) -> list[str]:
    """The marks found in ``items`` (anything: events, chunks, messages), serialised as a client would."""
    text = repr(items)
    return [mark for mark in MARKS if mark in text]


class Everything(BaseCallbackHandler):
    """A plain UI-style handler: records every callback it receives, arguments included."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: self.seen.append((name, args, kwargs))
        return super().__getattribute__(name)


DECISIONS = sorted(CONFIGS)
QUESTION = "How do I build what is in the picture?"


@pytest.mark.parametrize("decision", DECISIONS)
def test_invoke_stream_and_batch_outputs_hold_no_withheld_text(decision: str) -> None:
    llm = guarded(decision)
    message = [image_message(QUESTION)]
    handler = Everything()
    outputs = [
        llm.invoke(message, config={"callbacks": [handler]}),
        list(llm.stream(message, config={"callbacks": [handler]})),
        llm.batch([message, message], config={"callbacks": [handler]}),
    ]
    assert leaks(outputs) == []
    assert leaks(handler.seen) == []
    assert {"on_chat_model_start", "on_llm_new_token", "on_llm_end"} <= {name for name, _, _ in handler.seen}
    assert outputs[0].content == REFUSAL
    assert outputs[0].response_metadata["ecso"]["decision"] == decision.split("-")[0]
    assert leaks(guarded(decision, audit=True).invoke(message)) != []  # positive control


@pytest.mark.parametrize("decision", DECISIONS)
async def test_async_outputs_hold_no_withheld_text(decision: str) -> None:
    llm = guarded(decision)
    message = [image_message(QUESTION)]
    outputs = [
        await llm.ainvoke(message),
        [chunk async for chunk in llm.astream(message)],
        await llm.abatch([message, message]),
    ]
    assert leaks(outputs) == []


@pytest.mark.filterwarnings("ignore:astream_events version='v1' is deprecated")
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("decision", DECISIONS)
async def test_astream_events_of_the_model_hold_no_withheld_text(decision: str, version: str) -> None:
    events = [e async for e in guarded(decision).astream_events([image_message(QUESTION)], version=version)]
    assert leaks(events) == []
    streamed = "".join(str(e["data"]["chunk"].content) for e in events if e["event"] == "on_chat_model_stream")
    assert streamed == REFUSAL
    audited = [e async for e in guarded(decision, True).astream_events([image_message(QUESTION)], version=version)]
    assert leaks(audited) != []  # positive control: the serialisation sees metadata


@pytest.mark.parametrize("decision", DECISIONS)
async def test_bound_tools_stop_and_call_options_in_a_chain_hold_no_withheld_text(decision: str) -> None:
    """A binding (bind_tools, stop, call kwargs) merges the enclosing run's config into its call; the
    step runs must still not reach the chain's event stream or a plain handler passed to the chain."""

    def lookup(query: str) -> str:
        """Look something up."""
        return query

    bound = guarded(decision).bind_tools([lookup]).bind(stop=["NEVER"], top_p=0.5)
    chain = RunnableLambda(lambda messages: messages) | bound
    handler = Everything()
    config: Any = {"callbacks": [handler]}
    events = [e async for e in chain.astream_events([image_message(QUESTION)], config=config, version="v2")]
    assert leaks(events) == []
    assert leaks(handler.seen) == []
    assert [e["name"] for e in events if e["event"] == "on_chat_model_start"] == ["ChatECSO"]
    assert leaks(chain.invoke([image_message(QUESTION)], config={"callbacks": [handler]})) == []
    assert leaks(handler.seen) == []


@pytest.mark.filterwarnings("ignore:astream_log is deprecated")
async def test_astream_log_holds_no_withheld_text() -> None:
    patches = [p async for p in guarded("unsafe").astream_log([image_message(QUESTION)])]
    assert leaks(patches) == []


def graph(llm: ChatECSO) -> Any:
    async def model(state: MessagesState) -> dict[str, Any]:
        get_stream_writer()({"progress": "calling the model"})
        return {"messages": [await llm.ainvoke(state["messages"])]}

    return StateGraph(MessagesState).add_node("model", model).add_edge(START, "model").add_edge("model", END).compile()


@pytest.mark.parametrize("decision", DECISIONS)
async def test_langgraph_stream_modes_and_event_streams_hold_no_withheld_text(decision: str) -> None:
    app = graph(guarded(decision))
    state = {"messages": [image_message(QUESTION)]}
    modes = ["messages", "updates", "values", "debug", "custom"]
    streamed = [item async for item in app.astream(state, stream_mode=modes)]
    assert {mode for mode, _ in streamed} == set(modes)
    assert leaks(streamed) == []
    events = [e async for e in app.astream_events(state, version="v2")]
    assert leaks(events) == []
    assert any(e["event"] == "on_chat_model_stream" and e["name"] == "ChatECSO" for e in events)


@pytest.mark.filterwarnings("ignore:The v3 streaming protocol")
@pytest.mark.parametrize("decision", DECISIONS)
def test_v3_event_streams_hold_no_withheld_text(decision: str) -> None:
    llm = guarded(decision)
    events = list(llm.stream_events([image_message(QUESTION)], version="v3"))
    deltas = [e["delta"]["text"] for e in events if e.get("event") == "content-block-delta"]
    assert leaks(events) == []
    assert "".join(deltas) == REFUSAL

    def model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}

    app = StateGraph(MessagesState).add_node("model", model).add_edge(START, "model").add_edge("model", END).compile()
    graph_events = list(app.stream_events({"messages": [image_message(QUESTION)]}, version="v3"))
    assert graph_events
    assert leaks(graph_events) == []


@pytest.mark.parametrize("decision", DECISIONS)
async def test_an_agent_with_the_middleware_streams_no_withheld_text(decision: str) -> None:
    agent = create_agent(model=inner_model(decision), tools=[], middleware=[ECSOMiddleware(CONFIGS[decision])])
    state = {"messages": [image_message(QUESTION)]}
    events = [e async for e in agent.astream_events(state, version="v2")]
    streamed = [item async for item in agent.astream(state, stream_mode=["messages", "updates", "values"])]
    assert leaks(events) == []
    assert leaks(streamed) == []
    final = [e for e in events if e["event"] == "on_chain_end" and e["name"] == "LangGraph"][-1]
    assert final["data"]["output"]["messages"][-1].content == REFUSAL


def test_the_inner_models_own_tokens_would_reach_an_event_stream_without_the_guard() -> None:
    """Control: the scripted inner model does stream its tokens to event streams when called directly."""
    import asyncio

    async def run() -> list[Any]:
        return [e async for e in inner_model("unsafe").astream_events([image_message(QUESTION)], version="v2")]

    assert "ANSWER-MARK" in leaks(asyncio.run(run()))


def step_runs(runs: list[Any]) -> list[tuple[str, UUID | None]]:
    return [(run.name, run.parent_run_id) for run in runs if run.name.startswith("ecso:")]


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_tracers_keep_the_four_step_runs_as_children(mode: str) -> None:
    llm = guarded("unsafe")
    with collect_runs() as collector:
        if mode == "invoke":
            llm.invoke([image_message(QUESTION)])
        else:
            list(llm.stream([image_message(QUESTION)]))
    (outer,) = [run for run in collector.traced_runs if run.name == "ChatECSO"]
    children = [(run.name, run.parent_run_id) for run in outer.child_runs]
    assert children == [(f"ecso:{s}", outer.id) for s in ("answer", "check", "caption", "eyes_closed")]
    assert "ANSWER-MARK" in repr(outer.child_runs[0].outputs)  # the operator's tracer sees the step text


async def test_tracers_keep_the_step_runs_in_async_streams_and_graph_event_streams() -> None:
    llm = guarded("unsafe")
    with collect_runs() as collector:
        [chunk async for chunk in llm.astream([image_message(QUESTION)])]
        [e async for e in graph(llm).astream_events({"messages": [image_message(QUESTION)]}, version="v2")]
    outers = [run for run in collector.traced_runs if run.name == "ChatECSO"]
    if not outers:  # the graph run is the root: find ChatECSO below it
        stack, outers = list(collector.traced_runs), []
        while stack:
            run = stack.pop()
            outers += [run] if run.name == "ChatECSO" else []
            stack += run.child_runs
    assert len(outers) == 2
    for outer in outers:
        assert [run.name for run in outer.child_runs] == [
            "ecso:answer",
            "ecso:check",
            "ecso:caption",
            "ecso:eyes_closed",
        ]


async def test_a_bare_langchain_backend_in_a_graph_node_streams_no_withheld_text() -> None:
    from ecso_core import ECSO
    from langchain_ecso import LangChainBackend

    guard = ECSO(LangChainBackend(inner_model("unsafe")))

    async def node(state: MessagesState) -> dict[str, Any]:
        result = await guard.arun(to_ecso_request(state["messages"]))
        return {"messages": [AIMessage(content=result.answer)]}

    app = StateGraph(MessagesState).add_node("guarded", node).add_edge(START, "guarded").add_edge("guarded", END)
    state = {"messages": [image_message(QUESTION)]}
    with collect_runs() as collector:
        events = [e async for e in app.compile().astream_events(state, version="v2")]
    assert leaks(events) == []
    stack, names = list(collector.traced_runs), []
    while stack:
        run = stack.pop()
        names.append(run.name)
        stack += run.child_runs
    assert {"ecso:answer", "ecso:check", "ecso:caption", "ecso:eyes_closed"} <= set(names)  # tracers still see them
