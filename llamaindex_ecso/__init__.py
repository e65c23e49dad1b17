"""llamaindex_ecso: ECSO as a LlamaIndex multimodal LLM, and any LlamaIndex LLM as an ecso backend."""

from __future__ import annotations

from ecso_core.errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError("llama-index-core", "llamaindex") from exc

from .backend import ECSOStepEndEvent, ECSOStepStartEvent, LlamaIndexBackend
from .llm import ECSOMultiModalLLM

__all__ = ["ECSOMultiModalLLM", "ECSOStepEndEvent", "ECSOStepStartEvent", "LlamaIndexBackend"]
