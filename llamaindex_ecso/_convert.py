"""Pure translation between LlamaIndex chat messages and ecso's core types. No I/O, no model calls."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from PIL import Image

from ecso_core.errors import MessageError
from ecso_core.images import load_image
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
    "chat_response",
    "reply_from_chat_response",
    "to_ecso_request",
    "to_llamaindex_messages",
    "tool_selections",
    "with_user_message",
]

_ROLES: dict[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
# Blocks with no content for the model to read again (its own reasoning, cache hints).
_SKIPPED = {"thinking", "cache"}
# A file's bytes decoded as text carry NUL characters, which no text a person or a model writes has;
# these signatures (what is left of them after errors="ignore" decoding) name an image format.
_IMAGE_SIGNATURES = {"PNG": "PNG\r\n\x1a\n", "JPEG": "JFIF\x00|Exif\x00\x00", "GIF": "GIF8[79]a", "WebP": "WEBPVP8"}
_IMAGE_FILE = re.compile("|".join(f"(?P<{name}>{sig})" for name, sig in _IMAGE_SIGNATURES.items()))


def to_ecso_request(
    messages: Sequence[ChatMessage],
    *,
    tools: Sequence[dict[str, Any]] = (),
    tool_choice: str | dict[str, Any] | None = None,
    params: GenerationParams | None = None,
) -> ChatRequest:
    """Translate LlamaIndex chat messages into a :class:`ChatRequest`.

    Image blocks keep their source (base64 data, path or URL) untouched: the guard's image policy
    decides, so ``ImageBlock.resolve_image()`` never fetches a URL or opens a path on its own.

    Raises:
        MessageError: no messages, a block that cannot be sent (audio, documents, ...), or a text block
            that holds a file's bytes (an image read as text would pass the guard unseen).

    """
    if not messages:
        raise MessageError("no messages to send")
    return ChatRequest(
        messages=tuple(_message(m) for m in messages),
        params=params or GenerationParams(),
        tools=tuple(tools),
        tool_choice=tool_choice if tools else None,
    )


def _message(message: ChatMessage) -> Message:
    role = _ROLES.get(MessageRole(message.role))
    if role is None:  # pragma: no cover - the enum is closed
        raise MessageError(f"unsupported message role {message.role!r}")
    parts: list[TextPart | ImagePart] = []
    calls: list[ToolCall] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            _refuse_file_bytes(block.text, role)
            parts.append(TextPart(text=block.text))
        elif isinstance(block, ImageBlock):
            parts.append(ImagePart(image=_image_source(block)))
        elif isinstance(block, ToolCallBlock):
            arguments = block.tool_kwargs
            if isinstance(arguments, str):
                arguments = json.loads(arguments or "{}")
            calls.append(ToolCall(id=block.tool_call_id or "", name=block.tool_name, arguments=arguments))
        elif getattr(block, "block_type", None) in _SKIPPED:
            continue
        else:
            raise MessageError(f"unsupported LlamaIndex block {type(block).__name__} in a {role} message")
    for raw in message.additional_kwargs.get("tool_calls") or []:  # OpenAI-style calls kept by some LLMs
        calls.append(_raw_tool_call(raw))
    if role == "tool":
        tool_id = message.additional_kwargs.get("tool_call_id") or ""
        return Message(role="tool", content=tuple(parts), tool_call_id=tool_id)
    return Message(role=role, content=tuple(parts), tool_calls=tuple(calls))


def _refuse_file_bytes(text: str, role: str) -> None:
    """Refuse a file read as text: an image there would pass the guard unseen (the request has no image)."""
    if "\x00" not in text:
        return
    found = _IMAGE_FILE.search(text)
    what = f"a {found.lastgroup} image file" if found else "a binary file (NUL characters)"
    raise MessageError(
        f"a text block in a {role} message holds {what} read as text, so the guard cannot see it as an "
        "image. SimpleDirectoryReader reads images as text unless llama-index-readers-file is installed: "
        "`pip install llama-index-readers-file` (its ImageReader makes ImageDocuments), or load images as "
        "ImageNode/ImageDocument, or send them as ImageBlocks."
    )


def _raw_tool_call(raw: Any) -> ToolCall:
    data = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
    function = data.get("function") or {}
    arguments = function.get("arguments") or "{}"
    return ToolCall(
        id=data.get("id") or "",
        name=function.get("name") or "",
        arguments=json.loads(arguments) if isinstance(arguments, str) else arguments,
    )


def _image_source(block: ImageBlock) -> Any:
    if block.image is not None:
        data = block.image
        if isinstance(data, io.IOBase):
            data.seek(0)
            return data.read()
        try:  # LlamaIndex stores the bytes base64-encoded
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MessageError("an ImageBlock whose image is not base64-encoded bytes") from exc
    if block.path is not None:
        return Path(block.path)  # a Python caller named a file
    if block.url is not None:
        return ImageURL(str(block.url))  # a URL field: never read as a path
    raise MessageError("an ImageBlock without image data, path or URL")


def to_llamaindex_messages(request: ChatRequest) -> list[ChatMessage]:
    """Translate a :class:`ChatRequest` into LlamaIndex messages (images as PNG ``ImageBlock`` bytes)."""
    out = []
    for message in request.messages:
        blocks: list[Any] = [_block(part) for part in message.content]
        blocks += [
            ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in message.tool_calls
        ]
        extra = {"tool_call_id": message.tool_call_id} if message.role == "tool" else {}
        out.append(ChatMessage(role=MessageRole(message.role), blocks=blocks, additional_kwargs=extra))
    return out


def _block(part: TextPart | ImagePart) -> TextBlock | ImageBlock:
    if isinstance(part, TextPart):
        return TextBlock(text=part.text)
    image = part.image if isinstance(part.image, Image.Image) else load_image(part.image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ImageBlock(image=buffer.getvalue(), image_mimetype="image/png")


def reply_from_chat_response(response: ChatResponse, tool_calls: Sequence[Any] = ()) -> ChatReply:
    """Translate an LLM's ``ChatResponse`` (and its parsed ``ToolSelection`` calls) into a :class:`ChatReply`."""
    extra = response.additional_kwargs or {}
    raw = response.raw if isinstance(response.raw, dict) else {}
    found = raw.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    prompt = extra.get("prompt_tokens") or usage.get("prompt_tokens") or 0
    completion = extra.get("completion_tokens") or usage.get("completion_tokens") or 0
    calls = tuple(ToolCall(id=c.tool_id, name=c.tool_name, arguments=c.tool_kwargs or {}) for c in tool_calls)
    return ChatReply(
        text=response.message.content or "",
        tool_calls=calls,
        usage=TokenUsage(prompt_tokens=int(prompt), completion_tokens=int(completion)),
        finish_reason="tool_calls" if calls else "stop",
        raw=response,
    )


def chat_response(
    result: ECSOResult, delta: str | None = None, text: str | None = None, audit: bool = False
) -> ChatResponse:
    """The guarded answer as a ``ChatResponse`` with ``additional_kwargs["ecso"]`` and summed token counts.

    ``additional_kwargs["ecso"]`` and ``raw`` hold the result's client summary: withheld text only with
    ``audit`` (``ECSOConfig.in_band_audit``).
    """
    blocks: list[Any] = [TextBlock(text=result.answer if text is None else text)]
    blocks += [ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in result.tool_calls]
    usage = result.usage
    summary = result.client_summary(audit)
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
        delta=delta,
        additional_kwargs={
            "ecso": summary,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        raw={"answer": result.answer, "ecso": summary},
    )


def tool_selections(response: ChatResponse, error_on_no_tool_call: bool = False) -> list[ToolSelection]:
    """The ``ToolCallBlock``s of a response as LlamaIndex ``ToolSelection``s.

    Raises:
        ValueError: there is none and ``error_on_no_tool_call`` is set.

    """
    calls = [
        # arguments left as a JSON string become {}, as ToolSelection's own validator makes them
        ToolSelection(
            tool_id=b.tool_call_id or "",
            tool_name=b.tool_name,
            tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
        )
        for b in response.message.blocks
        if isinstance(b, ToolCallBlock)
    ]
    if not calls and error_on_no_tool_call:
        raise ValueError(f"expected at least one tool call, got: {response.message.content!r}")
    return calls


def with_user_message(
    chat_history: Sequence[ChatMessage] | None, user_msg: str | ChatMessage | None
) -> list[ChatMessage]:
    """``chat_history`` followed by ``user_msg`` (as LlamaIndex's ``chat_with_tools`` passes them)."""
    messages = list(chat_history or [])
    if user_msg is not None:
        messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
    return messages
