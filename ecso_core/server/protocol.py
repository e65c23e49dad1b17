"""The OpenAI chat-completions wire format: request schema and response builders (pure)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CapabilityError, MessageError
from ..result import ECSOResult
from ..types import ChatReply, ChatRequest, GenerationParams, ImagePart, ImageURL, Message, TextPart, ToolCall

__all__ = [
    "ADVISORY_FIELDS",
    "ChatCompletionRequest",
    "RequestLimits",
    "StreamOptions",
    "chunk_body",
    "completion_body",
    "ecso_field",
    "ecso_headers",
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


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``: ``include_usage`` is honoured; any other key is a 400."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    """Send a last chunk with ``choices: []`` and the request's ``usage`` (every chunk then has ``usage: null``)."""
    include_obfuscation: bool | None = None
    """Accepted as false or absent only: ecso adds no obfuscation padding to its chunks."""


ADVISORY_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})
"""Request fields that describe the call rather than the answer (end-user id, tags, storage, billing
tier, cache key): forwarded to a backend that takes provider call options, dropped for one that does
not (a local model has no use for them). Every other unmapped field changes the answer and is never
dropped: it is forwarded, or the request gets a 400."""


class ChatCompletionRequest(BaseModel):
    """A chat-completions request. How each field is treated is explicit (docs/server.md, "Request fields").

    - The declared fields are honoured by the server itself (``logprobs`` and ``top_logprobs`` only
      when false/absent: the guarded answer has no log-probabilities to give).
    - Unsupported everywhere (400): ``logprobs: true``, ``top_logprobs`` > 0, ``n > 1``, ``functions`` /
      ``function_call`` (use ``tools``), ``audio`` and non-text ``modalities``, ``stream_options``
      without ``stream`` or with ``include_obfuscation: true`` or an unknown key.
    - Every other field (``response_format``, ``frequency_penalty``, ``presence_penalty``,
      ``logit_bias``, ``parallel_tool_calls``, ``reasoning_effort``, vendor extensions such as vLLM's
      ``top_k``, ...) is a provider call option (:attr:`ChatRequest.options`), forwarded verbatim to the
      model's answers (step 1 and the eyes-closed answer, never the check or the caption); a served
      backend that takes no call options answers 400 naming it. :data:`ADVISORY_FIELDS` are the exception:
      dropped there instead. A field sent as ``null`` counts as absent.
    """

    # Unknown top-level fields are kept (``model_extra``) so that none is silently dropped; inside
    # messages unknown keys are tolerated, so that any client's message objects validate.
    model_config = ConfigDict(extra="allow")

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
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class RequestLimits(BaseModel):
    """Bounds on one request that the server enforces before any model work (an OpenAI-shaped 400 if exceeded).

    Image bounds (count, pixels per image, pixels per request) are the guard's ``ECSOConfig.image_limits``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=4096, ge=1)
    """Most ``max_tokens`` / ``max_completion_tokens`` a client may ask for."""
    max_prompt_chars: int = Field(default=100_000, ge=1)
    """Most characters of text over all messages, tool definitions and call options (a model-independent
    proxy for prompt tokens: about 25,000 tokens of English)."""
    image_deadline_s: float = Field(default=30.0, gt=0)
    """Time allowed to read and decode a request's images (fetches included, when URLs are allowed)."""
    max_inflight_pixels: int = Field(default=400_000_000, ge=1)
    """Decoded image pixels of all requests in flight on the server (about 1.2 GB as RGB); a request
    waits for room before decoding, up to ``image_deadline_s``."""


def to_chat_request(
    body: ChatCompletionRequest,
    default_max_tokens: int | None = None,
    limits: RequestLimits | None = None,
    call_options: bool = True,
    served: str = "the served model",
) -> ChatRequest:
    """Translate a chat-completions request into the core :class:`ChatRequest`, within ``limits``.

    Args:
        body: the validated request body.
        default_max_tokens: new tokens when the client asks for none; None leaves it to the model.
        limits: per-request bounds.
        call_options: whether the served backend takes provider call options (``ChatRequest.options``).
        served: the served model's name, for error messages.

    Raises:
        MessageError: malformed tool-call arguments, a limit exceeded, ``stream_options`` without ``stream``.
        CapabilityError: a field the server cannot honour (its ``param`` names it; see
            :class:`ChatCompletionRequest`).

    """
    limits = limits or RequestLimits()
    options = _call_options(body, call_options, served)
    asked = body.max_completion_tokens or body.max_tokens or default_max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise MessageError(f"max_tokens is {asked}; this server allows at most {limits.max_tokens}")
    messages = tuple(_message(m) for m in body.messages)
    # Tool definitions and call options (a response_format schema) are prompt too: the model reads them.
    chars = sum(len(m.text) for m in messages) + len(json.dumps(body.tools or [])) - 2
    chars += len(json.dumps(options)) - 2 if options else 0
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
    return ChatRequest(
        messages=messages,
        params=params,
        tools=tuple(body.tools or ()),
        tool_choice=body.tool_choice,
        options=options,
    )


def _call_options(body: ChatCompletionRequest, call_options: bool, served: str) -> dict[str, Any]:
    """The provider call options of ``body`` (its unmapped fields), after refusing what cannot be honoured.

    Raises:
        MessageError: ``stream_options`` without ``stream``.
        CapabilityError: ``logprobs``/``top_logprobs``, ``functions``/``function_call``, ``audio`` or
            non-text ``modalities``, ``stream_options.include_obfuscation``, or a call option the served
            backend cannot take; ``param`` names the field.

    """
    if body.logprobs or body.top_logprobs:
        field = "logprobs" if body.logprobs else "top_logprobs"
        raise _unsupported(
            field,
            f"{field} is not supported: the guarded answer has no token log-probabilities to give (when the "
            "check flags the first answer, the answer sent is a second, eyes-closed one); omit it or set "
            "logprobs to false",
        )
    if body.stream_options is not None and not body.stream:
        raise _invalid("stream_options", "stream_options is only allowed when stream is true")
    if body.stream_options is not None and body.stream_options.include_obfuscation:
        raise _unsupported(
            "stream_options.include_obfuscation",
            "stream_options.include_obfuscation is not supported: ecso adds no obfuscation padding to its "
            "chunks; omit it or set it to false",
        )
    extra = {key: value for key, value in (body.model_extra or {}).items() if value is not None}
    for field in ("functions", "function_call"):
        if field in extra:
            raise _unsupported(field, f"{field} is not supported (deprecated by OpenAI): use tools and tool_choice")
    if "audio" in extra:
        raise _unsupported("audio", "audio output is not supported: the guard judges and returns text")
    if "modalities" in extra:
        if extra["modalities"] != ["text"]:
            raise _unsupported("modalities", 'modalities other than ["text"] are not supported')
        del extra["modalities"]
    if call_options:
        return extra
    refused = sorted(key for key in extra if key not in ADVISORY_FIELDS)
    if refused:
        raise _unsupported(
            refused[0],
            f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not supported by {served}: it takes no "
            "provider call options (they reach the model through an OpenAI-compatible, LangChain or LlamaIndex "
            "backend)",
        )
    return {}


def _unsupported(param: str, message: str) -> CapabilityError:
    error = CapabilityError(message)
    error.param = param
    return error


def _invalid(param: str, message: str) -> MessageError:
    error = MessageError(message)
    error.param = param
    return error


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


def ecso_headers(reply: ChatReply) -> dict[str, str]:
    """The ``X-ECSO-*`` response headers when a guard answered: decision, verdict method, P(yes) when known.

    For clients that drop the non-standard ``ecso`` body field (LangChain's ``ChatOpenAI``). Like the
    field they carry no text: only the decision and how it was reached.
    """
    if not isinstance(reply.raw, ECSOResult):
        return {}
    headers: dict[str, str] = {"X-ECSO-Decision": reply.raw.decision}
    verdict = reply.raw.verdict
    if verdict is not None:
        headers["X-ECSO-Verdict-Method"] = verdict.method
        if verdict.p_yes is not None:
            headers["X-ECSO-P-Yes"] = f"{verdict.p_yes:.4f}"
    return headers


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
    reply: ChatReply, model: str, completion_id: str, created: int, audit: bool = False, include_usage: bool = False
) -> list[dict[str, Any]]:
    """Every chunk of a streamed answer: role, text pieces, tool calls, the finish; ``ecso`` in the last chunk.

    As OpenAI streams: with ``include_usage`` (``stream_options``) every chunk has ``usage: null`` and a
    last chunk with ``choices: []`` carries the usage; without it no chunk has a ``usage`` field.
    """
    from ..guard import chunk_text

    chunks = [chunk_body(completion_id, model, created, {"role": "assistant", "content": ""})]
    chunks += [chunk_body(completion_id, model, created, {"content": piece}) for piece in chunk_text(reply.text)]
    if reply.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(_tool_calls(reply))]
        chunks.append(chunk_body(completion_id, model, created, {"tool_calls": calls}))
    chunks.append(chunk_body(completion_id, model, created, {}, _finish(reply)))
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        usage = chunk_body(completion_id, model, created, {})
        usage["choices"] = []
        usage["usage"] = completion_body(reply, model, completion_id, created)["usage"]
        chunks.append(usage)
    extra = ecso_field(reply, audit)
    if extra is not None:
        chunks[-1]["ecso"] = extra
    return chunks


def _finish(reply: ChatReply) -> str:
    if reply.tool_calls:
        return "tool_calls"
    return reply.finish_reason if reply.finish_reason in ("stop", "length", "tool_calls") else "stop"


def error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body (``param``: the request field at fault, when one is)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
