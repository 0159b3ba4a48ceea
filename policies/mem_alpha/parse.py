"""Tool calls out of a model's reply: OpenAI `tool_calls`, or the `✿FUNCTION✿`/`✿ARGS✿` text of Mem-α's model.

The released Mem-α model writes calls in Qwen-Agent's text format, several per reply:

    ✿FUNCTION✿: new_memory_insert
    ✿ARGS✿: {"memory_type": "semantic_memory", "content": "..."}

and stops at `✿RESULT✿:` (where a tool result would follow). Nothing here raises on bad input:
a call whose arguments do not parse comes back with `error` set and is counted as failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from memos.llm.base import Completion, json_problem

FUNCTION_MARK = "✿FUNCTION✿"
ARGS_MARK = "✿ARGS✿"
RESULT_MARK = "✿RESULT✿"
RETURN_MARK = "✿RETURN✿"
#: generation stops here: what follows would be a tool's result, written by the caller
STOP = f"{RESULT_MARK}:"
_FUNCTION = re.compile(rf"{FUNCTION_MARK}:?[ \t]*")
_ARGS = re.compile(rf"{ARGS_MARK}:?[ \t]*")


@dataclass(frozen=True)
class ParsedCall:
    """One tool call as the model wrote it; `error` says why its arguments could not be read."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def cut_at_result(text: str) -> str:
    """The reply up to its first `✿RESULT✿` or `✿RETURN✿` (generation ends there)."""
    ends = [i for i in (text.find(RESULT_MARK), text.find(RETURN_MARK)) if i >= 0]
    return text[: min(ends)] if ends else text


def parse_text_calls(text: str) -> list[ParsedCall]:
    """Every `✿FUNCTION✿: name` / `✿ARGS✿: {json}` pair before the first `✿RESULT✿`, in order."""
    text = cut_at_result(text)
    starts = [m for m in _FUNCTION.finditer(text)]
    calls: list[ParsedCall] = []
    for position, match in enumerate(starts):
        end = starts[position + 1].start() if position + 1 < len(starts) else len(text)
        block = text[match.end() : end]
        args = _ARGS.search(block)
        name = (block[: args.start()] if args else block).strip().splitlines()
        name_text = name[0].strip() if name else ""
        if args is None:
            calls.append(ParsedCall(name_text, error="no ✿ARGS✿ line after the function name"))
            continue
        calls.append(_with_arguments(name_text, block[args.end() :]))
    return calls


def _with_arguments(name: str, raw: str) -> ParsedCall:
    raw = raw.strip()
    try:
        # raw_decode: prose the model writes after the JSON object does not spoil the call
        value, _ = json.JSONDecoder().raw_decode(raw)
    except (ValueError, RecursionError) as exc:
        return ParsedCall(name, error=f"arguments are not valid JSON: {json_problem(exc)}")
    if not isinstance(value, dict):
        return ParsedCall(name, error=f"arguments must be a JSON object, got {type(value).__name__}")
    return ParsedCall(name, value)


def calls_from_completion(completion: Completion) -> list[ParsedCall]:
    """The completion's OpenAI tool calls, then any ✿ calls written in its text."""
    calls = [ParsedCall(c.name, dict(c.arguments), c.error) for c in completion.tool_calls]
    return calls + parse_text_calls(completion.text)
