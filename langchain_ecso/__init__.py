"""langchain_ecso: ECSO as a LangChain chat model, an ecso backend over any LangChain model, and agent middleware.

>>> from langchain_ecso import ChatECSO
>>> llm = ChatECSO(model=my_chat_model)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecso_core.errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError("langchain-core", "langchain") from exc

from .backend import LangChainBackend
from .chat_model import ChatECSO

if TYPE_CHECKING:
    from .middleware import ECSOMiddleware

__all__ = ["ChatECSO", "ECSOMiddleware", "LangChainBackend"]


def __getattr__(name: str) -> Any:
    # The middleware needs the `langchain` package (create_agent), not only langchain-core.
    if name == "ECSOMiddleware":
        try:
            from .middleware import ECSOMiddleware
        except ImportError as exc:
            raise MissingDependencyError("langchain", "langchain") from exc
        return ECSOMiddleware
    raise AttributeError(name)
