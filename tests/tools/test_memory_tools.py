"""The memory tools through a real kernel: each tool's effect, every bad call as an error result, and ACL."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

import pytest

from memos import MemOS, Session, Status
from memos.errors import UserError
from memos.llm.base import ToolCall, validate_tools
from memos.registry import Registry
from memos.tools.memory import FORGET, INSERT, MEMORY_TOOLS, SEARCH, UPDATE, MemoryTool, MemoryTools, ToolResult

NS = ("alice", "agent")
MISSING_ID = "01890a5d-ac96-774b-bcce-b302099a8057"


def call(name: str, call_id: str = "c1", **arguments: Any) -> ToolCall:
    """A well-formed tool call, as a backend would parse it."""
    return ToolCall(id=call_id, name=name, arguments=arguments)


def payload(result: ToolResult) -> dict[str, Any]:
    """The JSON the model reads, parsed (and checked to equal the result's data)."""
    data = json.loads(result.content)
    assert data == result.data
    return data


@pytest.fixture
def alice(mos: MemOS) -> Session:
    return mos.as_user("alice")


@pytest.fixture
def tools(alice: Session) -> MemoryTools:
    return MemoryTools(alice, NS)


def test_schemas_are_strict_and_valid_openai_tools() -> None:
    schemas = validate_tools(list(MEMORY_TOOLS.values()))
    assert [s.name for s in schemas] == [SEARCH, INSERT, UPDATE, FORGET]
    for schema in schemas:
        params = schema.parameters
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])
        assert all("type" in spec for spec in params["properties"].values())
        assert schema.to_openai()["function"]["parameters"] == params


def test_insert_writes_a_long_term_tool_cube_in_the_namespace(tools: MemoryTools, alice: Session) -> None:
    result = tools.run(call(INSERT, text="Alice's sister is called Ana.", tags=["family"]))

    assert result.ok and result.call_id == "c1" and result.name == INSERT
    data = payload(result)
    cube = alice.get(data["id"])
    assert data == {"id": cube.id, "namespace": "alice/agent", "stored": "Alice's sister is called Ana."}
    assert cube.namespace == NS
    assert cube.level.value == "long"
    assert cube.header.tags == ["family"]
    assert cube.header.labels == {"written_by": "memory-tool"}
    assert cube.header.provenance.source.value == "tool"
    assert cube.header.provenance.actor == "alice"
    message = result.to_message()
    assert (message.role, message.tool_call_id, message.content) == ("tool", "c1", result.content)


def test_search_returns_ids_texts_and_scores_best_first(tools: MemoryTools, alice: Session) -> None:
    alice.write(NS, "Alice's sister is called Ana.", level="long")
    alice.write(NS, "The office moved to Porto in 2023.", level="long")
    alice.write(NS, "Ana likes climbing.", level="long")

    result = tools.run(call(SEARCH, query="sister Ana", k=2))

    rows = payload(result)["results"]
    assert result.ok and len(rows) == 2
    assert rows[0]["text"] == "Alice's sister is called Ana."
    assert {r["text"] for r in rows} == {"Alice's sister is called Ana.", "Ana likes climbing."}
    assert rows[0]["score"] >= rows[1]["score"]
    assert all(r["namespace"] == "alice/agent" and alice.get(r["id"]).text == r["text"] for r in rows)


def test_search_spans_the_readable_namespaces_or_one_of_them(alice: Session) -> None:
    alice.write(("alice", "team"), "The team deadline is Friday.", level="long")
    alice.write(NS, "My own deadline is Monday.", level="long")
    tools = MemoryTools(alice, NS, readable=[NS, ("alice", "team")])

    both = payload(tools.run(call(SEARCH, query="deadline")))["results"]
    only_team = payload(tools.run(call(SEARCH, query="deadline", namespace="alice/team")))["results"]
    outside = tools.run(call(SEARCH, query="deadline", namespace="alice/other"))

    assert {r["namespace"] for r in both} == {"alice/agent", "alice/team"}
    assert [r["text"] for r in only_team] == ["The team deadline is Friday."]
    assert not outside.ok
    assert "not one you may search" in payload(outside)["error"]
    assert "alice/agent, alice/team" in payload(outside)["error"]


def test_update_makes_a_new_version_and_forget_hides_the_memory(tools: MemoryTools, alice: Session) -> None:
    cube = alice.write(NS, "I live in Lisbon.", level="long")

    updated = tools.run(call(UPDATE, id=cube.id, text="I live in Porto."))
    assert payload(updated) == {"id": cube.id, "version": 2, "stored": "I live in Porto."}
    assert [c.text for c in alice.history(cube.id)] == ["I live in Lisbon.", "I live in Porto."]

    forgotten = tools.run(call(FORGET, call_id="c2", id=cube.id))
    assert payload(forgotten) == {"id": cube.id, "forgotten": True}
    assert alice.get(cube.id).status == Status.deleted
    assert payload(tools.run(call(SEARCH, query="Porto")))["results"] == []

    again = tools.run(call(UPDATE, id=cube.id, text="I live in Faro."))
    assert not again.ok
    assert payload(again)["error"] == f"memory_update failed: cube {cube.id} was forgotten; it cannot be updated"


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (ToolCall.parse("c1", INSERT, '{"text": "unterminated'), "the arguments could not be read"),
        (ToolCall.parse("c1", INSERT, '["a list"]'), "arguments must be a JSON object"),
        (call("memory_teleport", text="x"), "unknown tool 'memory_teleport'"),
        (call(INSERT), "missing required arguments text"),
        (call(INSERT, text="x", priority="high"), "unexpected arguments priority"),
        (call(INSERT, text="   "), "text is empty"),
        (call(INSERT, text=42), "text must be a JSON string, got int"),
        (call(INSERT, text="x", tags="family"), "tags must be a JSON array, got str"),
        (call(INSERT, text="x", tags=["ok", 3]), "tags[1] must be a JSON string, got int"),
        (call(INSERT, text="x" * 4001), "text is 4001 characters, over the limit of 4000"),
        (call(SEARCH, query="q", k=0), "k must be from 1 to 20, got 0"),
        (call(SEARCH, query="q", k=True), "k must be a JSON integer, got bool"),
        (call(SEARCH, query="q", k="five"), "k must be a JSON integer, got str"),
        (call(UPDATE, id=MISSING_ID, text="new"), f"no cube with id {MISSING_ID}"),
        (call(FORGET, id="not-an-id"), "'not-an-id' is not a cube id"),
    ],
)
def test_bad_calls_come_back_as_error_results(tools: MemoryTools, alice: Session, bad: ToolCall, expected: str) -> None:
    result = tools.run(bad)

    assert not result.ok
    assert result.call_id == "c1"
    error = payload(result)["error"]
    assert error.startswith(f"{bad.name} failed: ")
    assert expected in error
    assert alice.list(NS) == []


def test_update_and_forget_stay_inside_the_writable_namespaces(tools: MemoryTools, alice: Session) -> None:
    elsewhere = alice.write(("alice", "diary"), "Private diary entry.", level="long")

    for bad in (call(UPDATE, id=elsewhere.id, text="rewritten"), call(FORGET, id=elsewhere.id)):
        result = tools.run(bad)
        assert not result.ok
        assert "is in alice/diary, outside the namespaces you may change (alice/agent)" in payload(result)["error"]
    assert alice.get(elsewhere.id).text == "Private diary entry."
    assert alice.get(elsewhere.id).status == Status.active


def test_another_users_namespace_is_refused_by_the_kernel(mos: MemOS, alice: Session) -> None:
    secret = alice.write(("alice", "notes"), "Alice's PIN is 1234.", level="long")
    bob = mos.as_user("bob")
    tools = MemoryTools(bob, ("alice", "notes"))

    search = tools.run(call(SEARCH, query="PIN"))
    insert = tools.run(call(INSERT, text="Bob was here."))
    update = tools.run(call(UPDATE, id=secret.id, text="PIN is 0000."))
    forget = tools.run(call(FORGET, id=secret.id))

    for result, right in ((search, "read"), (insert, "write")):
        assert not result.ok
        assert "bob may not" in payload(result)["error"]
        assert f"--right {right}" in payload(result)["error"]
    # a cube bob cannot read answers as a missing one: no oracle of what exists in alice's memory
    for result in (update, forget):
        assert not result.ok
        assert f"no cube with id {secret.id}" in payload(result)["error"]
    assert [c.text for c in alice.list(("alice", "notes"))] == ["Alice's PIN is 1234."]

    alice.share(("alice", "notes"), "bob", "read")
    assert [r["id"] for r in payload(tools.run(call(SEARCH, query="PIN")))["results"]] == [secret.id]
    still_refused = tools.run(call(UPDATE, id=secret.id, text="PIN is 0000."))
    assert "bob may not write alice/notes" in payload(still_refused)["error"]
    assert alice.get(secret.id).text == "Alice's PIN is 1234."


def test_a_subset_of_tools_offers_and_runs_only_those(alice: Session) -> None:
    tools = MemoryTools(alice, NS, names=[SEARCH])

    assert [s.name for s in tools.schemas] == [SEARCH]
    refused = tools.run(call(INSERT, text="x"))
    assert "unknown tool 'memory_insert'; the memory tools are memory_search" in payload(refused)["error"]


def test_bad_configuration_raises_user_error(alice: Session) -> None:
    with pytest.raises(UserError, match="unknown memory tools"):
        MemoryTools(alice, NS, names=["memory_fly"])
    with pytest.raises(UserError, match="k must be an integer from 1 to 20"):
        MemoryTools(alice, NS, k=50)
    with pytest.raises(UserError, match="invalid namespace segment"):
        MemoryTools(alice, ("alice", "no spaces"))


def test_the_plugin_hook_registers_the_four_tools(alice: Session) -> None:
    entry = metadata.EntryPoint(name="memory-tools", value="memos.tools.memory", group="memos.plugins")
    registry = Registry(entry_points=[entry])

    assert sorted(registry.tools) == sorted(MEMORY_TOOLS)
    tool = registry.tools[INSERT]
    assert isinstance(tool, MemoryTool) and tool.schema == MEMORY_TOOLS[INSERT]
    bound = tool.bind(alice, NS)
    assert [s.name for s in bound.schemas] == [INSERT]
    assert bound.run(call(INSERT, text="Registered tools work.")).ok
