"""ecso: Eyes Closed, Safety On — a training-free guard for vision-language chat models.

``import ecso_core`` stays light: torch, transformers and web frameworks load only when a backend
that needs them is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends import (
    BackendBase,
    BackendCapabilities,
    OpenAIBackend,
    ScriptedBackend,
    VisionChatBackend,
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
from .prompts import PROMPT_SETS, PromptSet
from .result import ECSOResult, StepTrace
from .types import (
    ChatReply,
    ChatRequest,
    GenerationParams,
    ImagePart,
    ImageURL,
    Message,
    TextPart,
    TokenUsage,
    ToolCall,
    YesNoScore,
)
from .verdict import Verdict

if TYPE_CHECKING:
    from .backends.transformers import TransformersBackend

__version__ = "0.1.0"

__all__ = [
    "ECSO",
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
    "StepTrace",
    "StreamEnd",
    "TextDelta",
    "TextPart",
    "TokenUsage",
    "ToolCall",
    "TransformersBackend",
    "Verdict",
    "VisionChatBackend",
    "YesNoScore",
    "__version__",
    "load_backend",
]


def __getattr__(name: str) -> Any:
    if name == "TransformersBackend":
        from .backends.transformers import TransformersBackend

        return TransformersBackend
    raise AttributeError(f"module 'ecso_core' has no attribute {name!r}")
