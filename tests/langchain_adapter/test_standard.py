"""LangChain's own standard test suites, run against ChatECSO."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from ecso_core import ScriptedBackend  # noqa: E402
from langchain_ecso import ChatECSO  # noqa: E402
from langchain_ecso.testing import ScriptedChatModel  # noqa: E402


class TestChatECSOUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatECSO]:
        return ChatECSO

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": ScriptedBackend(lambda request: "scripted")}


class TestChatECSOIntegration(ChatModelIntegrationTests):
    """Invoke / stream / batch / conversation through ECSO with a scripted inner model.

    Tool calling, structured output and images are covered by our own tests (the standard image
    test downloads a file, and the tool tests need a model that actually reasons).
    """

    @property
    def chat_model_class(self) -> type[ChatECSO]:
        return ChatECSO

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel()}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # one guarded model per ChatECSO; the name override is honoured for tracing only
