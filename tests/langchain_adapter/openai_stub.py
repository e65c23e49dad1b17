"""A scripted OpenAI chat-completions server (an ``httpx.MockTransport``) that follows what it is asked.

It lets the real ``ChatOpenAI`` run offline: tool definitions get a tool call whose arguments are
filled from the prompt (integers in order, a word for strings), a ``response_format`` gets JSON of its
schema, ECSO's check gets "No" (safe), anything else a sentence. Every request body is kept, with the
ECSO step it served (the guard marks each call with its step: see ``ecso_core.steps``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from ecso_core.steps import current_step
from ecso_core.types import StepName


class OpenAIStub:
    """``handler`` for ``httpx.MockTransport``; ``bodies`` holds every request received, ``steps`` its step."""

    def __init__(self, check_reply: str = "No") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.steps: list[StepName | None] = []
        self.check_reply = check_reply

    def transports(self) -> dict[str, Any]:
        """``http_client`` and ``http_async_client`` for ``ChatOpenAI(**stub.transports())``."""
        return {
            "http_client": httpx.Client(transport=httpx.MockTransport(self.handler)),
            "http_async_client": httpx.AsyncClient(transport=httpx.MockTransport(self.handler)),
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.steps.append(current_step())
        message = self.reply(body)
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if body.get("stream"):
            return _sse(body["model"], message, usage)
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}
        payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"]}
        return httpx.Response(200, json={**payload, "choices": [choice], "usage": usage})

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message this request gets."""
        prompt = _last_user_text(body["messages"])
        if current_step() == "check":
            return {"role": "assistant", "content": self.check_reply}
        tools = body.get("tools") or []
        if tools and body.get("tool_choice") != "none":
            tool = _chosen(tools, body.get("tool_choice"))
            arguments = _fill(tool["function"].get("parameters") or {}, prompt)
            call = {"id": "call_1", "type": "function", "function": {"name": tool["function"]["name"]}}
            call["function"]["arguments"] = json.dumps(arguments)
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return {"role": "assistant", "content": json.dumps(_fill(response_format["json_schema"]["schema"], prompt))}
        if response_format.get("type") == "json_object":
            return {"role": "assistant", "content": json.dumps({"setup": "Why cats?", "punchline": "Because."})}
        return {"role": "assistant", "content": "Hello! Here is a short answer."}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return " ".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def _chosen(tools: list[dict[str, Any]], choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return next(tool for tool in tools if tool["function"]["name"] == name)
    return tools[0]


def _fill(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Arguments for ``schema``: the prompt's integers in order for integer fields, words for strings."""
    numbers = iter(int(n) for n in re.findall(r"\d+", prompt))
    quoted = re.findall(r"'([^']+)'", prompt)
    out: dict[str, Any] = {}
    for name, field in (schema.get("properties") or {}).items():
        kind = field.get("type") or next((a.get("type") for a in field.get("anyOf", []) if a.get("type")), "string")
        if kind in ("integer", "number"):
            out[name] = next(numbers, 0)
        elif kind == "boolean":
            out[name] = True
        else:
            out[name] = quoted[0] if quoted else f"{name} text"
    return out


def _sse(model: str, message: dict[str, Any], usage: dict[str, int]) -> httpx.Response:
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": 0, **call} for call in message["tool_calls"]]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model}
    finish = "tool_calls" if "tool_calls" in message else "stop"
    events = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {**base, "choices": [], "usage": usage},
    ]
    text = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
