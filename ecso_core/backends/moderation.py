"""A moderation endpoint (OpenAI ``/moderations`` and compatible servers) as a judge backend.

It answers no questions: each request's last message (the answer the check judges) and the
conversation's images are classified, and the result is rendered as a classifier reply,
``Safety: Unsafe`` / ``Categories: violence, self-harm``, which the ``classifier`` judge profile reads
(see :mod:`ecso_core.judging`). The endpoint's own object stays in ``ChatReply.raw``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import BackendError
from ..images import image_to_data_url, load_image
from ..types import ChatReply, ChatRequest
from .base import BackendCapabilities, check_capabilities, whole_answer_stream
from .openai import OpenAIBackend

__all__ = ["ModerationBackend", "moderation_payload", "moderation_reply"]


def moderation_payload(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``/moderations`` body: the last message's text, plus the conversation's images if any.

    Raises:
        BackendError: the last message has no text.

    """
    text = request.messages[-1].text
    if not text.strip():
        raise BackendError("a moderation request needs text in its last message")
    if not request.images:
        return {"model": model, "input": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in request.images:
        picture = image.image if hasattr(image.image, "save") else load_image(image.image)
        parts.append({"type": "image_url", "image_url": {"url": image_to_data_url(picture)}})
    return {"model": model, "input": parts}


def moderation_reply(body: dict[str, Any]) -> ChatReply:
    """``Safety: Unsafe`` + ``Categories:`` when any result is flagged, else ``Safety: Safe``.

    Raises:
        BackendError: the body has no ``results`` list of objects with a ``flagged`` field.

    """
    results = body.get("results")
    if not isinstance(results, list) or not results or not all(isinstance(r, dict) for r in results):
        # The body is not repeated: an error object may echo the input, which is the answer being judged.
        raise BackendError("malformed moderation response: no list of results")
    if any(not isinstance(r.get("flagged"), bool) for r in results):
        raise BackendError("a moderation result has no boolean 'flagged'")
    tables = [r.get("categories") or {} for r in results]
    if any(not isinstance(t, dict) or not all(isinstance(on, bool) for on in t.values()) for t in tables):
        raise BackendError("a moderation result's categories are not a table of booleans")
    # A category that is on flags the input even when 'flagged' says otherwise: the stricter reading wins.
    names = dict.fromkeys(" ".join(str(name).replace(",", " ").split()) for t in tables for name, on in t.items() if on)
    flagged = any(r["flagged"] for r in results) or bool(names)
    text = "Safety: Unsafe\nCategories: " + (", ".join(names) or "None") if flagged else "Safety: Safe"
    return ChatReply(text=text, finish_reason="stop", raw=body)


class ModerationBackend(OpenAIBackend):
    """A moderation endpoint: ``moderation:<model>@<base_url>`` (see :func:`~ecso_core.backends.load_backend`).

    Takes the settings of :class:`~ecso_core.backends.openai.OpenAIBackend` (timeouts, retries, API key);
    only usable as a judge, with the ``classifier`` profile.
    """

    endpoint = "/moderations"

    def __init__(self, model: str, *, transport: Any = None, **settings: Any) -> None:
        super().__init__(model, transport=transport, **{"logprobs": "never", **settings})
        self.name = f"moderation:{model}"
        self.capabilities = BackendCapabilities(max_images=self.settings.max_images)

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        """The classification in one piece (a moderation endpoint does not stream)."""
        return whole_answer_stream(self, request)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        check_capabilities(self.capabilities, request, self.name)
        return moderation_payload(request, self.settings.model)

    def _reply(self, body: dict[str, Any]) -> ChatReply:
        return moderation_reply(body)
