"""llamaindex_ecso: ECSO as a LlamaIndex LLM, LlamaIndex LLMs as ecso backends, query engines that show decisions."""

from __future__ import annotations

from ecso_core.errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError("llama-index-core", "llamaindex") from exc

from .backend import ECSOStepEndEvent, ECSOStepStartEvent, LlamaIndexBackend
from .llm import ECSOMultiModalLLM
from .query_engine import ECSOQueryEngine

__all__ = ["ECSOMultiModalLLM", "ECSOQueryEngine", "ECSOStepEndEvent", "ECSOStepStartEvent", "LlamaIndexBackend"]
