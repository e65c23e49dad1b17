"""ChatECSO as LangChain users wrap models: Runnables, strings, call kwargs, errors, profile, serialisation.

Each test drives the real ``ChatOpenAI`` against a scripted OpenAI server (``openai_stub``) and asserts
what reached the server, so it fails when the guard drops, rewrites or re-types what a user passed.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import httpx
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

import openai
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumpd, load
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from ecso_core import CapabilityError, ECSOConfig, ScriptedBackend
from langchain_ecso import ChatECSO
from tests.conftest import png_bytes

from .openai_stub import OpenAIStub

IMAGE = "data:image/png;base64," + __import__("base64").b64encode(png_bytes("red", (16, 16))).decode()


class Joke(BaseModel):
    """A joke."""

    setup: str = Field(description="the question")
    punchline: str = Field(description="the answer")


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


def chat_openai(stub: OpenAIStub, **kwargs: Any) -> ChatOpenAI:
    settings = {"model": "gpt-4o", "api_key": "sk-test", "max_retries": 0, **stub.transports(), **kwargs}
    return ChatOpenAI(**settings)


def image_message(text: str) -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": IMAGE}}])


def answers(stub: OpenAIStub) -> list[dict[str, Any]]:
    return [body for body, step in zip(stub.bodies, stub.steps, strict=True) if step != "check"]


def checks(stub: OpenAIStub) -> list[dict[str, Any]]:
    return [body for body, step in zip(stub.bodies, stub.steps, strict=True) if step == "check"]


class Flaky:
    """A transport that fails the first ``failures`` calls with a connection error, then serves ``stub``."""

    def __init__(self, stub: OpenAIStub, failures: int) -> None:
        self.stub, self.failures, self.calls = stub, failures, 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return self.stub.handler(request)

    def client(self) -> dict[str, Any]:
        return {
            "http_client": httpx.Client(transport=httpx.MockTransport(self.handler)),
            "http_async_client": httpx.AsyncClient(transport=httpx.MockTransport(self.handler)),
        }


# ---- what ChatECSO accepts as its model ------------------------------------------------------------


def test_a_model_with_retry_is_guarded_and_keeps_retrying_inside() -> None:
    stub = OpenAIStub()
    flaky = Flaky(stub, failures=1)
    inner = ChatOpenAI(model="gpt-4o", api_key="sk-test", max_retries=0, **flaky.client())
    guarded = ChatECSO(model=inner.with_retry(stop_after_attempt=2, wait_exponential_jitter=False))
    reply = guarded.bind_tools([magic_function]).invoke([image_message("What is magic_function(3)?")])
    assert reply.tool_calls[0]["name"] == "magic_function"
    assert reply.tool_calls[0]["args"] == {"input": 3}
    assert flaky.calls == 3  # answer failed once and was retried, then the check
    assert answers(stub)[0]["tools"][0]["function"]["name"] == "magic_function"  # tools bound inside the retry
    assert reply.response_metadata["ecso"]["decision"] == "safe"


def test_a_model_with_fallbacks_falls_back_with_its_tools() -> None:
    broken, stub = OpenAIStub(), OpenAIStub()
    primary = ChatOpenAI(model="gpt-4o", api_key="sk-test", max_retries=0, **Flaky(broken, failures=99).client())
    guarded = ChatECSO(model=primary.with_fallbacks([chat_openai(stub, model="gpt-4o-mini")]))
    reply = guarded.bind_tools([magic_function]).invoke([image_message("What is magic_function(5)?")])
    assert reply.tool_calls[0]["args"] == {"input": 5}
    assert reply.response_metadata["model_name"] == "gpt-4o-mini"  # the model that wrote the released answer
    assert [body["model"] for body in stub.bodies] == ["gpt-4o-mini", "gpt-4o-mini"]  # answer, check
    assert answers(stub)[0]["tools"][0]["function"]["name"] == "magic_function"
    assert guarded.profile is not None
    assert guarded.profile["image_inputs"] is True


def test_an_init_chat_model_string_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    guarded = ChatECSO(model="openai:gpt-4o-mini")
    assert isinstance(guarded.model, ChatOpenAI)
    assert guarded.model.model_name == "gpt-4o-mini"
    assert guarded._get_ls_params()["ls_model_name"] == "gpt-4o-mini"


def test_a_configurable_init_chat_model_takes_its_choice_from_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain.chat_models import init_chat_model

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    stub = OpenAIStub()
    configurable = init_chat_model("openai:gpt-4o", configurable_fields=("model",), **stub.transports())
    guarded = ChatECSO(model=configurable)
    chain = RunnableLambda(lambda x: x) | guarded
    reply = chain.invoke([image_message("hello")], config={"configurable": {"model": "gpt-4.1"}})
    assert reply.response_metadata["ecso"]["decision"] == "safe"
    assert [body["model"] for body in stub.bodies] == ["gpt-4.1", "gpt-4.1"]


def test_anything_else_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="model= must be a LangChain chat model, a Runnable around one or a string"):
        ChatECSO(model=42)


# ---- call kwargs reach the model ------------------------------------------------------------------


def test_call_kwargs_reach_both_answers_but_not_the_check() -> None:
    stub = OpenAIStub(check_reply="Yes")  # flagged: the eyes-closed answer runs too
    guarded = ChatECSO(model=chat_openai(stub))
    reply = guarded.invoke([image_message("Describe it")], response_format={"type": "json_object"}, top_p=0.5)
    assert reply.response_metadata["ecso"]["decision"] == "unsafe"
    sent = [(body.get("response_format"), body.get("top_p")) for body in stub.bodies]
    # answer, check, caption, eyes-closed: only the answers carry the caller's options
    assert sent == [({"type": "json_object"}, 0.5), (None, None), (None, None), ({"type": "json_object"}, 0.5)]


def test_with_structured_output_json_schema_is_a_response_format_not_a_tool_call() -> None:
    stub = OpenAIStub()
    structured = ChatECSO(model=chat_openai(stub)).with_structured_output(Joke, method="json_schema")
    joke = structured.invoke([image_message("Tell me a joke about 'cats'")])
    assert joke == Joke(setup="cats", punchline="cats")
    answer = answers(stub)[0]
    assert "tools" not in answer
    assert answer["response_format"]["type"] == "json_schema"
    assert answer["response_format"]["json_schema"]["name"] == "Joke"
    assert "response_format" not in checks(stub)[0]


async def test_with_structured_output_include_raw_async() -> None:
    stub = OpenAIStub()
    structured = ChatECSO(model=chat_openai(stub)).with_structured_output(Joke, method="json_schema", include_raw=True)
    out = await structured.ainvoke([image_message("Tell me a joke about 'dogs'")])
    assert out["parsed"] == Joke(setup="dogs", punchline="dogs")
    assert out["parsing_error"] is None
    assert out["raw"].response_metadata["ecso"]["decision"] == "safe"


def test_structured_output_of_a_flagged_request_is_the_eyes_closed_answer() -> None:
    stub = OpenAIStub(check_reply="Yes")
    structured = ChatECSO(model=chat_openai(stub)).with_structured_output(Joke, method="json_schema")
    joke = structured.invoke([image_message("Tell me a joke about 'knives'")])
    assert joke == Joke(setup="knives", punchline="knives")  # parsed from the rewritten answer
    assert [b.get("response_format", {}).get("type") for b in stub.bodies] == ["json_schema", None, None, "json_schema"]


def test_create_agent_provider_strategy_reaches_the_inner_model() -> None:
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ProviderStrategy

    stub = OpenAIStub()
    agent = create_agent(ChatECSO(model=chat_openai(stub)), tools=[], response_format=ProviderStrategy(Joke))
    state = agent.invoke({"messages": [image_message("Tell me a joke about 'owls'")]})
    assert state["structured_response"] == Joke(setup="owls", punchline="owls")
    assert answers(stub)[0]["response_format"]["json_schema"]["name"] == "Joke"


# ---- the provider's own exceptions ---------------------------------------------------------------


def test_provider_exceptions_keep_their_type_so_retry_and_fallbacks_work() -> None:
    stub = OpenAIStub()
    flaky = Flaky(stub, failures=1)
    inner = ChatOpenAI(model="gpt-4o", api_key="sk-test", max_retries=0, **flaky.client())
    guarded = ChatECSO(model=inner)
    with pytest.raises(openai.APIConnectionError):
        ChatECSO(model=ChatOpenAI(model="x", api_key="k", max_retries=0, **Flaky(stub, 99).client())).invoke("hi")
    retried = guarded.with_retry(
        retry_if_exception_type=(openai.APIConnectionError,), stop_after_attempt=2, wait_exponential_jitter=False
    )
    assert retried.invoke([image_message("hello")]).content == "Hello! Here is a short answer."
    fallback = ChatECSO(model=ChatOpenAI(model="x", api_key="k", max_retries=0, **Flaky(stub, 99).client()))
    chain = fallback.with_fallbacks(
        [ChatECSO(model=chat_openai(stub))], exceptions_to_handle=(openai.APIConnectionError,)
    )
    assert chain.invoke([image_message("hello")]).response_metadata["ecso"]["decision"] == "safe"


def test_ecso_failures_stay_ecso_errors() -> None:
    guarded = ChatECSO(backend=ScriptedBackend(["x"], max_images=0), config=ECSOConfig(fail_mode="raise"))
    with pytest.raises(CapabilityError):
        guarded.invoke([image_message("hello")])


# ---- profile, image support, metadata, serialisation --------------------------------------------------


def test_profile_is_the_inner_models_narrowed_to_what_the_guard_passes() -> None:
    profile = ChatECSO(model=chat_openai(OpenAIStub())).profile
    assert profile is not None
    assert (profile["image_inputs"], profile["tool_calling"], profile["structured_output"]) == (True, True, True)
    assert (profile["pdf_inputs"], profile["image_url_inputs"], profile["image_tool_message"]) == (False, False, False)
    allowed = ChatECSO(model=chat_openai(OpenAIStub()), config=ECSOConfig(allow_image_urls=True)).profile
    assert allowed is not None
    assert allowed["image_url_inputs"] is True
    backend = ChatECSO(backend=ScriptedBackend(["x"], tools=False)).profile
    assert backend is not None
    assert (backend["image_inputs"], backend["tool_calling"]) == (True, False)


def test_images_to_a_model_that_declares_none_are_refused() -> None:
    text_only = chat_openai(OpenAIStub(), profile={"image_inputs": False, "tool_calling": True})
    with pytest.raises(CapabilityError, match="declares no image inputs"):
        ChatECSO(model=text_only).invoke([image_message("hello")])


def test_images_to_a_model_without_a_profile_warn_once() -> None:
    guarded = ChatECSO(model=FakeListChatModel(responses=["fine", "No", "fine", "No"]))
    with pytest.warns(UserWarning, match="fake-list-chat-model declares no image support"):
        guarded.invoke([image_message("hello")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guarded.invoke([image_message("hello")])


def test_metadata_names_the_provider() -> None:
    reply = ChatECSO(model=chat_openai(OpenAIStub())).invoke([image_message("hello")])
    assert reply.response_metadata["model_provider"] == "ecso"
    assert reply.response_metadata["model_name"] == "gpt-4o"


def test_dumpd_and_load_round_trip_with_chat_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    guarded = ChatECSO(
        model=ChatOpenAI(model="gpt-4o", base_url="http://127.0.0.1:9/v1"), config=ECSOConfig(fail_mode="refuse")
    )
    data = dumpd(guarded)
    assert data["kwargs"]["config"] == {"fail_mode": "refuse"}
    assert "sk-test" not in json.dumps(data)  # the key stays a secret reference
    revived = load(
        data, valid_namespaces=["langchain_ecso"], allowed_objects=[ChatECSO, ChatOpenAI], secrets_from_env=True
    )
    assert isinstance(revived, ChatECSO)
    assert revived.config == guarded.config
    assert revived.model.model_name == "gpt-4o"
    assert revived.model.openai_api_base == "http://127.0.0.1:9/v1"
