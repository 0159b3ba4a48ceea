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
    "BUILTIN_SCHEMES",
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

#: the MEMOS_LLM schemes built here; any other scheme is looked up among the plugins' LLM backends
BUILTIN_SCHEMES = ("none", "openai", "hf", "vllm")
_ACCEPTED = (
    "'none', 'openai:MODEL' (any OpenAI-compatible server at MEMOS_OPENAI_BASE_URL), "
    "'hf:/path/to/model' (a local model) or 'vllm:http://HOST:PORT/v1#MODEL' (a vLLM server)"
)


def make_llm(settings: Settings) -> LLM | None:
    """Build the LLM `settings.llm` names: None for 'none', an OpenAIChat, HFChat or VLLMChat, or a plugin's."""
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
            api_key=settings.secret("openai_api_key"),
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
    if kind == "hf" and sep:
        if not arg.strip():
            raise UserError(
                f"bad MEMOS_LLM {spec!r}: name a local model directory, e.g. hf:/models/qwen3-0.6b", llm=spec
            )
        # imported here: torch and transformers load only when a local model is asked for
        from memos.llm.hf import HFChat

        return HFChat(arg.strip(), device=settings.hf_device, dtype=settings.hf_dtype)
    if kind == "vllm" and sep:
        # imported here: only this backend needs the vLLM client (and it needs no local model)
        from memos.llm.vllm import VLLMChat, parse_spec

        base_url, model = parse_spec(spec)
        # vLLM checks the key only when started with --api-key; the setting is shared with the openai backend
        return VLLMChat(
            model,
            base_url=base_url,
            api_key=settings.secret("openai_api_key"),
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
    if kind and kind not in BUILTIN_SCHEMES:
        # imported here: plugins load only when a scheme memos does not build itself is asked for
        from memos.registry import get_registry

        registry = get_registry()
        if kind in registry.llm_backends:
            return registry.create("llm_backends", kind, settings, arg.strip())
        if registry.llm_backends:
            schemes = ", ".join(f"'{name}:...'" for name in sorted(registry.llm_backends))
            raise UserError(f"unknown MEMOS_LLM {spec!r}: use {_ACCEPTED}, or a plugin's: {schemes}", llm=spec)
    raise UserError(f"unknown MEMOS_LLM {spec!r}: use {_ACCEPTED}", llm=spec)
