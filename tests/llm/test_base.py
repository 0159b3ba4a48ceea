"""The protocol types and the LLM base class's helpers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from memos.errors import UserError
from memos.llm import LLM, Capabilities, Completion, Message, ToolCall, ToolSchema, validate_messages
from memos.llm.base import MessageLike, ToolLike


class EchoLLM(LLM):
    """The smallest backend: implements complete() only, so stream() and chat() are the base's."""

    capabilities = Capabilities(stream=False, tools=False)
    model_id = "echo"

    def __init__(self) -> None:
        self.seen: list[list[Message]] = []

    def complete(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        checked = validate_messages(messages)
        self.seen.append(checked)
        return Completion(text=" | ".join(f"{m.role}:{m.content}" for m in checked if m.content))


def test_default_stream_yields_the_completion_once() -> None:
    llm = EchoLLM()

    assert list(llm.stream([Message(role="user", content="hi")])) == ["user:hi"]
    assert list(llm.stream([Message(role="assistant")])) == []


def test_default_stream_checks_input_at_the_call() -> None:
    with pytest.raises(UserError, match="messages is empty"):
        EchoLLM().stream([])


def test_chat_helper_builds_system_and_user_messages() -> None:
    llm = EchoLLM()

    assert llm.chat("question", system="rules") == "system:rules | user:question"
    assert llm.chat("plain") == "user:plain"
    assert llm.seen[1] == [Message(role="user", content="plain")]


def test_message_rules() -> None:
    call = ToolCall(id="c1", name="f")
    with pytest.raises(UserError, match="only assistant messages carry tool_calls, not user messages"):
        Message(role="user", tool_calls=[call])
    with pytest.raises(UserError, match="message role 'bot' is not one of system, user, assistant, tool"):
        Message(role="bot")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Message(role="user", content="x", extra="no")  # type: ignore[call-arg]
    with pytest.raises(UserError, match="messages must be a list of messages, got str"):
        validate_messages("hello")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="message 0 must be a Message or a dict, got int"):
        validate_messages([3])  # type: ignore[list-item]


def test_message_wire_format() -> None:
    assert Message(role="user", content="hi", name="ann").to_openai() == {
        "role": "user",
        "content": "hi",
        "name": "ann",
    }
    said_and_called = Message(role="assistant", content="Looking.", tool_calls=[ToolCall(id="c1", name="f")])
    assert said_and_called.to_openai() == {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_tool_call_parsing_never_raises() -> None:
    assert ToolCall.parse("c1", "f", '{"a": [1, 2]}') == ToolCall(
        id="c1", name="f", arguments={"a": [1, 2]}, raw_arguments='{"a": [1, 2]}'
    )
    assert ToolCall.parse("c2", "f", None) == ToolCall(id="c2", name="f", raw_arguments="{}")
    broken = ToolCall.parse("c3", "f", "{'a': 1}")
    assert (broken.valid, broken.arguments, broken.raw_arguments) == (False, {}, "{'a': 1}")
    assert (
        broken.error
        == "arguments are not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )
    scalar = ToolCall.parse("c4", "f", "7")
    assert (scalar.valid, scalar.error) == (False, "arguments must be a JSON object, got int")


def test_tool_schema_wire_format_and_defaults() -> None:
    assert ToolSchema(name="noop").to_openai() == {
        "type": "function",
        "function": {"name": "noop", "description": "", "parameters": {"type": "object", "properties": {}}},
    }
    with pytest.raises(UserError, match=r"tool name 'a\.b' must be 1-64 letters"):
        ToolSchema(name="a.b")
