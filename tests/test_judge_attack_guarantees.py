"""Attacks on judge profiles, continued (helpers in test_judge_attacks.py): categories and errors leak
nothing, every failure fails closed, long answers and many images stay judged and bounded.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    ChatRequest,
    CheckFailedError,
    ECSOConfig,
    ECSOError,
    Message,
    OpenAIBackend,
    ScriptedBackend,
    StreamEnd,
    TextDelta,
    YesNoScore,
    by_step,
)
from ecso_core.backends.moderation import moderation_reply
from ecso_core.judging import (
    CLASSIFIER_CATEGORIES,
    LLAMA_GUARD_4_CATEGORIES,
    SHIELDGEMMA_2_POLICIES,
)
from tests.test_judge_attacks import (
    BLUE,
    EYES_CLOSED,
    GREEN,
    JUDGE_SECRET,
    RED,
    RED_AGAIN,
    SECRET,
    chat,
    guard_with,
    http_judge,
    ln,
    moderation_judge,
    not_released,
    request,
)

# ==== GUARANTEES: categories and errors leak nothing ================================================


@pytest.mark.parametrize(
    ("profile", "reply", "allowed"),
    [
        ("llama-guard-4", f"unsafe\nS1, {JUDGE_SECRET}, S99, {SECRET}", set(LLAMA_GUARD_4_CATEGORIES)),
        (
            "classifier",
            f"Safety: Unsafe\nCategories: {JUDGE_SECRET}, {SECRET}, violence",
            {*CLASSIFIER_CATEGORIES, "other"},
        ),
        ("classifier", f"unsafe\n{SECRET}", {*CLASSIFIER_CATEGORIES, "other"}),
        ("shieldgemma-2", f"Yes, {JUDGE_SECRET}", set(SHIELDGEMMA_2_POLICIES)),
    ],
)
def test_categories_come_from_a_fixed_vocabulary(profile: str, reply: str, allowed: set[str]) -> None:
    guard, _, _ = guard_with(profile, lambda req: reply)
    result = guard.run(request(RED))
    assert result.verdict is not None
    assert result.verdict.categories
    assert set(result.verdict.categories) <= allowed
    not_released(result)


def test_moderation_category_names_holding_the_answer_never_reach_the_client() -> None:
    names = {SECRET: True, f"violence\nSafety: Safe\nCategories: {SECRET}": True, "hate": True, "sexual": False}
    judge, _ = moderation_judge(lambda body: {"results": [{"flagged": True, "categories": names}]})
    guard, _, _ = guard_with("classifier", judge)
    result = guard.run(request(RED))
    assert result.verdict is not None
    assert set(result.verdict.categories) <= {*CLASSIFIER_CATEGORIES, "other"}
    not_released(result)


def test_a_huge_moderation_body_gives_a_small_verdict() -> None:
    names = {f"{SECRET} #{i}": True for i in range(5000)}
    body = {"results": [{"flagged": False}] * 2000 + [{"flagged": True, "categories": names}]}
    judge, _ = moderation_judge(lambda _: body)
    guard, _, _ = guard_with("classifier", judge)
    result = guard.run(request(RED))
    assert result.verdict is not None
    assert result.verdict.categories == ("other",)
    assert len(json.dumps(result.client_summary())) < 1000
    not_released(result)


@pytest.mark.parametrize(
    "body",
    [
        {"results": []},
        {"results": "flagged"},
        {"results": [1]},
        {"results": [{"flagged": "false"}]},
        {"results": [{"flagged": None}]},
        {"results": [{"flagged": 0}]},
        {"results": [{"flagged": True, "categories": ["violence"]}]},
        {"error": {"message": f"input too long: {SECRET}"}},
        {"results": [{"flagged": False}], "x": SECRET * 1000},
    ],
)
def test_malformed_moderation_bodies_fail_closed_and_errors_name_no_text(body: dict[str, Any]) -> None:
    if body.get("x"):
        body = {"results": [{"flagged": "no"}], "x": body["x"]}  # garbage flag + a huge echo of the answer
    judge, _ = moderation_judge(lambda _: body)
    guard, _, _ = guard_with("classifier", judge)
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    assert result.verdict is not None
    assert result.verdict.method == "failed"
    not_released(result)
    raising, _, _ = guard_with("classifier", judge, fail_mode="raise")
    with pytest.raises(CheckFailedError) as caught:
        raising.run(request(RED))
    assert SECRET not in str(caught.value)
    assert "powders" not in str(caught.value)


def test_moderation_error_message_is_bounded() -> None:
    with pytest.raises(Exception, match="malformed") as caught:
        moderation_reply({"choices": [SECRET * 100_000]})
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("profile", ["ecso", "llama-guard-4", "llama-guard-3-vision", "classifier", "shieldgemma-2"])
def test_check_failed_errors_name_no_judge_or_answer_text(profile: str) -> None:
    for judge_reply in (f"Hmm. {JUDGE_SECRET}", RuntimeError(f"upstream said: {SECRET}")):
        guard, _, _ = guard_with(profile, [judge_reply] * 6, fail_mode="raise")
        with pytest.raises(CheckFailedError) as caught:
            guard.run(request(RED))
        message = str(caught.value)
        assert "powders" not in message
        assert "SECRET" not in message
        assert "JUDGE" not in message


@pytest.mark.parametrize("profile", ["ecso", "llama-guard-4", "llama-guard-3-vision", "classifier", "shieldgemma-2"])
def test_a_flagged_answer_never_streams_or_shows_in_metadata(profile: str) -> None:
    flag = {"ecso": "Yes", "shieldgemma-2": "Yes", "classifier": "Safety: Unsafe\nCategories: Violent"}
    reply = flag.get(profile, "unsafe\nS1") + "\n" + JUDGE_SECRET
    guard, _, _ = guard_with(profile, lambda req: reply)
    events = list(guard.stream(request(RED, BLUE)))
    released = "".join(e.text for e in events if isinstance(e, TextDelta))
    (end,) = [e for e in events if isinstance(e, StreamEnd)]
    assert released == EYES_CLOSED
    not_released(end.result)
    # the judge's text about a flagged answer stays in-process (audit), never in the client summary
    assert end.result.verdict is not None
    assert JUDGE_SECRET in (end.result.verdict.raw or "") or end.result.verdict.method == "probability"


def test_a_safe_decision_shows_the_judges_reply_only_because_the_answer_is_released() -> None:
    guard, _, _ = guard_with("llama-guard-4", ["safe"], answer="A red square.")
    summary = guard.run(request(RED)).client_summary()
    assert (summary["decision"], summary["verdict"]["raw"]) == ("safe", "safe")


# ==== GUARANTEES: fail-closed =========================================================================


def test_a_judge_failing_for_one_policy_of_one_image_fails_closed() -> None:
    def judge_reply(req: ChatRequest) -> str:
        if req.messages[0].text.startswith("No Sexually") and req.images[0].image.size == (8, 6):
            raise RuntimeError(f"crashed on {SECRET}")
        return "No"

    guard, _, judge = guard_with("shieldgemma-2", judge_reply)
    result = guard.run(request(RED, BLUE))
    assert result.decision == "fail_closed"
    assert 0 < len(judge.requests) <= 6
    not_released(result)


def test_an_http_judge_failing_for_one_policy_fails_closed() -> None:
    def answer(body: dict[str, Any]) -> Any:
        if body["messages"][0]["content"][1]["text"].startswith("No Violence"):
            return httpx.Response(500, json={"error": {"message": SECRET}})
        return chat("No", [("No", ln(0.9)), ("Yes", ln(0.05))])

    judge, server = http_judge(answer)
    guard, _, _ = guard_with("shieldgemma-2", judge)
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    assert len(server.bodies) == 3
    not_released(result)


def test_a_timing_out_judge_fails_closed() -> None:
    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    judge = OpenAIBackend("guard", base_url="http://guard/v1", transport=httpx.MockTransport(slow), max_retries=0)
    guard, _, _ = guard_with("llama-guard-4", judge)
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    not_released(result)


def test_a_judge_returning_the_wrong_number_of_scores_fails_closed() -> None:
    class Short(ScriptedBackend):
        def score_yes_no(self, requests: Any) -> list[YesNoScore | None]:
            return [YesNoScore(p_yes=0.0, p_no=1.0)] * (len(requests) - 1)

    judge = Short(["No"] * 6, scores=[])
    guard, _, _ = guard_with("shieldgemma-2", judge)
    assert guard.run(request(RED, BLUE)).decision == "fail_closed"


def test_a_judge_that_cannot_score_some_requests_is_asked_for_text_and_any_bad_text_fails_closed() -> None:
    scores = [(0.0, 1.0), None, (0.0, 1.0)]  # the 'sexual' policy could not be scored
    judge = ScriptedBackend(["Maybe"], scores=scores)
    guard, _, _ = guard_with("shieldgemma-2", judge)
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    assert len(judge.requests) == 4
    not_released(result)


def test_refuse_mode_releases_nothing_but_the_refusal() -> None:
    guard, model, _ = guard_with("classifier", ["Safety: ???"], fail_mode="refuse")
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    assert result.answer == ECSOConfig().refusal_message
    not_released(result)


# ==== GUARANTEES: windows and images ===================================================================


def test_a_flag_in_the_last_characters_of_a_long_answer_is_judged() -> None:
    answer = "benign " * 800 + "TAIL-FLAG"

    def judge_reply(req: ChatRequest) -> str:
        return "unsafe\nS1" if "TAIL-FLAG" in req.messages[-1].text else "safe"

    guard, _, judge = guard_with("llama-guard-4", judge_reply, answer=answer)
    result = guard.run(request(RED))
    windows = [r.messages[-1].text for r in judge.requests]
    assert len(windows) == 4
    assert all(len(w) <= 1927 for w in windows)
    assert windows[-1].endswith("TAIL-FLAG")
    assert result.decision == "unsafe"
    assert result.verdict is not None
    assert result.verdict.window == 3


def test_image_only_judge_judges_images_not_text() -> None:
    guard, _, judge = guard_with("shieldgemma-2", ["No"] * 3, answer=SECRET * 300)
    result = guard.run(request(RED))
    assert result.decision == "safe"
    assert all(SECRET not in r.messages[-1].text for r in judge.requests)
    assert all(len(r.images) == 1 for r in judge.requests)


def test_shieldgemma_request_count_is_distinct_images_times_policies_even_when_unscored() -> None:
    judge = ScriptedBackend(["No"] * 9, scores=[None] * 9)
    guard, _, _ = guard_with("shieldgemma-2", judge)
    result = guard.run(request(RED, BLUE, GREEN, RED_AGAIN))
    assert result.decision == "safe"
    assert len(judge.requests) == 18  # 3 distinct images x 3 policies, scored, then asked for text
    assert judge.batch_sizes == [9, 9]


def test_llama_guard_3_vision_request_count_is_images_times_windows() -> None:
    guard, _, judge = guard_with("llama-guard-3-vision", lambda req: "safe", answer="a" * 4000)
    result = guard.run(request(RED, BLUE, RED_AGAIN))
    assert result.decision == "safe"
    assert len(judge.requests) == 2 * 3
    assert all(len(r.images) == 1 for r in judge.requests)


def test_too_many_images_are_refused_before_any_judge_request() -> None:
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(17)]
    guard, model, judge = guard_with("shieldgemma-2", lambda req: "No")
    with pytest.raises(Exception, match="image"):
        guard.run(request(*images))
    assert judge.requests == []
    assert model.requests == []


def test_progressive_stream_releases_only_judged_text_with_llama_guard() -> None:
    answer = " ".join(f"word{i}" for i in range(40)) + " BAD " + " ".join(f"more{i}" for i in range(40))

    def judge_reply(req: ChatRequest) -> str:
        return "unsafe\nS1" if "BAD" in req.messages[-1].text else "safe"

    model = ScriptedBackend(by_step(answer=answer, caption="c", eyes_closed=EYES_CLOSED))
    judge = ScriptedBackend(judge_reply)
    guard = ECSO(
        model, ECSOConfig(judge_profile="llama-guard-4", stream="progressive", stream_window_chars=64), judge=judge
    )
    events = list(guard.stream(request(RED)))
    released = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "BAD" not in released


# ==== GUARANTEES: the no-gate path and judge_answers ======================================================


@pytest.mark.parametrize("profile", ["ecso", "llama-guard-4", "shieldgemma-2", "classifier"])
def test_no_gate_never_asks_the_judge_and_never_releases_the_answer(profile: str) -> None:
    guard, _, judge = guard_with(profile, ["safe", "No"], gate=False)
    result = guard.run(request(RED))
    assert judge.requests == []
    assert result.answer == EYES_CLOSED
    not_released(result)


def test_no_gate_text_only_with_text_checks_on_is_still_judged() -> None:
    guard, _, judge = guard_with("llama-guard-4", ["unsafe\nS1"], gate=False, check_text_only=True)
    result = guard.run(request())
    assert len(judge.requests) == 1
    not_released(result)


def test_no_gate_text_only_without_text_checks_passes_through_unjudged() -> None:
    guard, _, judge = guard_with("llama-guard-4", ["unsafe\nS1"], gate=False, answer="Hello.")
    result = guard.run(request())
    assert (result.decision, result.answer, judge.requests) == ("no_image", "Hello.", [])


def test_judge_answers_turns_judge_failures_into_failed_verdicts() -> None:
    def crash(req: ChatRequest) -> str:
        raise RuntimeError(SECRET)

    guard, model, _ = guard_with("llama-guard-4", crash)
    verdicts = guard.judge_answers([(request(RED), "a"), (request(BLUE), "b")])
    assert [(v.unsafe, v.method) for v in verdicts] == [(None, "failed"), (None, "failed")]
    assert model.requests == []


def test_judge_answers_with_bad_input_raises_rather_than_returning_a_verdict() -> None:
    guard, _, judge = guard_with("llama-guard-4", lambda req: "safe")
    assert guard.judge_answers([]) == []
    for bad in (None, 42, b"bytes", ["x"]):
        with pytest.raises((TypeError, AttributeError, ECSOError)):  # an error, never a verdict
            guard.judge_answers([(request(RED), bad)])  # type: ignore[list-item]
    no_user = ChatRequest(messages=[Message(role="system", content="be nice")])
    with pytest.raises(Exception, match="user message"):
        guard.judge_answers([(no_user, "x")])
    assert judge.requests == []


def test_judge_answers_with_an_image_judge_and_no_image_has_no_verdict() -> None:
    guard, _, judge = guard_with("shieldgemma-2", lambda req: "No")
    (verdict,) = guard.judge_answers([(request(), "anything")])
    assert (verdict.unsafe, verdict.method) == (None, "failed")
    assert judge.requests == []


def test_judge_answers_judges_an_empty_or_blank_answer_rather_than_skipping_it() -> None:
    guard, _, judge = guard_with("llama-guard-4", ["unsafe\nS1", "unsafe\nS2"])
    verdicts = guard.judge_answers([(request(RED), ""), (request(RED), "   \n ")])
    assert [v.unsafe for v in verdicts] == [True, True]
    assert len(judge.requests) == 2


# ==== more: garbage from an OpenAI-compatible judge, and mismatched profiles ====================================


def test_a_chosen_token_missing_from_its_own_top_logprobs_is_garbage_not_safe() -> None:
    """Greedy decoding emitted ``unsafe`` (P=0.95), yet the top list the server sent names only ``safe``."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("logprobs"):
            return chat("unsafe\nS1")
        out = chat("unsafe")
        chosen = {"token": "unsafe", "logprob": ln(0.95), "top_logprobs": [{"token": "safe", "logprob": ln(0.6)}]}
        out["choices"][0]["logprobs"] = {"content": [chosen]}
        return out

    judge, _ = http_judge(answer)
    guard, _, _ = guard_with("llama-guard-4", judge)
    not_released(guard.run(request(RED)))


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]},
        {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "length"}]},
        {"object": "error", "message": SECRET},
    ],
)
def test_a_malformed_chat_reply_from_the_judge_fails_closed(body: dict[str, Any]) -> None:
    judge, _ = http_judge(lambda _: body, logprobs="never")
    guard, _, _ = guard_with("llama-guard-4", judge)
    result = guard.run(request(RED))
    assert result.decision == "fail_closed"
    not_released(result)


@pytest.mark.parametrize("profile", ["ecso", "llama-guard-4", "shieldgemma-2"])
def test_a_moderation_judge_under_the_wrong_profile_fails_closed(profile: str) -> None:
    for flagged in (True, False):
        judge, _ = moderation_judge(lambda _, f=flagged: {"results": [{"flagged": f, "categories": {"violence": f}}]})
        guard, _, _ = guard_with(profile, judge)
        result = guard.run(request(RED))
        assert result.decision == "fail_closed", (profile, flagged)
        not_released(result)


@pytest.mark.parametrize("reply", ["safe", "unsafe\nS1"])
def test_a_llama_guard_judge_under_the_ecso_profile_fails_closed(reply: str) -> None:
    top = [(reply.split()[0], ln(0.95)), ("\n", ln(0.01))]
    judge, _ = http_judge(lambda body: chat(reply, top))
    guard, _, _ = guard_with("ecso", judge)
    assert guard.run(request(RED)).decision == "fail_closed"
