"""The LLM layer: one protocol, backends behind it, and `make_llm` to build the one settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memos.errors import UserError
from memos.llm.base import (
    LLM,
    Capabilities,
    Completion,
    Message,
    MessageLike,
    ToolCall,
    ToolLike,
    ToolSchema,
    Usage,
    validate_messages,
    validate_tools,
)

if TYPE_CHECKING:
    from memos.config import Settings

__all__ = [
    "LLM",
    "Capabilities",
    "Completion",
    "Message",
    "MessageLike",
    "ToolCall",
    "ToolLike",
    "ToolSchema",
    "Usage",
    "make_llm",
    "validate_messages",
    "validate_tools",
]

_ACCEPTED = "'none' or 'openai:MODEL' (any OpenAI-compatible server at MEMOS_OPENAI_BASE_URL)"


def make_llm(settings: Settings) -> LLM | None:
    """Build the LLM `settings.llm` names: 'none' gives None, 'openai:MODEL' an OpenAIChat."""
    spec = settings.llm.strip()
    kind, sep, arg = spec.partition(":")
    if spec == "none":
        return None
    if kind == "openai" and sep:
        if not arg.strip():
            raise UserError(f"bad MEMOS_LLM {spec!r}: name the model, e.g. openai:gpt-4o-mini", llm=spec)
        # imported here: building the OpenAI backend is the only path that needs the openai client
        from memos.llm.openai import OpenAIChat

        return OpenAIChat(
            arg.strip(),
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
    if kind in ("hf", "vllm") and sep:
        raise UserError(
            f"MEMOS_LLM {spec!r}: the {kind} backend is not available in this version yet; use {_ACCEPTED}",
            llm=spec,
        )
    raise UserError(f"unknown MEMOS_LLM {spec!r}: use {_ACCEPTED}", llm=spec)
