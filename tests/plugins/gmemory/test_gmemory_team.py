"""GMemory as the TeamMemory of a real LangGraph supervisor team: the hooks the team calls, end to end."""

from __future__ import annotations

from memos import MemOS
from memos.agents.team import Supervisor, TeamMemory
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM, ScriptedLLM
from memos.plugins.gmemory import GMemory, prompts


def memory_answer(messages: list[Message], tools: list[ToolSchema]) -> str:
    """G-Memory's model: key steps only (nothing else is asked with two tasks)."""
    assert messages[0].content == prompts.KEY_STEPS_SYSTEM
    return "1. ask the researcher\n2. finish"


def test_a_supervisor_team_feeds_and_reads_gmemory(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    memory = GMemory(alice, FunctionLLM(memory_answer), name="research")
    assert isinstance(memory, TeamMemory)
    team_llm = ScriptedLLM(["researcher", "Tide pools shelter anemones.", "FINISH"] * 2)
    team = Supervisor(alice, team="research", workers={"researcher": "You find facts."}, llm=team_llm, memory=memory)

    first = team.run("Explain why tide pools matter.")
    assert first.memory["record_id"] == "t1"
    [record] = memory.records
    [step] = record.trace.steps
    assert [(n.id, n.role, n.message) for n in step.nodes] == [
        ("supervisor-0", "supervisor", "researcher"),
        ("researcher-0", "researcher", "Tide pools shelter anemones."),
        ("supervisor-1", "supervisor", "FINISH"),
    ]
    assert step.edges == [("researcher-0", "supervisor-1", "spatial")]
    assert record.trajectory == "> researcher -> FINISH\nTide pools shelter anemones.\n"

    second = team.run("Explain why rock pools matter.")
    assert (second.memory["record_id"], second.memory["memory_size"]) == ("t2", 2)
    # every agent of the second task read the first one as its own past success
    success = "## Your Own Past Successes\n### Success 1\nTask: Explain why tide pools matter.\nKey steps:\n"
    prompts_seen = [call.messages[0].content for call in team_llm.calls[3:]]
    assert len(prompts_seen) == 3 and all(success in text for text in prompts_seen)


def test_a_team_task_that_fails_mid_way_leaves_gmemory_ready_for_the_next(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    memory = GMemory(alice, FunctionLLM(memory_answer), name="research")
    # the worker's model call finds the script empty: the task raises between on_task_start and on_task_end
    team_llm = ScriptedLLM(["researcher"])
    team = Supervisor(alice, team="research", workers={"researcher": "You find facts."}, llm=team_llm, memory=memory)
    try:
        team.run("Explain why tide pools matter.")
    except Exception as exc:
        assert "no reply queued" in str(exc)
    else:
        raise AssertionError("the team should have failed")
    assert not memory.running and memory.records == []
    team_llm.enqueue("researcher", "Tide pools shelter anemones.", "FINISH")
    assert team.run("Explain why tide pools matter.").memory["record_id"] == "t1"
