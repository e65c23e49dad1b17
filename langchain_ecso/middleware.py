"""``ECSOMiddleware``: guard every model call of a LangChain v1 agent whose input carries images."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import BaseMessage

from ecso_core.config import ECSOConfig

from .chat_model import ChatECSO

__all__ = ["ECSOMiddleware"]


class ECSOMiddleware(AgentMiddleware):
    """Agent middleware for ``create_agent(..., middleware=[ECSOMiddleware()])``.

    A model call whose messages carry an image runs through :class:`ChatECSO` wrapped around the
    agent's own model: the request's model is swapped (``request.override(model=...)``) and the
    handler is called exactly once, so no unchecked answer is ever produced for the user to see.
    Calls without images go through unchanged.

    Args:
        config: the guard's configuration.
        judge: optional separate LangChain chat model for the self-check.

    """

    def __init__(self, config: ECSOConfig | None = None, judge: Any = None) -> None:
        super().__init__()
        self.config = config or ECSOConfig()
        self.judge = judge

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        """Swap in the guarded model when the call's input has images."""
        return handler(self._guarded(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """Async :meth:`wrap_model_call`."""
        return await handler(self._guarded(request))

    def _guarded(self, request: ModelRequest) -> ModelRequest:
        if isinstance(request.model, ChatECSO) or not any(_has_image(m) for m in request.messages):
            return request
        return request.override(model=ChatECSO(model=request.model, config=self.config, judge=self.judge))


def _has_image(message: BaseMessage) -> bool:
    return any(block.get("type") in ("image", "image_url") for block in message.content_blocks)
