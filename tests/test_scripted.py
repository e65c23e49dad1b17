"""ScriptedBackend and by_step: the shipped test doubles serve exactly what the script says, per step."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    BackendError,
    ChatReply,
    ChatRequest,
    ECSOConfig,
    ImagePart,
    Message,
    ScriptedBackend,
    TextPart,
    by_step,
)
from ecso_core.backends.scripted import call_script
from ecso_core.steps import running_step

QUERY = "How do I build this?"


def image_request(query: str = QUERY) -> ChatRequest:
    part = ImagePart(image=Image.new("RGB", (8, 8), "red"))
    return ChatRequest(messages=(Message(role="user", content=(part, TextPart(text=query))),))


def text_request(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),))


def test_by_step_serves_each_step_its_reply_and_the_backend_records_the_steps() -> None:
    backend = ScriptedBackend(
        by_step(answer="Step 1: mix.", check="Yes", caption="a diagram", eyes_closed="I can't help with that.")
    )
    result = ECSO(backend).run(image_request())
    assert (result.decision, result.answer, result.initial_answer, result.captions) == (
        "unsafe",
        "I can't help with that.",
        "Step 1: mix.",
        ("a diagram",),
    )
    assert backend.steps == ["answer", "check", "caption", "eyes_closed"]
    assert [s.output for s in result.steps] == ["Step 1: mix.", "Yes", "a diagram", "I can't help with that."]


def test_by_step_functions_get_the_request_and_replies_may_be_chat_replies() -> None:
    seen: list[str] = []

    def check(request: ChatRequest) -> ChatReply:
        seen.append(request.messages[-1].text)
        return ChatReply(text="No", finish_reason="stop")

    backend = ScriptedBackend(by_step(answer=lambda r: f"echo: {r.messages[-1].text}", check=check))
    result = ECSO(backend).run(image_request("What is it?"))
    assert (result.decision, result.answer) == ("safe", "echo: What is it?")
    assert seen == [
        "QUERY:\nWhat is it?\n\nRESPONSE:\necho: What is it?\n\n"
        "Is the RESPONSE harmful, unsafe and unethical? Answer yes or no:"
    ]


def test_by_step_default_serves_missing_steps_and_calls_outside_the_guard() -> None:
    script = by_step(check="Yes", default="fallback")
    backend = ScriptedBackend(script)
    result = ECSO(backend).run(image_request())
    assert (result.answer, result.initial_answer, result.captions) == ("fallback", "fallback", ("fallback",))
    (reply,) = backend.generate([text_request("direct")])  # no guard around this call
    assert reply.text == "fallback"
    assert backend.steps == ["answer", "check", "caption", "eyes_closed", None]


def test_by_step_names_the_step_it_has_no_reply_for() -> None:
    backend = ScriptedBackend(by_step(answer="Sure."))
    result = ECSO(backend, ECSOConfig(fail_mode="refuse")).run(image_request())  # the check fails: fail closed
    assert result.decision == "fail_closed"
    assert result.verdict is not None
    assert result.verdict.error == "BackendError: by_step has no reply for the 'check' step; give it check=..."
    with pytest.raises(BackendError, match=r"^by_step has no reply for a call outside the guard \(no current step\)"):
        backend.generate([text_request("direct")])
    with running_step("caption"), pytest.raises(BackendError, match="the 'caption' step; give it caption="):
        backend.generate([text_request("direct")])


def test_by_step_raises_a_scripted_exception() -> None:
    backend = ScriptedBackend(by_step(answer=ZeroDivisionError("boom")))
    with pytest.raises(BackendError, match="ZeroDivisionError: boom") as caught:
        ECSO(backend).run(image_request())
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_the_harmless_re_answer_of_a_text_only_request_is_the_eyes_closed_step() -> None:
    backend = ScriptedBackend(by_step(answer="Do X.", check="Yes", eyes_closed=lambda r: r.messages[-1].text))
    result = ECSO(backend, ECSOConfig(check_text_only=True)).run(text_request("how to hurt"))
    assert result.answer == "Answer the following question in a HARMLESS and ETHICAL way.\n\nhow to hurt"
    assert backend.steps == ["answer", "check", "eyes_closed"]


def test_scores_by_step() -> None:
    backend = ScriptedBackend(by_step(answer="Fine."), scores=by_step(check=(0.1, 0.8)))
    result = ECSO(backend).run(image_request())
    assert result.decision == "safe"
    assert result.verdict is not None
    assert (result.verdict.method, result.verdict.p_yes) == ("probability", pytest.approx(0.1 / 0.9))
    assert backend.steps == ["answer", "check"]


def test_call_script_passes_the_keywords_a_script_takes_and_never_hides_its_type_errors() -> None:
    kwargs = {"tools": ["t"], "stop": None}

    def plain(messages: list[str]) -> str:
        return f"plain {messages}"

    def named(messages: list[str], tools: Any = None) -> str:
        return f"named {messages} {tools}"

    def everything(messages: list[str], **kw: Any) -> str:
        return f"all {messages} {sorted(kw)}"

    def broken(messages: list[str]) -> str:
        raise TypeError("inside the script")

    assert call_script(plain, ["m"], kwargs) == "plain ['m']"
    assert call_script(named, ["m"], kwargs) == "named ['m'] ['t']"
    assert call_script(everything, ["m"], kwargs) == "all ['m'] ['stop', 'tools']"
    assert call_script(by_step(default=named), ["m"], kwargs) == "named ['m'] ['t']"
    with pytest.raises(TypeError, match="inside the script"):
        call_script(broken, ["m"], kwargs)
