"""The guarded OpenAI-compatible server: protocol (schema), service (protocol <-> core), app (routes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI loads only when the server is actually built.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
