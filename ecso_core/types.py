"""Core types: messages, requests and replies exchanged with every backend.

All models are frozen pydantic models. Message parts carry a ``kind`` discriminator so that a list of
parts validates from plain dicts (``{"kind": "text", "text": "hi"}``) as well as from objects.
Vendor extras ride in :attr:`ChatReply.raw`, never in new fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, field_serializer, field_validator, model_validator

from ._model import ECSOModel
from .cancel import CancelToken
from .errors import BackendError, ConfigError, MessageError

__all__ = [
    "ChatReply",
    "ChatRequest",
    "Decision",
    "GenerationParams",
    "ImageLimits",
    "ImagePart",
    "ImageURL",
    "Message",
    "Part",
    "Role",
    "ScoreWords",
    "StepName",
    "TextPart",
    "TokenUsage",
    "ToolCall",
    "YesNoScore",
]

Role = Literal["system", "user", "assistant", "tool"]
Decision = Literal["safe", "unsafe", "fail_closed", "no_image"]
"""What the guard did: released the answer (safe), rewrote it (unsafe), failed closed, or had no image."""
StepName = Literal["answer", "check", "caption", "eyes_closed"]
"""The ECSO steps, in order: answer with the image, self-check, query-aware caption, eyes-closed answer."""


class _Frozen(ECSOModel):
    invalid = MessageError


class TextPart(_Frozen):
    """A run of text inside a message."""

    kind: Literal["text"] = "text"
    text: str
    """The text itself."""


@dataclass(frozen=True)
class ImageURL:
    """An image named by a URL field (OpenAI ``image_url.url``, LangChain and LlamaIndex URL blocks).

    Only a ``data:`` URL, or an ``http(s)`` URL where the config allows fetching, is accepted; anything
    else (a file path, ``~/...``, ``file:``) is refused with one message that does not depend on the
    file. Translators of wire formats wrap URL strings in it, so a string that came from a URL field is
    never read as a path; Python callers who mean a file pass a ``Path`` or a plain string.
    """

    url: str


class ImagePart(_Frozen):
    """An image inside a message.

    ``image`` may be a ``PIL.Image.Image``, raw ``bytes``, a file path (``Path``, or a ``str`` naming an
    existing file), a base64 string, a ``data:`` URL, an ``http(s)`` URL (refused unless the config
    allows URLs), or an :class:`ImageURL` (a URL field's value: never a path). Nothing is read when the
    part is built: :func:`ecso_core.images.prepare_image_part` loads and validates it within limits and
    returns a part whose ``image`` is a normalised RGB PIL image with a ``digest``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["image"] = "image"
    image: Any
    """The image source (see the class docstring)."""
    digest: str | None = None
    """SHA-256 of the decoded pixels, set once the image is prepared; identifies distinct images."""

    @field_serializer("image", when_used="json")
    def _describe_image(self, image: Any) -> str:
        # Traces and --json output describe images; they never embed pixels.
        return describe_image_source(image)


def describe_image_source(image: Any) -> str:
    """Return a short, printable description of an image source (for traces and logs)."""
    if isinstance(image, ImageURL):
        image = image.url if image.url.startswith(("data:", "http://", "https://")) else "url-field"
    if isinstance(image, Path):
        return f"path:{image}"
    if isinstance(image, str):
        if image.startswith("data:"):
            return f"data-url:{len(image)} chars"
        if image.startswith(("http://", "https://")):
            return f"url:{image}"
        return f"str:{image[:80]}" if len(image) <= 256 else f"base64:{len(image)} chars"
    if isinstance(image, (bytes, bytearray)):
        return f"bytes:{len(image)} sha256:{hashlib.sha256(image).hexdigest()[:16]}"
    size = getattr(image, "size", None)
    mode = getattr(image, "mode", None)
    if size is not None:
        return f"pil:{mode} {size[0]}x{size[1]}"
    return f"{type(image).__name__}"


Part = Annotated[Union[TextPart, ImagePart], Field(discriminator="kind")]


class ToolCall(_Frozen):
    """A function call requested by the model."""

    id: str
    """Identifier that the matching tool message refers to."""
    name: str
    """Name of the tool to call."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Parsed JSON arguments."""


class Message(_Frozen):
    """One chat turn. ``content`` accepts a plain string as shorthand for one text part."""

    role: Role
    content: tuple[Part, ...] = ()
    """Ordered parts; images and text may interleave."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls made by an assistant turn."""
    tool_call_id: str | None = None
    """For ``role="tool"``: the call this message answers."""
    name: str | None = None
    """Optional name of the author (or of the tool, for tool messages)."""

    if TYPE_CHECKING:  # what validation accepts: a string for one text part, any sequence for a tuple

        def __init__(
            self,
            *,
            role: Role,
            content: str | Sequence[TextPart | ImagePart] = (),
            tool_calls: Sequence[ToolCall] = (),
            tool_call_id: str | None = None,
            name: str | None = None,
        ) -> None: ...

    @field_validator("content", mode="before")
    @classmethod
    def _string_content(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (TextPart(text=value),)
        return value

    @property
    def text(self) -> str:
        """The message's text parts joined by newlines."""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The message's image parts, in order."""
        return tuple(p for p in self.content if isinstance(p, ImagePart))


class GenerationParams(ECSOModel):
    """Decoding parameters. The default is greedy decoding, as in the paper."""

    invalid = ConfigError

    max_new_tokens: int | None = Field(default=None, ge=1)
    """Upper bound on generated tokens; ``None`` leaves it to the model: a transformers checkpoint's own
    ``generation_config.max_new_tokens`` when it sets one (tiny-random sets 16), else the paper's 1,024
    (:data:`~ecso_core.backends.transformers.DEFAULT_MAX_NEW_TOKENS`); an OpenAI-compatible server's own
    default (no ``max_tokens`` is sent)."""
    temperature: float = Field(default=0.0, ge=0.0)
    """0 means greedy decoding."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (only with temperature > 0)."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not included in the output."""
    seed: int | None = None
    """Sampling seed, where the backend supports one."""


ScoreWords = tuple[tuple[str, ...], tuple[str, ...]]
"""First-token spellings scored as (unsafe, safe) by ``score_yes_no``."""


class ChatRequest(_Frozen):
    """A chat-completion request: a conversation plus decoding parameters and optional tools."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    messages: tuple[Message, ...]
    params: GenerationParams = GenerationParams()
    tools: tuple[dict[str, Any], ...] = ()
    """Tool definitions in OpenAI function format (``{"type": "function", "function": {...}}``)."""
    tool_choice: str | dict[str, Any] | None = None
    """OpenAI ``tool_choice`` (``"auto"``, ``"required"``, ``"none"``, a named function); None: model default."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Provider call options passed verbatim to the model that answers (``response_format``, ``top_k``,
    ...): the guard forwards them to the step-1 and the eyes-closed answer, never to the check or the
    caption (whose replies it must parse). A backend that cannot honour them raises ``CapabilityError``."""
    score_words: ScoreWords | None = None
    """For ``score_yes_no``: the first-token spellings whose probabilities are read as (unsafe, safe),
    e.g. ``(("unsafe",), ("safe",))`` for Llama Guard; None: the spellings of "yes" and "no"."""
    cancel: CancelToken | None = Field(default=None, exclude=True, repr=False)
    """Stops this request's work when cancelled (see :mod:`ecso_core.cancel`); never serialised."""

    if TYPE_CHECKING:  # what validation accepts: any sequence for a tuple

        def __init__(
            self,
            *,
            messages: Sequence[Message],
            params: GenerationParams = ...,
            tools: Sequence[dict[str, Any]] = (),
            tool_choice: str | dict[str, Any] | None = None,
            options: dict[str, Any] = ...,
            score_words: ScoreWords | None = None,
            cancel: CancelToken | None = None,
        ) -> None: ...

    @model_validator(mode="after")
    def _not_empty(self) -> ChatRequest:
        if not self.messages:
            raise ValueError("a ChatRequest needs at least one message")
        return self

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """Every image part of the conversation, in order."""
        return tuple(img for m in self.messages for img in m.images)


class TokenUsage(ECSOModel):
    """Token counts of one model call (or a sum of calls)."""

    invalid = BackendError  # built from a backend's reply

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ChatReply(ECSOModel):
    """A backend's answer to one :class:`ChatRequest`."""

    invalid = BackendError  # built from a backend's reply

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: TokenUsage = TokenUsage()
    finish_reason: str | None = None
    """``"stop"``, ``"length"``, ``"tool_calls"`` or backend specific."""
    raw: Any = Field(default=None, exclude=True)
    """Vendor-specific extras (the raw HTTP body, an ``ECSOResult`` for a guard, ...)."""

    def as_check_text(self) -> str:
        """The text the harm check judges: the answer text, plus any tool calls serialised as JSON."""
        if not self.tool_calls:
            return self.text
        calls = [{"name": c.name, "arguments": c.arguments} for c in self.tool_calls]
        serialised = "Tool calls: " + json.dumps(calls, ensure_ascii=False, sort_keys=True)
        return f"{self.text}\n{serialised}" if self.text else serialised


class YesNoScore(ECSOModel):
    """Probabilities of a "yes" and a "no" first answer token (each summed over spelling variants)."""

    invalid = BackendError  # built from a backend's reply

    p_yes: float = Field(ge=0.0, le=1.0)
    p_no: float = Field(ge=0.0, le=1.0)
    usage: TokenUsage = TokenUsage()


class ImageLimits(ECSOModel):
    """Bounds applied to every image before any model sees it."""

    invalid = ConfigError

    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    """Largest encoded image accepted (bytes, file, base64 payload or download)."""
    max_pixels: int = Field(default=40_000_000, ge=1)
    """Largest decoded width x height accepted; guards against decompression bombs."""
    max_images: int = Field(default=16, ge=0)
    """Most images accepted in one request."""
    max_total_pixels: int = Field(default=100_000_000, ge=1)
    """Most decoded pixels over all images of one request (checked from the headers, before decoding)."""
    url_timeout_s: float = Field(default=10.0, gt=0)
    """Time limit for fetching one image URL (only when URLs are allowed)."""
