"""The tool agent end to end: scripted models and an OpenAI-compatible server driving the memory tools."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from support.fake_openai import FakeOpenAIServer

from memos import MemOS, Session
from memos.agents.tool_agent import AgentResult, ToolAgent
from memos.errors import UserError
from memos.llm.base import Completion, ToolCall, Usage
from memos.llm.openai import OpenAIChat
from memos.llm.testing import ScriptedLLM
from memos.registry import Registry
from memos.tools.memory import MEMORY_TOOLS, SEARCH, MemoryTools

NS = ("alice", "assistant")


def calls(*items: tuple[str, dict[str, Any]], usage: Usage | None = None) -> Completion:
    """A model reply made only of tool calls, with ids c1, c2, ..."""
    tool_calls = [ToolCall(id=f"c{i}", name=name, arguments=args) for i, (name, args) in enumerate(items, start=1)]
    return Completion(tool_calls=tool_calls, finish_reason="tool_calls", usage=usage)


@pytest.fixture
def alice(mos: MemOS) -> Session:
    return mos.as_user("alice")


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started fake OpenAI-compatible server on 127.0.0.1."""
    with FakeOpenAIServer() as server:
        yield server


def test_the_agent_stores_searches_and_answers(alice: Session) -> None:
    llm = ScriptedLLM(
        [
            calls(("memory_insert", {"text": "Alice's sister is called Ana."}), usage=Usage(prompt_tokens=50)),
            calls(("memory_search", {"query": "sister"})),
            Completion(text="Your sister is Ana.", usage=Usage(prompt_tokens=80, completion_tokens=6)),
        ]
    )
    agent = ToolAgent(alice, namespace=NS, llm=llm)

    result = agent.invoke("My sister is Ana. Who is my sister?")

    assert isinstance(result, AgentResult)
    assert (result.text, result.steps, result.stopped, result.finished) == ("Your sister is Ana.", 3, "answer", True)
    assert result.stop_message == "answered after 3 model call(s)"
    [stored] = alice.list(NS)
    assert stored.text == "Alice's sister is called Ana."
    assert [(r.name, r.ok) for r in result.tool_results] == [("memory_insert", True), ("memory_search", True)]
    assert json.loads(result.tool_results[1].content)["results"][0]["id"] == stored.id
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert (result.tokens.prompt, result.tokens.completion, result.tokens.calls) == (130, 6, 3)
    # every request offered the four tools after a system prompt naming the namespace
    assert len(llm.calls) == 3
    for request in llm.calls:
        assert [t.name for t in request.tools] == list(MEMORY_TOOLS)
        assert request.messages[0].role == "system" and "alice/assistant" in request.messages[0].content
    second = llm.calls[1].messages
    assert second[-1].role == "tool" and second[-1].tool_call_id == "c1"
    assert json.loads(second[-1].content)["id"] == stored.id


def test_every_call_of_a_reply_runs_in_order(alice: Session) -> None:
    llm = ScriptedLLM(
        [
            calls(("memory_insert", {"text": "Lives in Lisbon."}), ("memory_insert", {"text": "Works as a nurse."})),
            "Noted both.",
        ]
    )

    result = ToolAgent(alice, namespace=NS, llm=llm).invoke("I live in Lisbon and work as a nurse.")

    assert [c.text for c in alice.list(NS)] == ["Lives in Lisbon.", "Works as a nurse."]
    tool_messages = [m for m in llm.calls[1].messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["c1", "c2"]
    assert result.text == "Noted both."


def test_bad_tool_calls_reach_the_model_as_errors_not_exceptions(alice: Session) -> None:
    broken = Completion(
        tool_calls=[
            ToolCall.parse("c1", "memory_insert", '{"text": '),
            ToolCall(id="c2", name="memory_update", arguments={"id": "01890a5d-ac96-774b-bcce-b302099a8057"}),
            ToolCall(id="c3", name="delete_everything", arguments={}),
        ],
        finish_reason="tool_calls",
    )
    llm = ScriptedLLM([broken, "I could not store that."])

    result = ToolAgent(alice, namespace=NS, llm=llm).invoke("Remember X.")

    assert result.finished and result.text == "I could not store that."
    assert [r.ok for r in result.tool_results] == [False, False, False]
    errors = [json.loads(m.content)["error"] for m in llm.calls[1].messages if m.role == "tool"]
    assert "the arguments could not be read" in errors[0]
    assert "missing required arguments text" in errors[1]
    assert "unknown tool 'delete_everything'" in errors[2]
    assert alice.list(NS) == []


def test_max_steps_stops_the_loop_with_every_call_answered(alice: Session) -> None:
    llm = ScriptedLLM([calls(("memory_search", {"query": f"attempt {i}"})) for i in range(5)])

    result = ToolAgent(alice, namespace=NS, llm=llm, max_steps=3).invoke("Search forever.")

    assert (result.stopped, result.finished, result.steps, result.text) == ("max_steps", False, 3, "")
    assert result.stop_message == "stopped after 3 model call(s) (max_steps) without a final answer"
    assert len(llm.calls) == 3 and len(llm.replies) == 2
    assert len(result.tool_results) == 3
    assert result.messages[-1].role == "tool"


def test_a_tool_executor_may_be_passed_in(alice: Session) -> None:
    alice.write(("alice", "shared"), "The shared calendar says the party is on Saturday.", level="long")
    tools = MemoryTools(alice, NS, readable=[NS, ("alice", "shared")], names=[SEARCH])
    llm = ScriptedLLM([calls(("memory_search", {"query": "party"})), "Saturday."])

    result = ToolAgent(alice, namespace=NS, llm=llm, tools=tools, temperature=0.0, max_tokens=64).invoke("When?")

    [found] = json.loads(result.tool_results[0].content)["results"]
    assert found["namespace"] == "alice/shared" and result.text == "Saturday."
    assert [t.name for t in llm.calls[0].tools] == [SEARCH]
    assert llm.calls[0].kwargs == {"max_tokens": 64, "temperature": 0.0, "stop": None}


def test_a_checkpointer_continues_a_thread(alice: Session) -> None:
    llm = ScriptedLLM(["Hello Alice.", "You said your name is Alice.", "Hi, stranger."])
    agent = ToolAgent(alice, namespace=NS, llm=llm, checkpointer=InMemorySaver(), tools=[SEARCH])

    first = agent.invoke("I am Alice.", thread_id="t1")
    second = agent.invoke("What is my name?", thread_id="t1")
    other = agent.invoke("Who am I?")

    assert first.thread_id == "t1" and second.thread_id == "t1"
    assert other.thread_id not in (None, "t1")
    assert [m.content for m in second.messages] == [
        "I am Alice.",
        "Hello Alice.",
        "What is my name?",
        "You said your name is Alice.",
    ]
    assert [m.content for m in llm.calls[1].messages[1:]] == ["I am Alice.", "Hello Alice.", "What is my name?"]
    assert [m.content for m in llm.calls[2].messages[1:]] == ["Who am I?"]
    assert second.steps == 1 and second.tool_results == []


def test_a_sqlite_checkpointer_survives_a_new_agent(alice: Session, tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite"
    llm = ScriptedLLM([calls(("memory_insert", {"text": "Likes tea."})), "Stored.", "You like tea."])
    with sqlite3.connect(path, check_same_thread=False) as conn:
        ToolAgent(alice, namespace=NS, llm=llm, checkpointer=SqliteSaver(conn)).invoke("I like tea.", thread_id="a")
    with sqlite3.connect(path, check_same_thread=False) as conn:
        agent = ToolAgent(alice, namespace=NS, llm=llm, checkpointer=SqliteSaver(conn))
        result = agent.invoke("What do I like?", thread_id="a")

    assert result.text == "You like tea."
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert result.messages[1].tool_calls[0].arguments == {"text": "Likes tea."}


def test_bad_input_raises_user_error(alice: Session) -> None:
    llm = ScriptedLLM()
    with pytest.raises(UserError, match="needs a checkpointer"):
        ToolAgent(alice, namespace=NS, llm=llm).invoke("hi", thread_id="t1")
    with pytest.raises(UserError, match="the task is empty"):
        ToolAgent(alice, namespace=NS, llm=llm).invoke("  ")
    with pytest.raises(UserError, match="max_steps must be an integer from 1 to 100"):
        ToolAgent(alice, namespace=NS, llm=llm, max_steps=0)
    with pytest.raises(UserError, match="the tool agent needs an LLM"):
        ToolAgent(alice, namespace=NS)
    with pytest.raises(UserError, match="unknown memory tools"):
        ToolAgent(alice, namespace=NS, llm=llm, tools=["memory_fly"])
    assert llm.calls == []


def test_against_an_openai_compatible_server(alice: Session, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat(
        tool_calls=[{"id": "call_1", "name": "memory_insert", "arguments": '{"text": "Meeting moved to 3pm."}'}],
        usage={"prompt_tokens": 120, "completion_tokens": 15},
    )
    openai_server.enqueue_chat(
        tool_calls=[{"id": "call_2", "name": "memory_search", "arguments": '{"query": "meeting", "k": 3'}],
        usage={"prompt_tokens": 160, "completion_tokens": 12},
    )
    openai_server.enqueue_chat("The meeting is at 3pm.", usage={"prompt_tokens": 200, "completion_tokens": 8})
    llm = OpenAIChat("fake-model", base_url=openai_server.url, api_key="sk-test", timeout_s=5, max_retries=0)

    result = ToolAgent(alice, namespace=NS, llm=llm).invoke("The meeting moved to 3pm; when is it?")

    assert result.text == "The meeting is at 3pm." and result.steps == 3
    assert [c.text for c in alice.list(NS)] == ["Meeting moved to 3pm."]
    assert [r.ok for r in result.tool_results] == [True, False]
    assert (result.tokens.prompt, result.tokens.completion) == (480, 35)
    bodies = [r.json for r in openai_server.requests]
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == list(MEMORY_TOOLS)
    assert bodies[0]["tools"][0]["function"]["parameters"]["additionalProperties"] is False
    # the second request carries the assistant's call and the tool's answer in OpenAI's wire format
    assistant, tool = bodies[1]["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"text": "Meeting moved to 3pm."}'
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    assert json.loads(tool["content"])["stored"] == "Meeting moved to 3pm."
    # malformed JSON from the server came back to the model as an error it can read
    error = json.loads(bodies[2]["messages"][-1]["content"])["error"]
    assert error.startswith("memory_search failed: the arguments could not be read")


def test_the_plugin_hook_registers_the_agent(alice: Session) -> None:
    entry = metadata.EntryPoint(name="tool-agent", value="memos.agents.tool_agent", group="memos.plugins")
    registry = Registry(entry_points=[entry])

    agent = registry.create("agents", "tool-agent", alice, namespace=NS, llm=ScriptedLLM(["Done."]))

    assert isinstance(agent, ToolAgent)
    assert agent.invoke("Say done.").text == "Done."
