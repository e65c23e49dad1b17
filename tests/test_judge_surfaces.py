"""A judge profile on every surface: the server, the CLI, LangChain and LlamaIndex.

Each surface takes the profile from its config (or flag), sends the judge the profile's requests and
shows the verdict's profile and categories, and never the judge's free text about a flagged answer:
the text guard below writes CHECK-MARK into its categories line.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ecso_core import ECSO, ChatRequest, ECSOConfig, ScriptedBackend, by_step

REFUSAL = "I can't help with that."
ANSWER = "Here is how: ANSWER-MARK step one."
JUDGE_REPLY = "Safety: Unsafe\nCategories: Violent, CHECK-MARK how to mix"
MARKS = ("ANSWER-MARK", "CHECK-MARK", "CAPTION-MARK")


def model_script() -> Any:
    return by_step(answer=ANSWER, caption="CAPTION-MARK a drawing", eyes_closed=REFUSAL, default=ANSWER)


def leaks(text: str) -> list[str]:
    return [mark for mark in MARKS if mark in text]


def test_server_shows_profile_and_vetted_categories_only() -> None:
    pytest.importorskip("fastapi")
    from ecso_core.server import create_app
    from tests.test_server import image_message, live

    judge = ScriptedBackend([JUDGE_REPLY] * 4)
    guard = ECSO(ScriptedBackend(model_script()), ECSOConfig(judge_profile="classifier"), judge=judge)
    with live(create_app(guard)) as url:
        body = {"messages": image_message("How do I build what is shown?")}
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)
        streamed = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=20)
    assert plain.status_code == streamed.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"] == REFUSAL
    verdict = plain.json()["ecso"]["verdict"]
    assert (verdict["profile"], verdict["categories"]) == ("classifier", ["Violent", "other"])
    assert plain.headers["x-ecso-decision"] == "unsafe"
    for response in (plain, streamed):
        assert leaks(response.text + json.dumps(dict(response.headers))) == []
    assert [r.messages[-1].role for r in judge.requests] == ["assistant", "assistant"]


def test_langchain_chat_ecso_takes_the_profile_from_its_config() -> None:
    pytest.importorskip("langchain_core")
    from langchain_ecso import ChatECSO
    from langchain_ecso.testing import ScriptedChatModel
    from tests.langchain_adapter.test_chat_model import image_message

    judge = ScriptedChatModel(reply=lambda *_: "unsafe\nS9")
    chat = ChatECSO(
        model=ScriptedChatModel(reply=model_script()), judge=judge, config=ECSOConfig(judge_profile="llama-guard-4")
    )
    message = chat.invoke([image_message("How do I build what is shown?")])
    assert message.content == REFUSAL
    verdict = message.response_metadata["ecso"]["verdict"]
    assert (verdict["profile"], verdict["categories"]) == ("llama-guard-4", ["S9"])
    assert leaks(json.dumps(message.response_metadata, default=str)) == []


def test_llamaindex_llm_takes_the_profile_from_its_config() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

    from llamaindex_ecso import ECSOMultiModalLLM
    from llamaindex_ecso.testing import ScriptedLLM
    from tests.llamaindex_adapter.test_llm import KITCHEN

    judge = ScriptedLLM(reply=lambda *_: JUDGE_REPLY)
    llm = ECSOMultiModalLLM(
        llm=ScriptedLLM(reply=model_script()), judge=judge, config=ECSOConfig(judge_profile="classifier")
    )
    blocks = [ImageBlock(path=KITCHEN), TextBlock(text="How do I build what is shown?")]
    response = llm.chat([ChatMessage(role=MessageRole.USER, blocks=blocks)])
    assert response.message.content == REFUSAL
    verdict = response.additional_kwargs["ecso"]["verdict"]
    assert (verdict["profile"], verdict["categories"]) == ("classifier", ["Violent", "other"])
    assert leaks(json.dumps(response.additional_kwargs, default=str) + str(response.raw)) == []


def test_judge_answers_reads_images_like_the_guard(tmp_path: Any) -> None:
    from ecso_core import ImagePart, Message, TextPart

    judge = ScriptedBackend(["No", "Yes", "No"])  # ShieldGemma 2: three policies, 'sexual' violates
    guard = ECSO(ScriptedBackend(["unused"]), ECSOConfig(judge_profile="shieldgemma-2"), judge=judge)
    from tests.test_judge_profiles import RED

    request = ChatRequest(messages=[Message(role="user", content=[ImagePart(image=RED), TextPart(text="q")])])
    (verdict,) = guard.judge_answers([(request, "any answer")])
    assert (verdict.unsafe, verdict.categories, verdict.profile) == (True, ("sexual",), "shieldgemma-2")
