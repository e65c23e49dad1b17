"""The narrow protocol every vision-chat backend implements, and what backends share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from .._model import ECSOModel
from ..errors import CapabilityError, ConfigError
from ..types import ChatReply, ChatRequest, YesNoScore

__all__ = ["BackendBase", "BackendCapabilities", "VisionChatBackend", "check_capabilities", "whole_answer_stream"]


class BackendCapabilities(ECSOModel):
    """What a backend can do; requests are checked against it before any model call."""

    invalid = ConfigError

    score_yes_no: bool = False
    """Offers :meth:`VisionChatBackend.score_yes_no` (first-token yes/no probabilities)."""
    max_images: int | None = None
    """Most images per request; None for no fixed limit."""
    tools: bool = False
    """Understands tool definitions and returns tool calls."""
    call_options: bool = False
    """Passes :attr:`ChatRequest.options` to the model (provider call options such as ``response_format``)."""


@runtime_checkable
class VisionChatBackend(Protocol):
    """A vision-language chat model. Calls are batched: one reply per request, in order."""

    name: str
    """Human-readable model name (recorded in results and served by ``/v1/models``)."""
    capabilities: BackendCapabilities

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Answer each request."""
        ...

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Answer each request without blocking the event loop."""
        ...

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """P("yes") and P("no") as the first answer token of each request (if ``capabilities.score_yes_no``).

        The contract: real token probabilities, or None for a request the backend could not score
        (e.g. a server that sent no log-probabilities). Never a score made up from generated text:
        the guard then asks for text itself, and its verdict records that it did.
        """
        ...

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Async :meth:`score_yes_no`."""
        ...


def whole_answer_stream(backend: VisionChatBackend, request: ChatRequest) -> Iterator[str | ChatReply]:
    """``backend``'s answer to ``request`` as a stream in one piece: its text as one delta, then the reply."""
    (reply,) = backend.generate([request])
    if reply.text:
        yield reply.text
    yield reply


def check_capabilities(capabilities: BackendCapabilities, request: ChatRequest, name: str) -> None:
    """Raise :class:`CapabilityError` when ``request`` needs what the backend lacks."""
    count = len(request.images)
    if capabilities.max_images is not None and count > capabilities.max_images:
        raise CapabilityError(f"{name} takes at most {capabilities.max_images} image(s); got {count}")
    if request.tools and not capabilities.tools:
        raise CapabilityError(f"{name} does not support tools")
    if request.options and not capabilities.call_options:
        raise CapabilityError(f"{name} takes no provider call options (got {', '.join(sorted(request.options))})")


class BackendBase:
    """Defaults for backends: async methods run the sync ones in a worker thread, no scoring.

    Subclasses set ``name`` and ``capabilities`` and implement :meth:`generate`; backends with
    native async I/O override the ``a*`` methods.
    """

    name: str = "backend"
    capabilities: BackendCapabilities = BackendCapabilities()

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:  # pragma: no cover
        """Answer each request."""
        raise NotImplementedError

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Run :meth:`generate` off the event loop."""
        return await asyncio.to_thread(self.generate, list(requests))

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        """Text deltas of one answer as the model writes it, then the whole :class:`ChatReply`.

        The default answers in one piece (one delta, then the reply); backends that stream override it.
        A consumer may do other model calls between two deltas (progressive checks), and closing the
        iterator early stops the generation.
        """
        return whole_answer_stream(self, request)

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Not supported unless a subclass says so."""
        raise CapabilityError(f"{self.name} cannot score yes/no tokens")

    async def ascore_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """Run :meth:`score_yes_no` off the event loop."""
        return await asyncio.to_thread(self.score_yes_no, list(requests))
