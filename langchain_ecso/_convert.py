"""Pure translation between LangChain messages and ecso's core types. No I/O, no model calls."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.content import ImageContentBlock
from PIL import Image

from ecso_core.errors import MessageError
from ecso_core.images import image_to_data_url, load_image
from ecso_core.result import ECSOResult
from ecso_core.types import (
    ChatReply,
    ChatRequest,
    GenerationParams,
    ImagePart,
    ImageURL,
    Message,
    Role,
    TextPart,
    TokenUsage,
    ToolCall,
)

__all__ = [
    "ai_message",
    "final_chunk",
    "reply_from_ai_message",
    "to_ecso_request",
    "to_langchain_messages",
    "usage_metadata",
]

_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
}
# Blocks that carry no conversation content for the model (the model's own reasoning, citations).
_SKIPPED = {
    "reasoning",
    "citation",
    "tool_call",
    "tool_call_chunk",
    "invalid_tool_call",
    "server_tool_call",
    "server_tool_call_chunk",
    "server_tool_result",
}


def to_ecso_request(
    messages: Sequence[BaseMessage],
    *,
    tools: Sequence[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    stop: Sequence[str] | None = None,
    params: GenerationParams | None = None,
) -> ChatRequest:
    """Translate a LangChain conversation into a :class:`ChatRequest`.

    Raises:
        MessageError: no messages, an unknown role, or a content block that cannot be sent
            (files, audio, unknown types): nothing is silently dropped.

    """
    if not messages:
        raise MessageError("no messages to send")
    base = params or GenerationParams()
    if stop:
        base = base.model_copy(update={"stop": tuple(stop)})
    return ChatRequest(
        messages=tuple(_message(m) for m in messages),
        params=base,
        tools=tuple(tools or ()),
        tool_choice=tool_choice if tools else None,
    )


def _message(message: BaseMessage) -> Message:
    role = _ROLES.get(message.role if isinstance(message, ChatMessage) else message.type)
    if role is None:
        raise MessageError(f"unsupported LangChain message type {message.type!r}")
    if isinstance(message, ToolMessage):
        return Message(role="tool", content=_text_of(message), tool_call_id=message.tool_call_id, name=message.name)
    parts: list[TextPart | ImagePart] = []
    for block in message.content_blocks:
        if block["type"] == "text":
            parts.append(TextPart(text=block["text"]))
        elif block["type"] == "image":
            parts.append(ImagePart(image=_image_source(block)))
        elif block["type"] in _SKIPPED or (block["type"] == "non_standard" and role == "assistant"):
            continue  # an assistant's provider-specific blocks (e.g. Anthropic tool_use): its tool calls travel apart
        else:
            parts.append(ImagePart(image=_image_url(block, message.type)))
    calls = tuple(
        ToolCall(id=call.get("id") or "", name=call["name"], arguments=call.get("args") or {})
        for call in getattr(message, "tool_calls", None) or []
    )
    return Message(role=role, content=tuple(parts), tool_calls=calls, name=message.name)


def _image_url(block: Mapping[str, Any], message_type: str) -> ImageURL:
    """An OpenAI-style ``image_url`` block, which the normaliser leaves as is (its block types omit it)."""
    kind = block.get("type")
    if kind != "image_url":
        raise MessageError(f"unsupported content block type {kind!r} in a {message_type} message")
    url = block["image_url"]["url"] if isinstance(block.get("image_url"), dict) else block.get("image_url")
    return ImageURL(str(url))


def _image_source(block: ImageContentBlock) -> ImageURL:
    if block.get("base64"):
        mime = block.get("mime_type") or "image/png"
        return ImageURL(f"data:{mime};base64,{block['base64']}")
    if block.get("url"):
        return ImageURL(str(block["url"]))  # a URL field: never read as a path
    raise MessageError("image blocks must carry base64 data or a URL (file ids cannot be resolved here)")


def _text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(b.get("text", "") for b in message.content_blocks if b["type"] == "text")


def to_langchain_messages(request: ChatRequest) -> list[BaseMessage]:
    """Translate a :class:`ChatRequest` into LangChain messages (images as standard base64 blocks)."""
    out: list[BaseMessage] = []
    for message in request.messages:
        if message.role == "tool":
            out.append(ToolMessage(content=message.text, tool_call_id=message.tool_call_id or "", name=message.name))
            continue
        content: str | list[str | dict[str, Any]]
        if message.images:
            content = [_block(part) for part in message.content]
        else:
            content = message.text
        if message.role == "system":
            out.append(SystemMessage(content=content))
        elif message.role == "assistant":
            calls = [{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in message.tool_calls]
            out.append(AIMessage(content=content, tool_calls=calls))
        else:
            out.append(HumanMessage(content=content, name=message.name))
    return out


def _block(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image = part.image if isinstance(part.image, Image.Image) else load_image(part.image)
    header, _, payload = image_to_data_url(image).partition(",")
    return {"type": "image", "base64": payload, "mime_type": header[5:].split(";")[0]}


def reply_from_ai_message(message: BaseMessage) -> ChatReply:
    """Translate a model's ``AIMessage`` into a :class:`ChatReply` (``raw`` keeps the message)."""
    usage = getattr(message, "usage_metadata", None) or {}
    calls = tuple(
        ToolCall(id=call.get("id") or "", name=call["name"], arguments=call.get("args") or {})
        for call in getattr(message, "tool_calls", None) or []
    )
    metadata = getattr(message, "response_metadata", None) or {}
    return ChatReply(
        text=message.text if isinstance(message.text, str) else str(message.text),
        tool_calls=calls,
        usage=TokenUsage(
            prompt_tokens=usage.get("input_tokens") or 0, completion_tokens=usage.get("output_tokens") or 0
        ),
        finish_reason=metadata.get("finish_reason") or metadata.get("stop_reason"),
        raw=message,
    )


def usage_metadata(usage: TokenUsage) -> UsageMetadata:
    """LangChain ``usage_metadata`` for token counts summed over every ECSO step."""
    counts = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    # cast: langchain-core declares the token-detail keys NotRequired with typing.NotRequired (3.11+); checked
    # as Python 3.10 that reads as required, so no three-key dict would match
    return cast(UsageMetadata, counts)


def _metadata(result: ECSOResult, model_name: str, audit: bool) -> dict[str, Any]:
    raw = result.released.raw if result.released is not None else None
    answered_by = getattr(raw, "response_metadata", {}).get("model_name") if isinstance(raw, BaseMessage) else None
    return {
        "ecso": result.client_summary(audit),
        "model_name": answered_by or model_name,  # the model that wrote the released answer (fallbacks, overrides)
        "model_provider": "ecso",
        "finish_reason": result.finish_reason or "stop",
    }


def _released_kwargs(result: ECSOResult) -> dict[str, Any]:
    """The released reply's parsed structured output, the parse of the text the check judged.

    ChatOpenAI's ``method="json_schema"`` parser reads ``additional_kwargs["parsed"]``; nothing else of
    the provider's message is carried.
    """
    raw = result.released.raw if result.released is not None else None
    parsed = getattr(raw, "additional_kwargs", {}).get("parsed") if isinstance(raw, BaseMessage) else None
    return {"parsed": parsed} if parsed is not None else {}


def ai_message(result: ECSOResult, model_name: str, audit: bool = False) -> AIMessage:
    """The guarded answer as an ``AIMessage``, with ``response_metadata["ecso"]`` and summed usage.

    ``response_metadata["ecso"]`` is the result's client summary: withheld text only with ``audit``.
    """
    return AIMessage(
        content=result.answer,
        additional_kwargs=_released_kwargs(result),
        tool_calls=[{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in result.tool_calls],
        response_metadata=_metadata(result, model_name, audit),
        usage_metadata=usage_metadata(result.usage),
    )


def final_chunk(result: ECSOResult, model_name: str, audit: bool = False) -> AIMessageChunk:
    """The last chunk of a stream: tool calls, usage and the ECSO outcome, ``chunk_position="last"``."""
    return AIMessageChunk(
        content="",
        additional_kwargs=_released_kwargs(result),
        tool_call_chunks=[
            {"name": c.name, "args": _json(c.arguments), "id": c.id, "index": i, "type": "tool_call_chunk"}
            for i, c in enumerate(result.tool_calls)
        ],
        response_metadata=_metadata(result, model_name, audit),
        usage_metadata=usage_metadata(result.usage),
        chunk_position="last",
    )


def _json(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False)
