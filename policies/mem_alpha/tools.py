"""Mem-α's four memory tools: their schemas, and carrying out parsed calls on a memory state.

A call that cannot be carried out (unknown tool, missing or unexpected arguments, a bad
memory_type, an unknown id, a duplicate insert) is recorded as failed; nothing raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memos.errors import MemosError
from memos.llm.base import ToolSchema

from .memory import CORE, LIST_REGIONS, REGIONS, SEARCH_METHODS, SEARCH_TOP_K, MemoryState
from .parse import ParsedCall

INSERT = "new_memory_insert"
UPDATE = "memory_update"
DELETE = "memory_delete"
SEARCH = "search_memory"

_TYPE_DOC = "Which memory: core_memory (one paragraph), semantic_memory (facts) or episodic_memory (events in time)."
_ID_DOC = "The item's id as shown in memory, e.g. 3f2a (without brackets)."
#: the memory_type argument of the tools that act on any of the three memories
_ANY_MEMORY_TYPE = {
    "type": "string",
    "enum": ["core_memory", "semantic_memory", "episodic_memory"],
    "description": _TYPE_DOC,
}

TOOLS: dict[str, ToolSchema] = {
    INSERT: ToolSchema(
        name=INSERT,
        description="Add a new item to semantic or episodic memory.",
        parameters={
            "type": "object",
            "properties": {
                "memory_type": {"type": "string", "enum": ["semantic_memory", "episodic_memory"]},
                "content": {"type": "string", "description": "The item's text: one fact, or one event."},
            },
            "required": ["memory_type", "content"],
        },
    ),
    UPDATE: ToolSchema(
        name=UPDATE,
        description="Rewrite the core memory paragraph, or replace the text of a semantic or episodic item.",
        parameters={
            "type": "object",
            "properties": {
                "memory_type": _ANY_MEMORY_TYPE,
                "new_content": {"type": "string", "description": "The new text (core: the whole paragraph)."},
                "memory_id": {"type": "string", "description": _ID_DOC + " Not used for core_memory."},
            },
            "required": ["memory_type", "new_content"],
        },
    ),
    DELETE: ToolSchema(
        name=DELETE,
        description="Remove a semantic or episodic item (or clear the core memory paragraph).",
        parameters={
            "type": "object",
            "properties": {
                "memory_type": _ANY_MEMORY_TYPE,
                "memory_id": {"type": "string", "description": _ID_DOC + " Not used for core_memory."},
            },
            "required": ["memory_type"],
        },
    ),
    SEARCH: ToolSchema(
        name=SEARCH,
        description="Find the items of one memory that best match a query.",
        parameters={
            "type": "object",
            "properties": {
                "memory_type": _ANY_MEMORY_TYPE,
                "query": {"type": "string"},
                "search_method": {"type": "string", "enum": list(SEARCH_METHODS), "default": "bm25"},
            },
            "required": ["memory_type", "query"],
        },
    ),
}
#: the tools offered while memorising a chunk (search is for answering)
WRITE_TOOLS: tuple[ToolSchema, ...] = (TOOLS[INSERT], TOOLS[UPDATE], TOOLS[DELETE])


def openai_tools(schemas: Sequence[ToolSchema] = WRITE_TOOLS) -> list[dict[str, Any]]:
    """The schemas in OpenAI's `tools` format."""
    return [schema.to_openai() for schema in schemas]


@dataclass(frozen=True)
class CallResult:
    """What became of one call: success, the message a tool result would carry, and what it wrote."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    message: str
    #: the region written (insert/update), for the type-fit reward
    region: str | None = None
    #: the text written (insert/update)
    text: str | None = None


@dataclass(frozen=True)
class ChunkStats:
    """The tool calls one chunk produced and the memory size after them."""

    index: int
    calls: tuple[CallResult, ...] = ()
    #: tokens of the memory's texts after this chunk
    memory_tokens: int = 0
    #: tokens of the chunk itself
    chunk_tokens: int = 0

    @property
    def num_calls(self) -> int:
        """Calls the model made."""
        return len(self.calls)

    @property
    def num_ok(self) -> int:
        """Calls carried out."""
        return sum(1 for c in self.calls if c.ok)

    @property
    def num_failed(self) -> int:
        """Calls that could not be carried out."""
        return self.num_calls - self.num_ok

    def writes(self) -> list[tuple[str, str]]:
        """(region, text) of each successful insert or update."""
        return [(c.region, c.text) for c in self.calls if c.ok and c.region and c.text]

    def as_info(self) -> dict[str, Any]:
        """Plain numbers for logs and RL step info."""
        return {
            "chunk": self.index,
            "num_calls": self.num_calls,
            "num_ok": self.num_ok,
            "num_failed": self.num_failed,
            "memory_tokens": self.memory_tokens,
            "chunk_tokens": self.chunk_tokens,
            "results": [c.message for c in self.calls],
        }


class _Invalid(Exception):
    """A call's arguments are wrong; the message says how."""


def run_call(state: MemoryState, call: ParsedCall) -> CallResult:
    """Carry out one call on the state (editing it) and say what happened."""
    args = dict(call.arguments)
    if call.error is not None:
        return CallResult(call.name, args, False, f"[{call.name or '?'} failed] {call.error}")
    schema = TOOLS.get(call.name)
    if schema is None:
        return CallResult(call.name, args, False, f"[{call.name or '?'} failed] unknown tool; use {', '.join(TOOLS)}")
    try:
        _check_fields(schema, args)
        region = _region(args["memory_type"])
        return _RUNNERS[call.name](state, call.name, args, region)
    except _Invalid as exc:
        return CallResult(call.name, args, False, f"[{call.name} failed] {exc}")
    except MemosError as exc:
        # a search through the kernel can fail (a bad query); the call fails, the chunk goes on
        return CallResult(call.name, args, False, f"[{call.name} failed] {exc.message}")


def run_calls(state: MemoryState, calls: Sequence[ParsedCall], *, index: int, chunk_tokens: int) -> ChunkStats:
    """Carry out a chunk's calls in order and record the outcome."""
    results = tuple(run_call(state, call) for call in calls)
    return ChunkStats(index=index, calls=results, memory_tokens=state.num_tokens(), chunk_tokens=chunk_tokens)


def _check_fields(schema: ToolSchema, args: dict[str, Any]) -> None:
    properties = schema.parameters["properties"]
    unexpected = sorted(set(args) - set(properties))
    if unexpected:
        raise _Invalid(f"unexpected arguments {', '.join(unexpected)}; {schema.name} takes {', '.join(properties)}")
    missing = [name for name in schema.parameters["required"] if name not in args]
    if missing:
        raise _Invalid(f"missing arguments {', '.join(missing)}")
    for name, value in args.items():
        if not isinstance(value, str):
            raise _Invalid(f"{name} must be a string, not {type(value).__name__}")


def _region(memory_type: str) -> str:
    region = memory_type.strip().removesuffix("_memory")
    if region not in REGIONS:
        raise _Invalid(f"memory_type {memory_type!r} is not core_memory, semantic_memory or episodic_memory")
    return region


def _item_id(args: dict[str, Any], region: str) -> str:
    item_id = args.get("memory_id", "").strip().strip("[]").strip()
    if not item_id:
        raise _Invalid(f"memory_id is needed for {region}_memory")
    return item_id


def _insert(state: MemoryState, name: str, args: dict[str, Any], region: str) -> CallResult:
    if region not in LIST_REGIONS:
        raise _Invalid(f"insert into semantic_memory or episodic_memory; core_memory is changed with {UPDATE}")
    content = args["content"].strip()
    if not content:
        raise _Invalid("content is empty")
    entry = state.insert(region, content)
    if entry is None:
        raise _Invalid(f"{region}_memory already holds exactly this text; nothing inserted")
    return CallResult(name, args, True, f"[{name} ok] inserted [{entry.short_id}]", region, entry.text)


def _update(state: MemoryState, name: str, args: dict[str, Any], region: str) -> CallResult:
    text = args["new_content"].strip()
    if region == CORE:
        truncated = state.set_core(text)
        note = f", truncated to {state.max_core_tokens} tokens" if truncated else ""
        return CallResult(name, args, True, f"[{name} ok] core memory rewritten{note}", CORE, state.core or None)
    item_id = _item_id(args, region)
    if not text:
        raise _Invalid(f"new_content is empty; remove an item with {DELETE}")
    entry = state.update(region, item_id, text)
    if entry is None:
        raise _Invalid(f"no item [{item_id}] in {region}_memory")
    return CallResult(name, args, True, f"[{name} ok] updated [{item_id}]", region, entry.text)


def _delete(state: MemoryState, name: str, args: dict[str, Any], region: str) -> CallResult:
    if region == CORE:
        state.set_core("")
        return CallResult(name, args, True, f"[{name} ok] core memory cleared")
    item_id = _item_id(args, region)
    if state.delete(region, item_id) is None:
        raise _Invalid(f"no item [{item_id}] in {region}_memory")
    return CallResult(name, args, True, f"[{name} ok] deleted [{item_id}]")


def _search(state: MemoryState, name: str, args: dict[str, Any], region: str) -> CallResult:
    query = args["query"].strip()
    method = args.get("search_method", "bm25").strip() or "bm25"
    if not query:
        raise _Invalid("query is empty")
    if method not in SEARCH_METHODS:
        raise _Invalid(f"search_method {method!r} is not one of {', '.join(SEARCH_METHODS)}")
    hits = state.search(region, query, method, SEARCH_TOP_K)
    lines = [f"[{e.short_id}] {e.text}" for e in hits] or ["(no match)"]
    return CallResult(name, args, True, f"[{name} ok]\n" + "\n".join(lines))


_RUNNERS = {INSERT: _insert, UPDATE: _update, DELETE: _delete, SEARCH: _search}
