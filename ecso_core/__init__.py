"""ecso: Eyes Closed, Safety On — a training-free guard for vision-language chat models.

``import ecso_core`` stays light: torch, transformers and web frameworks load only when a backend
that needs them is first used. ``TransformersBackend`` (the ``hf`` extra) is importable from here or
from :mod:`ecso_core.backends.transformers`, but is not in ``__all__``: everything in ``__all__``
imports with the base install, so ``from ecso_core import *`` always works.
"""

from __future__ import annotations

from typing import Any

from .backends import (
    BackendBase,
    BackendCapabilities,
    OpenAIBackend,
    ScriptedBackend,
    VisionChatBackend,
    by_step,
    load_backend,
)
from .cancel import CancelToken
from .config import ECSOConfig, FailMode, ImageLimits
from .errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityError,
    CheckFailedError,
    ConfigError,
    ECSOError,
    ImageError,
    InputError,
    MessageError,
    MissingDependencyError,
    RequestCancelledError,
)
from .guard import ECSO, ECSOStreamEvent, StepEvent, StreamEnd, TextDelta
from .judging import JUDGE_PROFILES, JudgeProfile, register_judge_profile
from .prompts import PROMPT_SETS, PromptSet, register_prompt_set
from .result import ECSOResult, StepTrace, Verdict
from .types import (
    ChatReply,
    ChatRequest,
    Decision,
    GenerationParams,
    ImagePart,
    ImageURL,
    Message,
    StepName,
    TextPart,
    TokenUsage,
    ToolCall,
    YesNoScore,
)

__version__ = "0.1.0"  # the one version source (pyproject reads it)

__all__ = [
    "ECSO",
    "JUDGE_PROFILES",
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
    "JudgeProfile",
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
    "register_judge_profile",
    "register_prompt_set",
]


def __getattr__(name: str) -> Any:
    # Lazy: torch and transformers load on first use. Without the extra this is an AttributeError
    # (hasattr() is False) whose message, and whose cause, name the pip install.
    if name == "TransformersBackend":
        try:
            from .backends.transformers import TransformersBackend
        except MissingDependencyError as exc:
            raise AttributeError(f"ecso_core.TransformersBackend is unavailable: {exc}", name=name) from exc
        return TransformersBackend
    raise AttributeError(f"module 'ecso_core' has no attribute {name!r}", name=name)
