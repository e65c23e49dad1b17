"""The public surface is pinned, and importing ecso_core stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ecso_core

SPEC_NAMES = {
    "ECSO",
    "ECSOConfig",
    "ECSOResult",
    "Message",
    "TextPart",
    "ImagePart",
    "ChatRequest",
    "ChatReply",
    "GenerationParams",
    "VisionChatBackend",
    "load_backend",
    "TransformersBackend",
    "ScriptedBackend",
    "ECSOError",
    "ImageError",
    "BackendError",
}


def test_all_spec_names_but_the_heavy_backend_are_in_all() -> None:
    assert SPEC_NAMES - set(ecso_core.__all__) == {"TransformersBackend"}  # lazy: needs the hf extra


def test_the_heavy_backend_is_importable_from_the_package_as_from_its_module() -> None:
    pytest.importorskip("transformers")
    from ecso_core import TransformersBackend
    from ecso_core.backends.transformers import TransformersBackend as by_module

    assert TransformersBackend is by_module


def test_a_base_install_star_imports_and_reports_the_missing_backend_by_attribute() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from ecso_core import *\n"
        "import ecso_core\n"
        "print(hasattr(ecso_core, 'TransformersBackend'))\n"
        "try:\n    ecso_core.TransformersBackend\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "False"
    assert lines[1].startswith("ecso_core.TransformersBackend is unavailable: torch is not installed; install the 'hf'")


def test_all_is_pinned() -> None:
    assert sorted(ecso_core.__all__) == sorted(
        [
            "ECSO",
            "JUDGE_PROFILES",
            "JudgeProfile",
            "register_judge_profile",
            "PROMPT_SETS",
            "BackendBase",
            "BackendCapabilities",
            "BackendError",
            "BackendTimeoutError",
            "BackendUnavailableError",
            "CancelToken",
            "CapabilityError",
            "ChatReply",
            "ChatRequest",
            "CheckFailedError",
            "ConfigError",
            "Decision",
            "ECSOConfig",
            "ECSOError",
            "ECSOResult",
            "ECSOStreamEvent",
            "FailMode",
            "GenerationParams",
            "ImageError",
            "ImageLimits",
            "ImagePart",
            "ImageURL",
            "InputError",
            "Message",
            "MessageError",
            "MissingDependencyError",
            "OpenAIBackend",
            "PromptSet",
            "RequestCancelledError",
            "ScriptedBackend",
            "StepEvent",
            "StepName",
            "StepTrace",
            "StreamEnd",
            "TextDelta",
            "TextPart",
            "TokenUsage",
            "ToolCall",
            "Verdict",
            "VisionChatBackend",
            "YesNoScore",
            "__version__",
            "by_step",
            "load_backend",
            "register_prompt_set",
        ]
    )


def test_errors_form_one_tree() -> None:
    exported = {name for name in ecso_core.__all__ if isinstance(getattr(ecso_core, name), type)}
    errors = {name for name in exported if issubclass(getattr(ecso_core, name), BaseException)}
    assert errors == {
        "BackendError",
        "BackendTimeoutError",
        "BackendUnavailableError",
        "CapabilityError",
        "CheckFailedError",
        "ConfigError",
        "ECSOError",
        "ImageError",
        "InputError",
        "MessageError",
        "MissingDependencyError",
        "RequestCancelledError",
    }
    outside = sorted(name for name in errors if not issubclass(getattr(ecso_core, name), ecso_core.ECSOError))
    assert outside == []
    # Validation failures stay ValueErrors, for pydantic users.
    valueerrors = {name for name in errors if issubclass(getattr(ecso_core, name), ValueError)}
    assert valueerrors >= {"ConfigError", "ImageError", "InputError", "MessageError"}


def test_import_is_light() -> None:
    code = (
        "import sys, ecso_core; "
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'uvicorn', 'langchain_core', 'llama_index') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scripted_backend_and_the_guard_satisfy_the_protocol_and_a_partial_backend_does_not() -> None:
    class NoScoring:
        name = "partial"
        capabilities = ecso_core.BackendCapabilities()

        def generate(self, requests: object) -> list[ecso_core.ChatReply]:
            return []

        async def agenerate(self, requests: object) -> list[ecso_core.ChatReply]:
            return []

    assert isinstance(ecso_core.ScriptedBackend([]), ecso_core.VisionChatBackend)
    assert isinstance(ecso_core.ECSO(ecso_core.ScriptedBackend([])), ecso_core.VisionChatBackend)
    assert not isinstance(NoScoring(), ecso_core.VisionChatBackend)
