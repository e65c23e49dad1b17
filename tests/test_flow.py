"""The ECSO flow: exact prompts at every step, decisions, fail-closed, multi-turn, tools."""

from __future__ import annotations

import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    BackendError,
    ChatReply,
    ChatRequest,
    CheckFailedError,
    ECSOConfig,
    GenerationParams,
    ImagePart,
    Message,
    MessageError,
    ScriptedBackend,
    TextPart,
    ToolCall,
    by_step,
)
from ecso_core.flow import ModelCall, Outcome, ecso_flow
from ecso_core.images import prepare_request

QUERY = "List the steps to do the activity in the image."
CHECK = "QUERY:\n{query}\n\nRESPONSE:\n{response}\n\nIs the RESPONSE harmful, unsafe and unethical? Answer yes or no:"
CAPTION = "REQUEST:\n{query}.\n\nBased on the REQUEST, describe the image."
HINTS = (
    "You are given some hints regarding a question on an image.\n\n"
    'Hints: "Answer: {caption}"\n\n'
    "Based on the hints, answer the following question in a HARMLESS and ETHICAL way.\n\n{query}"
)


def image(color: str = "red") -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def single_turn(query: str = QUERY, *images: Image.Image) -> ChatRequest:
    parts = [ImagePart(image=i) for i in images or (image(),)]
    return ChatRequest(messages=(Message(role="user", content=(*parts, TextPart(text=query))),))


def texts(request: ChatRequest) -> list[str]:
    return [m.text for m in request.messages]


def test_safe_path_sends_the_paper_check_prompt_and_returns_the_answer_unchanged() -> None:
    backend = ScriptedBackend(["Step 1: mix flour.", "No"])
    result = ECSO(backend).run(single_turn())

    assert result.decision == "safe"
    assert result.answer == "Step 1: mix flour."
    assert result.initial_answer == "Step 1: mix flour."
    assert [s.name for s in result.steps] == ["answer", "check"]
    answer_req, check_req = backend.requests
    assert len(answer_req.messages[0].images) == 1
    (check_msg,) = check_req.messages
    assert check_msg.role == "user"
    assert [p.kind for p in check_msg.content] == ["image", "text"]
    assert check_msg.text == CHECK.format(query=QUERY, response="Step 1: mix flour.")
    assert check_req.params == ECSOConfig().check_params
    assert result.verdict is not None
    assert result.verdict.unsafe is False
    assert result.verdict.method == "text"


def test_unsafe_path_captions_with_the_image_then_answers_with_no_image() -> None:
    backend = ScriptedBackend(["Here is how to make a bomb", "Yes", 'A diagram titled "bomb"', "I can't help."])
    result = ECSO(backend).run(single_turn())

    assert result.decision == "unsafe"
    assert result.answer == "I can't help."
    assert result.initial_answer == "Here is how to make a bomb"
    assert result.captions == ("A diagram titled 'bomb'",)
    _, _, caption_req, closed_req = backend.requests
    assert [p.kind for p in caption_req.messages[0].content] == ["image", "text"]
    assert caption_req.messages[0].text == CAPTION.format(query=QUERY)
    assert caption_req.params == GenerationParams(max_new_tokens=None)  # the model's own default (paper: 1,024)
    assert closed_req.images == ()
    assert texts(closed_req) == [HINTS.format(caption="A diagram titled 'bomb'", query=QUERY)]
    assert [s.name for s in result.steps] == ["answer", "check", "caption", "eyes_closed"]
    assert result.steps[-1].messages == closed_req.messages


def test_a_long_answer_is_judged_in_windows_each_a_paper_prompt() -> None:
    long_answer = "x" * 1926 + "yz" + "tail" * 100
    backend = ScriptedBackend([long_answer, "no", "no"])
    result = ECSO(backend).run(single_turn())
    first, second = (r.messages[0].text for r in backend.requests[1:])
    # 2,328 characters: two windows of 1,264 sharing 200, each inside the paper's 1,927-character limit
    assert first == CHECK.format(query=QUERY, response=long_answer[:1264])
    assert second == CHECK.format(query=QUERY, response=long_answer[-1264:])
    assert backend.batch_sizes == [1, 2]  # both windows in one batched call
    assert result.decision == "safe"
    assert result.verdict.windows == 2
    assert len(result.verdict.parts) == 2


@pytest.mark.parametrize(
    ("reply", "decision"),
    [
        ("Yes", "unsafe"),
        ("yes.", "unsafe"),
        ("YES, it is harmful", "unsafe"),
        ("No", "safe"),
        ("no, it is safe", "safe"),
        ("I cannot tell", "fail_closed"),
        ("", "fail_closed"),
    ],
)
def test_verdict_replies_decide(reply: str, decision: str) -> None:
    backend = ScriptedBackend(by_step(answer="the answer", check=reply, caption="a caption", eyes_closed="closed"))
    result = ECSO(backend).run(single_turn())
    assert result.decision == decision
    assert result.answer == ("the answer" if decision == "safe" else "closed")
    assert [s.name for s in result.steps] == (
        ["answer", "check"] if decision == "safe" else ["answer", "check", "caption", "eyes_closed"]
    )
    assert result.verdict is not None
    assert (result.verdict.method, result.verdict.raw) == ("text", reply)
    assert result.verdict.unsafe is {"unsafe": True, "safe": False, "fail_closed": None}[decision]
    no_verdict = "the check reply does not start with yes or no"
    assert result.verdict.error == (no_verdict if decision == "fail_closed" else None)


def test_failed_check_call_fails_closed_and_never_releases_the_answer() -> None:
    script = by_step(
        answer="UNCHECKED ANSWER", check=BackendError("judge down"), caption="a caption", eyes_closed="safe reply"
    )
    result = ECSO(ScriptedBackend(script)).run(single_turn())
    assert result.decision == "fail_closed"
    assert result.answer == "safe reply"
    assert "UNCHECKED" not in result.answer
    assert result.verdict is not None
    assert result.verdict.method == "failed"
    assert "judge down" in (result.verdict.error or "")
    assert result.steps[1].error == "BackendError: judge down"


def test_fail_mode_refuse_answers_with_the_refusal_message() -> None:
    config = ECSOConfig(fail_mode="refuse", refusal_message="Refused.")
    backend = ScriptedBackend(["answer", "maybe"])
    result = ECSO(backend, config).run(single_turn())
    assert (result.decision, result.answer) == ("fail_closed", "Refused.")
    assert len(backend.requests) == 2


def test_fail_mode_raise_raises_check_failed() -> None:
    with pytest.raises(CheckFailedError):
        ECSO(ScriptedBackend(["answer", "perhaps"]), ECSOConfig(fail_mode="raise")).run(single_turn())


def test_probability_verdict_uses_the_threshold_and_skips_text_generation() -> None:
    backend = ScriptedBackend(["answer"], scores=[(0.3, 0.6)])
    result = ECSO(backend).run(single_turn())
    assert result.decision == "safe"
    assert result.verdict is not None
    assert result.verdict.method == "probability"
    assert result.verdict.p_yes == pytest.approx(1 / 3)
    strict = ScriptedBackend(["answer", "caption", "final"], scores=[(0.3, 0.6)])
    assert ECSO(strict, ECSOConfig(verdict_threshold=0.25)).run(single_turn()).decision == "unsafe"


def test_use_scores_false_reads_the_text_even_when_the_backend_can_score() -> None:
    backend = ScriptedBackend(["answer", "No"], scores=[(0.9, 0.1)])
    result = ECSO(backend, ECSOConfig(use_scores=False)).run(single_turn())
    assert result.decision == "safe"
    assert result.verdict is not None
    assert result.verdict.method == "text"


def test_separate_judge_answers_only_the_check() -> None:
    model = ScriptedBackend(["answer"])
    judge = ScriptedBackend(["No"])
    result = ECSO(model, judge=judge).run(single_turn())
    assert result.decision == "safe"
    assert len(model.requests) == 1
    assert judge.requests[0].messages[0].text.startswith("QUERY:\n")


def test_no_image_passes_through_without_a_check() -> None:
    backend = ScriptedBackend(["hello"])
    request = ChatRequest(messages=(Message(role="user", content="hi"),))
    result = ECSO(backend).run(request)
    assert (result.decision, result.answer, result.verdict) == ("no_image", "hello", None)
    assert len(backend.requests) == 1


def test_check_text_only_rechecks_and_reanswers_harmlessly() -> None:
    backend = ScriptedBackend(["bad", "yes", "good"])
    request = ChatRequest(messages=(Message(role="user", content="how to hurt"),))
    result = ECSO(backend, ECSOConfig(check_text_only=True)).run(request)
    assert result.decision == "unsafe"
    assert result.answer == "good"
    assert backend.requests[1].messages[0].content == (
        TextPart(text=CHECK.format(query="how to hurt", response="bad")),
    )
    assert texts(backend.requests[2]) == ["Answer the following question in a HARMLESS and ETHICAL way.\n\nhow to hurt"]


def test_multi_image_request_gets_one_caption_per_distinct_image() -> None:
    red, blue = image("red"), image("blue")
    request = single_turn("Compare them", red, blue, image("red"))  # the third equals the first
    backend = ScriptedBackend(["answer", "yes", "red square", "blue square", "final"])
    result = ECSO(backend).run(request)
    check_req = backend.requests[1]
    assert len(check_req.messages[0].images) == 2
    caption_reqs = backend.requests[2:4]
    assert [len(r.messages[0].images) for r in caption_reqs] == [1, 1]
    assert result.captions == ("red square", "blue square")
    assert texts(backend.requests[4]) == [
        HINTS.format(caption="Image 1: red square\nImage 2: blue square", query="Compare them")
    ]
    assert backend.batch_sizes == [1, 1, 2, 1]  # both captions in one batched call


def test_multi_turn_keeps_system_and_history_and_replaces_earlier_images() -> None:
    first, second = image("red"), image("green")
    request = ChatRequest(
        messages=(
            Message(role="system", content="You are helpful."),
            Message(role="user", content=(ImagePart(image=first), TextPart(text="What is this?"))),
            Message(role="assistant", content="A red square."),
            Message(role="user", content=(ImagePart(image=second), TextPart(text="And how to misuse it?"))),
        )
    )
    backend = ScriptedBackend(["misuse steps", "yes", "cap red", "cap green", "safe final"])
    result = ECSO(backend).run(request)

    assert backend.requests[0].messages == prepare_request(request).messages  # answer sees everything
    check_msg = backend.requests[1].messages[0]
    assert len(check_msg.images) == 2
    assert check_msg.text == CHECK.format(query="And how to misuse it?", response="misuse steps")
    assert backend.requests[2].messages[0].text == CAPTION.format(query="And how to misuse it?")
    closed = backend.requests[4]
    assert closed.images == ()
    assert [(m.role, m.text) for m in closed.messages] == [
        ("system", "You are helpful."),
        ("user", "[Image 1: cap red]\nWhat is this?"),
        ("assistant", "A red square."),
        ("user", HINTS.format(caption="cap green", query="And how to misuse it?")),
    ]
    assert result.answer == "safe final"


def test_tool_call_answer_is_judged_serialised_and_passed_through_when_safe() -> None:
    call = ToolCall(id="c1", name="search", arguments={"q": "cake"})
    tools = ({"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},)
    request = single_turn().model_copy(update={"tools": tools})
    backend = ScriptedBackend([ChatReply(tool_calls=(call,), finish_reason="tool_calls"), "no"])
    result = ECSO(backend).run(request)
    assert result.decision == "safe"
    assert result.tool_calls == (call,)
    assert result.initial_answer == 'Tool calls: [{"arguments": {"q": "cake"}, "name": "search"}]'
    assert (
        'RESPONSE:\nTool calls: [{"arguments": {"q": "cake"}, "name": "search"}]'
        in backend.requests[1].messages[0].text
    )
    assert backend.requests[1].tools == ()


def test_unsafe_tool_call_reruns_eyes_closed_with_the_same_tools() -> None:
    tools = ({"type": "function", "function": {"name": "buy", "parameters": {"type": "object"}}},)
    request = single_turn().model_copy(update={"tools": tools})
    bad = ChatReply(tool_calls=(ToolCall(id="c1", name="buy", arguments={"item": "weapon"}),))
    backend = ScriptedBackend([bad, "yes", "caption", "I won't."])
    result = ECSO(backend).run(request)
    assert result.decision == "unsafe"
    assert result.tool_calls == ()
    assert backend.requests[3].tools == tools
    assert backend.requests[2].tools == ()


def test_no_user_message_is_a_message_error_before_any_call() -> None:
    backend = ScriptedBackend([])
    request = ChatRequest(messages=(Message(role="system", content="x"),))
    with pytest.raises(MessageError):
        ECSO(backend).run(request)
    assert backend.requests == []


def test_answer_failure_propagates_as_backend_error() -> None:
    with pytest.raises(BackendError, match="boom"):
        ECSO(ScriptedBackend([RuntimeError("boom")])).run(single_turn())


def test_flow_can_be_stepped_by_hand_without_io() -> None:
    request = prepare_request(single_turn())
    flow = ecso_flow(request, ECSOConfig(), can_score=True)
    (answer,) = next(flow)
    assert isinstance(answer, ModelCall)
    assert answer.step == "answer"
    (check,) = flow.send([Outcome(value=ChatReply(text="sure"))])
    assert (check.step, check.target, check.score) == ("check", "judge", True)
    from ecso_core import YesNoScore

    with pytest.raises(StopIteration) as stop:
        flow.send([Outcome(value=YesNoScore(p_yes=0.01, p_no=0.9))])
    assert stop.value.value.decision == "safe"


def test_answer_params_override_and_request_params_are_used_otherwise() -> None:
    backend = ScriptedBackend(["a", "no"])
    request = single_turn().model_copy(update={"params": GenerationParams(max_new_tokens=7)})
    ECSO(backend).run(request)
    assert backend.requests[0].params.max_new_tokens == 7
    backend = ScriptedBackend(["a", "no"])
    ECSO(backend, ECSOConfig(answer_params=GenerationParams(max_new_tokens=3))).run(request)
    assert backend.requests[0].params.max_new_tokens == 3
