"""ecso: Eyes Closed, Safety On — a training-free guard for vision-language chat models.

``import ecso_core`` stays light: torch, transformers and web frameworks load only when a backend
that needs them is first used. Heavy backends are reached by their module
(``from ecso_core.backends.transformers import TransformersBackend``, needs the ``hf`` extra) or by
:func:`load_backend` spec strings; everything in ``__all__`` imports with the base install.
"""

from __future__ import annotations

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
    "load_backend",
    "register_prompt_set",
]
