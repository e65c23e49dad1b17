"""``ECSOMiddleware``: guard every model call of a LangChain v1 agent whose input carries images."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import BaseMessage

from ecso_core.config import ECSOConfig
from ecso_core.result import ECSOResult

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
        step_callbacks: handlers that also receive the guard's step runs (operator-side tracing).
        audit: called with every ``ECSOResult``, withheld text included (operator-side).

    """

    def __init__(
        self,
        config: ECSOConfig | None = None,
        judge: Any = None,
        step_callbacks: Sequence[Any] = (),
        audit: Callable[[ECSOResult], None] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ECSOConfig()
        self.judge = judge
        self.step_callbacks = list(step_callbacks)
        self.audit = audit

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
        guarded = ChatECSO(
            model=request.model,
            config=self.config,
            judge=self.judge,
            step_callbacks=self.step_callbacks,
            audit=self.audit,
        )
        return request.override(model=guarded)


def _has_image(message: BaseMessage) -> bool:
    return any(block.get("type") in ("image", "image_url") for block in message.content_blocks)
