"""The memory tools agents call (search, insert, update, forget), run through a user's Session.

`MEMORY_TOOLS` holds the four tool schemas (strict JSON schemas: typed, bounded, no extra fields).
`MemoryTools` binds them to a Session and its namespaces and carries out a model's `ToolCall`s
with the kernel's system calls, so ACL, audit and versions apply. Every problem with a call (bad
JSON, an unknown tool, missing or unexpected arguments, an unknown id, a cube outside the agent's
namespaces, a refused right) comes back as an error result the model can read; nothing raises.

    tools = MemoryTools(alice, ("alice", "agent"))
    llm.complete(messages, tools=tools.schemas)        # the model answers with tool calls
    results = [tools.run(call) for call in completion.tool_calls]
    messages += [result.to_message() for result in results]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memos.cube import Level, Namespace, Source, ns_path, parse_namespace
from memos.errors import MemosError, UserError
from memos.hooks import Register, hookimpl
from memos.inputs import enum_value
from memos.llm.base import Message, ToolCall, ToolSchema
from memos.log import redact

if TYPE_CHECKING:
    from memos.kernel import Session
    from memos.retrieval import Hit

SEARCH = "memory_search"
INSERT = "memory_insert"
UPDATE = "memory_update"
FORGET = "memory_forget"
#: most hits one search may return
MAX_K = 20
#: longest text a tool may write (the kernel's own limit may be lower)
MAX_TOOL_TEXT = 4000
#: label every cube the tools write carries, so tool-made memories can be told apart
TOOL_LABELS = {"written_by": "memory-tool"}

_ID = {"type": "string", "minLength": 1, "description": "A memory id exactly as a search result gave it."}
_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TOOL_TEXT}

MEMORY_TOOLS: dict[str, ToolSchema] = {
    SEARCH: ToolSchema(
        name=SEARCH,
        description="Search long-term memory; returns the best matching memories with their ids.",
        parameters={
            "type": "object",
            "properties": {
                "query": {**_TEXT, "description": "What to look for, in a few words or a question."},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "description": "How many results."},
                "namespace": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Search only this one of your readable namespaces (default: all of them).",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    ),
    INSERT: ToolSchema(
        name=INSERT,
        description="Store a new memory: one self-contained fact or event per call.",
        parameters={
            "type": "object",
            "properties": {
                "text": {**_TEXT, "description": "The memory, written so it makes sense on its own later."},
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 64},
                    "maxItems": 8,
                    "description": "Optional short tags, e.g. ['travel'].",
                },
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    ),
    UPDATE: ToolSchema(
        name=UPDATE,
        description="Replace the text of a memory (the old version stays in its history).",
        parameters={
            "type": "object",
            "properties": {"id": _ID, "text": {**_TEXT, "description": "The memory's new, complete text."}},
            "required": ["id", "text"],
            "additionalProperties": False,
        },
    ),
    FORGET: ToolSchema(
        name=FORGET,
        description="Forget a memory that is wrong or no longer true (it can be restored by its owner).",
        parameters={
            "type": "object",
            "properties": {"id": _ID},
            "required": ["id"],
            "additionalProperties": False,
        },
    ),
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "array": (list, tuple)}


@dataclass(frozen=True)
class ToolResult:
    """What became of one tool call: the text sent back to the model, and the same as data."""

    call_id: str
    name: str
    ok: bool
    #: the tool message's content: JSON text the model reads
    content: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: the result as data (what `content` encodes)
    data: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> Message:
        """The tool message answering the call."""
        return Message(role="tool", tool_call_id=self.call_id, content=self.content)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for graph state and logs)."""
        return {
            "call_id": self.call_id,
            "name": self.name,
            "ok": self.ok,
            "content": self.content,
            "arguments": dict(self.arguments),
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ToolResult:
        """The result `as_dict` gave."""
        return cls(**dict(value))


class _Refused(Exception):
    """A call that cannot be carried out; the message tells the model why."""


def check_arguments(schema: ToolSchema, args: Mapping[str, Any]) -> None:
    """Check arguments against a tool's JSON schema (types, bounds, required, no extras); _Refused if bad."""
    params = schema.parameters
    properties: dict[str, Any] = params.get("properties", {})
    unexpected = sorted(set(args) - set(properties))
    if unexpected:
        raise _Refused(f"unexpected arguments {', '.join(unexpected)}; {schema.name} takes {', '.join(properties)}")
    missing = [name for name in params.get("required", []) if name not in args]
    if missing:
        raise _Refused(f"missing required arguments {', '.join(missing)}")
    for name, value in args.items():
        _check_value(name, value, properties[name])


def _check_value(name: str, value: Any, spec: Mapping[str, Any]) -> None:
    kind = spec.get("type", "string")
    if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[kind]):
        raise _Refused(f"{name} must be a JSON {kind}, got {type(value).__name__}")
    if kind == "string":
        if len(value.strip()) < spec.get("minLength", 0):
            raise _Refused(f"{name} is empty")
        if len(value) > spec.get("maxLength", len(value)):
            raise _Refused(f"{name} is {len(value)} characters, over the limit of {spec['maxLength']}")
    elif kind == "integer":
        low, high = spec.get("minimum"), spec.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Refused(f"{name} must be from {low} to {high}, got {value}")
    else:
        if len(value) > spec.get("maxItems", len(value)):
            raise _Refused(f"{name} has {len(value)} items, more than {spec['maxItems']}")
        for position, item in enumerate(value):
            _check_value(f"{name}[{position}]", item, spec["items"])


def _dump(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _hit_row(hit: Hit) -> dict[str, Any]:
    cube = hit.cube
    row: dict[str, Any] = {"id": cube.id, "text": cube.text, "namespace": ns_path(cube.namespace)}
    if cube.header.event_time is not None:
        row["event_time"] = cube.header.event_time.date().isoformat()
    row["score"] = round(hit.score, 4)
    return row


class MemoryTools:
    """The memory tools bound to a Session: search the readable namespaces, write to `namespace`.

    `readable` (default: just `namespace`) are the namespaces memory_search looks in; `writable`
    (default: just `namespace`) bound which cubes memory_update and memory_forget may change, on top
    of the kernel's own ACL checks. `names` picks a subset of the four tools.
    """

    def __init__(
        self,
        session: Session,
        namespace: Namespace | Sequence[str] | str,
        *,
        readable: Sequence[Namespace | Sequence[str] | str] | None = None,
        writable: Sequence[Namespace | Sequence[str] | str] | None = None,
        names: Sequence[str] | None = None,
        k: int = 5,
        level: Level | str = Level.long,
    ) -> None:
        self.session = session
        self.namespace = parse_namespace(namespace)
        self.readable: list[Namespace] = [parse_namespace(ns) for ns in readable] if readable else [self.namespace]
        self.writable: list[Namespace] = [parse_namespace(ns) for ns in writable] if writable else [self.namespace]
        chosen = list(MEMORY_TOOLS) if names is None else list(names)
        unknown = [name for name in chosen if name not in MEMORY_TOOLS]
        if unknown or not chosen:
            raise UserError(
                f"unknown memory tools {unknown or '(none chosen)'}: choose from {', '.join(MEMORY_TOOLS)}",
                tools=unknown,
            )
        self.names: list[str] = list(dict.fromkeys(chosen))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise UserError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        self.k = k
        self.level = enum_value(Level, level, "level")

    @property
    def schemas(self) -> list[ToolSchema]:
        """The schemas of the tools offered, to pass to `LLM.complete(tools=...)`."""
        return [MEMORY_TOOLS[name] for name in self.names]

    def run(self, call: ToolCall) -> ToolResult:
        """Carry out one call through the kernel; every failure is an error result, never an exception."""
        args = dict(call.arguments)
        try:
            if not call.valid:
                raise _Refused(f"the arguments could not be read ({call.error}); send a JSON object")
            if call.name not in self.names:
                raise _Refused(f"unknown tool {call.name!r}; the memory tools are {', '.join(self.names)}")
            check_arguments(MEMORY_TOOLS[call.name], args)
            data = self._dispatch(call.name, args)
        except _Refused as exc:
            return self._error(call, args, str(exc))
        except MemosError as exc:
            # NotFound, PermissionDenied, Conflict, a bad value the kernel rejects, or a failing backend
            return self._error(call, args, exc.message)
        return ToolResult(call.id, call.name, True, _dump(data), args, data)

    def run_all(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Carry out calls in order."""
        return [self.run(call) for call in calls]

    def _error(self, call: ToolCall, args: dict[str, Any], message: str) -> ToolResult:
        data = {"error": redact(f"{call.name or 'tool call'} failed: {message}")}
        return ToolResult(call.id, call.name, False, _dump(data), args, data)

    def _dispatch(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == SEARCH:
            return self._search(args["query"], args.get("k", self.k), args.get("namespace"))
        if name == INSERT:
            return self._insert(args["text"], list(args.get("tags", [])))
        if name == UPDATE:
            return self._update(args["id"], args["text"])
        return self._forget(args["id"])

    def _search(self, query: str, k: int, namespace: str | None) -> dict[str, Any]:
        spaces = self.readable
        if namespace is not None:
            wanted = namespace.strip().strip("/")
            spaces = [ns for ns in self.readable if ns_path(ns) == wanted]
            if not spaces:
                readable = ", ".join(ns_path(ns) for ns in self.readable)
                self._deny("read", wanted)
                raise _Refused(f"namespace {namespace!r} is not one you may search; use one of {readable}")
        hits: dict[str, Hit] = {}
        for ns in spaces:
            for hit in self.session.recall(ns, query, k=k):
                if hit.cube.id not in hits or hits[hit.cube.id].score < hit.score:
                    hits[hit.cube.id] = hit
        best = sorted(hits.values(), key=lambda h: (-h.score, h.cube.id))[:k]
        return {"results": [_hit_row(hit) for hit in best]}

    def _insert(self, text: str, tags: list[str]) -> dict[str, Any]:
        cube = self.session.write(
            self.namespace,
            text,
            level=self.level,
            tags=tags,
            labels=TOOL_LABELS,
            provenance={"source": Source.tool.value},
        )
        return {"id": cube.id, "namespace": ns_path(cube.namespace), "stored": cube.text}

    def _changeable(self, cube_id: str) -> str:
        cube = self.session.get(cube_id)
        path = ns_path(cube.namespace)
        if not _under(path, [ns_path(ns) for ns in self.writable]):
            allowed = ", ".join(ns_path(ns) for ns in self.writable)
            self._deny("write", path, cube.id)
            raise _Refused(f"memory {cube.id} is in {path}, outside the namespaces you may change ({allowed})")
        return cube.id

    def _deny(self, attempted: str, namespace: str, cube_id: str | None = None) -> None:
        """Audit a call refused for reaching outside the namespaces these tools are bound to."""
        self.session.mos.governance.deny(
            self.session.user, attempted, ns=namespace[:512] or None, cube_id=cube_id, detail={"by": "memory-tools"}
        )

    def _update(self, cube_id: str, text: str) -> dict[str, Any]:
        cube = self.session.update(self._changeable(cube_id), text)
        return {"id": cube.id, "version": cube.header.version, "stored": cube.text}

    def _forget(self, cube_id: str) -> dict[str, Any]:
        checked = self._changeable(cube_id)
        self.session.forget(checked)
        return {"id": checked, "forgotten": True}


@dataclass(frozen=True)
class MemoryTool:
    """One memory tool as the plugin registry holds it: its schema, and `bind` to run it for a session."""

    name: str
    schema: ToolSchema

    def bind(self, session: Session, namespace: Namespace | Sequence[str] | str, **options: Any) -> MemoryTools:
        """This tool alone, bound to a session and namespace (options as for MemoryTools)."""
        return MemoryTools(session, namespace, names=[self.name], **options)


@hookimpl
def memos_register_tools(register: Register) -> None:
    """Register the four memory tools under their tool names."""
    for name, schema in MEMORY_TOOLS.items():
        register(name, MemoryTool(name, schema))
