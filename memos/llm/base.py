"""The LLM protocol: messages, tool schemas and calls, completions, and the `LLM` base class."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memos.errors import UserError, first_problem

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
# OpenAI's rule for function names; other servers accept a superset, so this is the portable one
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def json_problem(exc: ValueError | RecursionError) -> str:
    """What is wrong with JSON text that json.loads refused, in one line."""
    if isinstance(exc, json.JSONDecodeError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    # int() refuses numbers of more than 4300 digits; other ValueErrors name the bad value
    return "a number has too many digits" if "digits" in str(exc) else " ".join(str(exc).split())


class ToolCall(BaseModel):
    """One function call the model asked for; `error` is set when its arguments did not parse."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    #: the arguments exactly as the server sent them (JSON text)
    raw_arguments: str = ""
    #: None when the arguments parsed into a JSON object; otherwise why they did not
    error: str | None = None

    @model_validator(mode="after")
    def _fill_raw(self) -> ToolCall:
        # a call built in code (not parsed) still needs wire text to be sent back to a server
        if not self.raw_arguments and self.error is None:
            self.raw_arguments = json.dumps(self.arguments)
        return self

    @property
    def valid(self) -> bool:
        """True when the arguments parsed into a JSON object."""
        return self.error is None

    @classmethod
    def parse(cls, call_id: str, name: str, raw_arguments: str | None) -> ToolCall:
        """Build a call from a server's JSON argument text without ever raising on bad JSON."""
        raw = raw_arguments or ""
        # some servers send "" for a function without parameters
        if not raw.strip():
            return cls(id=call_id, name=name, arguments={}, raw_arguments=raw or "{}")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return cls(
                id=call_id, name=name, raw_arguments=raw, error=f"arguments are not valid JSON: {json_problem(exc)}"
            )
        if not isinstance(value, dict):
            return cls(
                id=call_id,
                name=name,
                raw_arguments=raw,
                error=f"arguments must be a JSON object, got {type(value).__name__}",
            )
        return cls(id=call_id, name=name, arguments=value, raw_arguments=raw)

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's wire format (an assistant message's `tool_calls` item)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.raw_arguments},
        }


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = ""
    #: only on assistant messages: the calls the model made
    tool_calls: list[ToolCall] = Field(default_factory=list)
    #: only on tool messages: the call this message answers
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: Any) -> Any:
        # raised as UserError (not a pydantic error) so callers get one clear line saying what to fix
        if value not in ROLES:
            raise UserError(f"message role {value!r} is not one of {', '.join(ROLES)}", role=value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise UserError(f"only assistant messages carry tool_calls, not {self.role} messages")
        if self.role == "tool" and not self.tool_call_id:
            raise UserError("a tool message needs tool_call_id: the id of the call it answers")
        return self

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI's wire format."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            # OpenAI expects null, not "", for an assistant turn that only calls tools
            out["content"] = self.content or None
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class ToolSchema(BaseModel):
    """A function the model may call: name, description and a JSON schema of its parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("name", mode="before")
    @classmethod
    def _portable_name(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _TOOL_NAME.fullmatch(value):
            raise UserError(f"tool name {value!r} must be 1-64 letters, digits, '_' or '-' (OpenAI's rule)", tool=value)
        return value

    def to_openai(self) -> dict[str, Any]:
        """The schema in OpenAI's `tools` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class Usage(BaseModel):
    """Token counts a server reported for one completion."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: prompt tokens the backend did not prefill again (an injected KV block, a server's prefix cache)
    cached_tokens: int = 0


class Completion(BaseModel):
    """What the model answered: text and/or tool calls."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    #: "stop", "length", "tool_calls", ... as the server reported it
    finish_reason: str = "stop"
    usage: Usage | None = None
    #: the model that answered, as the backend names it
    model: str = ""


class Capabilities(BaseModel):
    """What a backend can do beyond plain completion; the kernel picks strategies from this."""

    model_config = ConfigDict(extra="forbid")

    stream: bool
    tools: bool
    kv_injection: bool = False
    adapters: bool = False
    prefix_caching: bool = False


MessageLike = Message | Mapping[str, Any]
ToolLike = ToolSchema | Mapping[str, Any]


def _first_error(exc: ValidationError) -> str:
    where, problem = first_problem(exc, "value")
    return f"{where}: {problem}"


def validate_messages(messages: Sequence[MessageLike]) -> list[Message]:
    """Check a conversation (Message objects or plain dicts) and return it as Messages; UserError if bad."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise UserError(f"messages must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise UserError("messages is empty: send at least one message, e.g. a user message")
    out: list[Message] = []
    for position, message in enumerate(messages):
        if isinstance(message, Message):
            out.append(message)
            continue
        if not isinstance(message, Mapping):
            raise UserError(
                f"message {position} must be a Message or a dict, got {type(message).__name__}",
                position=position,
            )
        try:
            out.append(Message.model_validate(dict(message)))
        except ValidationError as exc:
            raise UserError(f"message {position} is malformed: {_first_error(exc)}", position=position) from exc
        except UserError as exc:
            raise UserError(f"message {position}: {exc.message}", position=position, **exc.fields) from exc
    return out


def validate_tools(tools: Sequence[ToolLike] | None) -> list[ToolSchema]:
    """Check tool schemas (ToolSchema objects or dicts of the same fields); UserError if bad."""
    if not tools:
        return []
    out: list[ToolSchema] = []
    for tool in tools:
        if isinstance(tool, ToolSchema):
            out.append(tool)
            continue
        try:
            out.append(ToolSchema.model_validate(dict(tool)))
        except (ValidationError, TypeError, ValueError) as exc:
            detail = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise UserError(f"malformed tool schema: {detail}") from exc
    names = [tool.name for tool in out]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return out


def validate_sampling(max_tokens: int | None, temperature: float | None) -> None:
    """Reject sampling settings no server accepts, before a request is sent."""
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"max_tokens must be at least 1, got {max_tokens}")
    if temperature is not None and temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")


def normalise_stop(stop: str | Sequence[str] | None) -> list[str] | None:
    """Stop sequences as a list (None when there are none)."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    return list(stop) or None


class LLM(ABC):
    """A chat model backend; subclasses implement `complete` and usually override `stream`."""

    #: what this backend supports; set by each subclass
    capabilities: Capabilities
    #: stable name of backend and model, e.g. "openai:gpt-4o-mini"
    model_id: str
    #: most LoRA adapters one request can go through (a vLLM server applies one per request)
    max_adapters: int = 8

    @abstractmethod
    def complete(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """Answer a conversation in one piece (text and/or tool calls)."""

    def stream(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Answer as text chunks; this default yields complete()'s text once (none when it is empty)."""
        # complete() runs now, not at the first next(), so bad input fails where the call was made
        completion = self.complete(messages, tools, max_tokens=max_tokens, temperature=temperature, stop=stop)
        return iter([completion.text] if completion.text else [])

    @property
    def loaded_adapters(self) -> list[str]:
        """Names of the LoRA adapters loaded on this backend now (none for backends without adapters)."""
        return []

    def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter directory under `name`; UserError on a backend without adapters."""
        raise UserError(
            f"{self.model_id} cannot load LoRA adapters; use a local model (MEMOS_LLM=hf:PATH) or a vLLM server",
            llm=self.model_id,
        )

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter (nothing to do on a backend without adapters)."""
        return None

    def with_adapters(self, adapters: Sequence[str]) -> LLM:
        """This backend answering through the named LoRA adapters (loaded before); UserError if it has none."""
        if not adapters:
            return self
        raise UserError(
            f"{self.model_id} cannot use LoRA adapters; use a local model (MEMOS_LLM=hf:PATH) or a vLLM server",
            llm=self.model_id,
        )

    def chat(self, prompt: str, system: str | None = None) -> str:
        """Send one user prompt (after an optional system prompt) and return the answer's text."""
        messages: list[MessageLike] = []
        if system is not None:
            messages.append(Message(role="system", content=system))
        messages.append(Message(role="user", content=prompt))
        return self.complete(messages).text
