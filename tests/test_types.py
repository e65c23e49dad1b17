"""Core types validate from objects and plain dicts, are frozen, and serialise images as descriptions."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ecso_core import ChatReply, ChatRequest, ImagePart, Message, MessageError, TextPart, TokenUsage, ToolCall


def test_message_accepts_string_and_dict_parts() -> None:
    assert Message(role="user", content="hi").content == (TextPart(text="hi"),)
    message = Message.model_validate(
        {"role": "user", "content": [{"kind": "text", "text": "a"}, {"kind": "image", "image": "abc"}]}
    )
    assert [p.kind for p in message.content] == ["text", "image"]
    assert message.text == "a"
    assert len(message.images) == 1
    with pytest.raises(MessageError, match="^invalid Message: content.0: Input tag 'audio' found using 'kind'"):
        Message.model_validate({"role": "user", "content": [{"kind": "audio"}]})
    with pytest.raises(MessageError, match="^invalid Message: role: Input should be 'system', 'user'"):
        Message(role="robot", content="x")  # type: ignore[arg-type]


def test_request_needs_messages_and_is_frozen() -> None:
    with pytest.raises(MessageError, match="^invalid ChatRequest: .*a ChatRequest needs at least one message$"):
        ChatRequest(messages=())
    request = ChatRequest(messages=(Message(role="user", content="x"),))
    with pytest.raises(ValueError, match="Instance is frozen"):
        request.messages = ()  # type: ignore[misc]


def test_images_serialise_as_descriptions_not_pixels() -> None:
    part = ImagePart(image=Image.new("RGB", (3, 4)))
    assert json.loads(part.model_dump_json())["image"] == "pil:RGB 3x4"
    assert json.loads(ImagePart(image=b"abc").model_dump_json())["image"].startswith("bytes:3 sha256:")
    assert json.loads(ImagePart(image="http://x/y.png").model_dump_json())["image"] == "url:http://x/y.png"


def test_check_text_serialises_tool_calls() -> None:
    reply = ChatReply(text="Let me look.", tool_calls=(ToolCall(id="1", name="f", arguments={"b": 1, "a": "x"}),))
    assert reply.as_check_text() == 'Let me look.\nTool calls: [{"arguments": {"a": "x", "b": 1}, "name": "f"}]'
    assert ChatReply(text="plain").as_check_text() == "plain"


def test_usage_adds() -> None:
    total = TokenUsage(prompt_tokens=2, completion_tokens=3) + TokenUsage(prompt_tokens=1)
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (3, 3, 6)
