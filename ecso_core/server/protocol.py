"""The OpenAI chat-completions wire format: request schema and response builders (pure)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MessageError
from ..result import ECSOResult
from ..types import ChatReply, ChatRequest, GenerationParams, ImagePart, ImageURL, Message, TextPart, ToolCall

__all__ = [
    "ChatCompletionRequest",
    "RequestLimits",
    "chunk_body",
    "completion_body",
    "ecso_field",
    "error_body",
    "stream_bodies",
    "to_chat_request",
]


class _Open(BaseModel):
    # Unknown OpenAI fields are tolerated so that any client works; known ones are validated.
    model_config = ConfigDict(extra="ignore")


class ImageURLIn(_Open):
    url: str
    detail: str | None = None


class TextContent(_Open):
    type: Literal["text"]
    text: str


class ImageContent(_Open):
    type: Literal["image_url"]
    image_url: ImageURLIn | str


ContentPart = Annotated[Union[TextContent, ImageContent], Field(discriminator="type")]


class FunctionCall(_Open):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Open):
    """The subset of the chat-completions request that the guard honours."""

    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1, le=1)


class RequestLimits(BaseModel):
    """Bounds on one request that the server enforces before any model work (an OpenAI-shaped 400 if exceeded).

    Image bounds (count, pixels per image, pixels per request) are the guard's ``ECSOConfig.image_limits``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=4096, ge=1)
    """Most ``max_tokens`` / ``max_completion_tokens`` a client may ask for."""
    max_prompt_chars: int = Field(default=100_000, ge=1)
    """Most characters of text over all messages and tool definitions (a model-independent proxy for
    prompt tokens: about 25,000 tokens of English)."""
    image_deadline_s: float = Field(default=30.0, gt=0)
    """Time allowed to read and decode a request's images (fetches included, when URLs are allowed)."""
    max_inflight_pixels: int = Field(default=400_000_000, ge=1)
    """Decoded image pixels of all requests in flight on the server (about 1.2 GB as RGB); a request
    waits for room before decoding, up to ``image_deadline_s``."""


def to_chat_request(
    body: ChatCompletionRequest, default_max_tokens: int = 1024, limits: RequestLimits | None = None
) -> ChatRequest:
    """Translate a chat-completions request into the core :class:`ChatRequest`, within ``limits``.

    Raises:
        MessageError: malformed tool-call arguments, or a limit exceeded.

    """
    limits = limits or RequestLimits()
    asked = body.max_completion_tokens or body.max_tokens or default_max_tokens
    if asked > limits.max_tokens:
        raise MessageError(f"max_tokens is {asked}; this server allows at most {limits.max_tokens}")
    messages = tuple(_message(m) for m in body.messages)
    chars = sum(len(m.text) for m in messages) + len(json.dumps(body.tools or [])) - 2
    if chars > limits.max_prompt_chars:
        raise MessageError(f"the prompt has {chars} characters; this server allows at most {limits.max_prompt_chars}")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    params = GenerationParams(
        max_new_tokens=asked,
        temperature=body.temperature or 0.0,
        top_p=body.top_p or 1.0,
        stop=stop,
        seed=body.seed,
    )
    return ChatRequest(messages=messages, params=params, tools=tuple(body.tools or ()), tool_choice=body.tool_choice)


def _message(message: ChatMessageIn) -> Message:
    role = "system" if message.role == "developer" else message.role
    content: list[TextPart | ImagePart] = []
    if isinstance(message.content, str):
        content.append(TextPart(text=message.content))
    for part in message.content if isinstance(message.content, list) else []:
        if isinstance(part, TextContent):
            content.append(TextPart(text=part.text))
        else:
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            content.append(ImagePart(image=ImageURL(url)))  # a URL field: never read as a server path
    calls = []
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise MessageError(f"tool call {call.id!r} has arguments that are not JSON") from exc
        calls.append(ToolCall(id=call.id, name=call.function.name, arguments=arguments))
    return Message(
        role=role, content=tuple(content), name=message.name, tool_calls=tuple(calls), tool_call_id=message.tool_call_id
    )


def _tool_calls(reply: ChatReply) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for call in reply.tool_calls
    ]


def ecso_field(reply: ChatReply, audit: bool = False) -> dict[str, Any] | None:
    """The ``ecso`` extra of a response when a guard answered: the client summary of its result.

    It never holds withheld text (step-1 answer, captions, check output) unless ``audit`` is set
    (``ECSOConfig.in_band_audit``).
    """
    return reply.raw.client_summary(audit) if isinstance(reply.raw, ECSOResult) else None


def completion_body(
    reply: ChatReply, model: str, completion_id: str, created: int, audit: bool = False
) -> dict[str, Any]:
    """A ``chat.completion`` response body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = _tool_calls(reply)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish(reply)},
        ],
        "usage": {
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "total_tokens": reply.usage.total_tokens,
        },
    }
    extra = ecso_field(reply, audit)
    if extra is not None:
        body["ecso"] = extra
    return body


def chunk_body(
    completion_id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` body."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def stream_bodies(
    reply: ChatReply, model: str, completion_id: str, created: int, audit: bool = False
) -> list[dict[str, Any]]:
    """Every chunk of a streamed answer: role, text pieces, tool calls, then the finish with usage and ``ecso``."""
    from ..guard import chunk_text

    chunks = [chunk_body(completion_id, model, created, {"role": "assistant", "content": ""})]
    chunks += [chunk_body(completion_id, model, created, {"content": piece}) for piece in chunk_text(reply.text)]
    if reply.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(_tool_calls(reply))]
        chunks.append(chunk_body(completion_id, model, created, {"tool_calls": calls}))
    last = chunk_body(completion_id, model, created, {}, _finish(reply))
    last["usage"] = completion_body(reply, model, completion_id, created)["usage"]
    extra = ecso_field(reply, audit)
    if extra is not None:
        last["ecso"] = extra
    chunks.append(last)
    return chunks


def _finish(reply: ChatReply) -> str:
    if reply.tool_calls:
        return "tool_calls"
    return reply.finish_reason if reply.finish_reason in ("stop", "length", "tool_calls") else "stop"


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
