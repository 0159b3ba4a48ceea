"""Supervisor and pipeline teams end to end: routing, namespaces written, TeamMemory hooks, judges, tokens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any

import pytest
from support.fake_openai import FakeOpenAIServer

from memos import MemOS, Session
from memos.agents.pipeline import Pipeline
from memos.agents.team import FINISH, LLMJudge, Supervisor, TeamMemory, TeamMessage, parse_route
from memos.errors import PermissionDenied, UserError
from memos.llm.base import Completion, Usage
from memos.llm.openai import OpenAIChat
from memos.llm.testing import ScriptedLLM
from memos.registry import Registry

TEAM = ("alice", "teams", "research")
WORKERS = {"researcher": "You find facts. Be precise.", "writer": "You write a short answer from the facts."}
TASK = "Explain why tide pools matter."
FACTS = "Tide pools shelter anemones. They are flooded twice a day."
ANSWER = "Tide pools are sheltered homes for anemones."
ROUTE = "researcher -> writer -> FINISH"


class RecordingMemory:
    """A TeamMemory that records every hook call and hands out fixed insights."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_task_start(self, task: str, roles: Sequence[str]) -> dict[str, str]:
        self.calls.append(("start", task, tuple(roles)))
        return {"researcher": "Insight: cite where each fact comes from.", "ghost": "not a role of this team"}

    def on_agent_message(
        self,
        agent: str,
        message: str,
        *,
        role: str | None = None,
        upstream: Sequence[str] = (),
        action: str | None = None,
        observation: str | None = None,
        reward: float | None = None,
    ) -> None:
        self.calls.append(("message", agent, message, role, tuple(upstream), action, observation, reward))

    def on_task_end(self, success: bool) -> dict[str, Any]:
        self.calls.append(("end", success))
        return {"stored": 1}


@pytest.fixture
def alice(mos: MemOS) -> Session:
    return mos.as_user("alice")


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started fake OpenAI-compatible server on 127.0.0.1."""
    with FakeOpenAIServer() as server:
        yield server


def used(text: str, prompt: int, completion: int) -> Completion:
    """A reply that reports token usage."""
    return Completion(text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=completion))


def texts(session: Session, namespace: tuple[str, ...]) -> list[str]:
    """The texts of the cubes stored exactly in a namespace (not below it), oldest first."""
    return [c.text for c in session.list(namespace) if c.namespace == namespace]


def test_supervisor_routes_writes_namespaces_and_calls_the_hooks_in_order(alice: Session) -> None:
    llm = ScriptedLLM(
        [
            used("researcher", 40, 1),
            used(FACTS, 60, 12),
            used("writer", 80, 1),
            used(ANSWER, 90, 9),
            used("FINISH", 100, 1),
        ]
    )
    memory = RecordingMemory()
    team = Supervisor(alice, team="research", workers=WORKERS, llm=llm, memory=memory)

    result = team.run(TASK)

    assert (result.output, result.success, result.stopped) == (ANSWER, True, "finished")
    assert result.messages == [
        TeamMessage("supervisor", "researcher", (), "researcher"),
        TeamMessage("researcher", FACTS, ()),
        TeamMessage("supervisor", "writer", ("researcher",), "writer"),
        TeamMessage("writer", ANSWER, ("researcher",)),
        TeamMessage("supervisor", "FINISH", ("researcher", "writer"), FINISH),
    ]
    assert (result.tokens.prompt, result.tokens.completion, result.tokens.calls) == (370, 24, 5)
    assert result.memory == {"stored": 1}
    assert memory.calls == [
        ("start", TASK, ("supervisor", "researcher", "writer")),
        ("message", "supervisor", "researcher", "supervisor", (), None, None, None),
        ("message", "researcher", FACTS, "researcher", (), None, None, None),
        ("message", "supervisor", "writer", "supervisor", ("researcher",), None, None, None),
        ("message", "writer", ANSWER, "writer", ("researcher",), None, None, None),
        ("message", "supervisor", "FINISH", "supervisor", ("researcher", "writer"), ROUTE, ANSWER, None),
        ("end", True),
    ]
    # each agent's output in its own namespace; summaries and the result in the team's
    assert texts(alice, (*TEAM, "researcher")) == [FACTS]
    assert texts(alice, (*TEAM, "writer")) == [ANSWER]
    assert texts(alice, TEAM) == [
        "researcher: Tide pools shelter anemones. They are flooded twice a day.",
        f"writer: {ANSWER}",
        f"Task: {TASK}\nResult: {ANSWER}",
    ]
    assert texts(alice, (*TEAM, "supervisor")) == [
        f"Task: {TASK}\nRoute: researcher -> writer -> FINISH\nSuccess: true"
    ]
    [result_cube] = [c for c in alice.list(TEAM) if c.header.labels.get("entry") == "result"]
    assert result_cube.header.labels == {"team": "research", "scope": "team", "entry": "result", "success": "true"}
    assert result_cube.level.value == "long"
    # the researcher's prompt has its role, its insight, and the outputs it read; the writer's has the facts
    researcher_system, researcher_user = llm.calls[1].messages
    assert researcher_system.content.startswith("You find facts. Be precise.")
    assert "## Insights for your role\nInsight: cite where each fact comes from." in researcher_system.content
    assert researcher_user.content == f"Task: {TASK}\n\nDo your part of the task now."
    assert f"## Output of researcher\n{FACTS}" in llm.calls[3].messages[1].content
    assert "Insight" not in llm.calls[3].messages[0].content
    assert "- researcher: You find facts." in llm.calls[0].messages[0].content


def test_a_later_task_recalls_the_agents_and_the_teams_memories(alice: Session) -> None:
    llm = ScriptedLLM(["researcher", FACTS, "writer", ANSWER, "FINISH", "researcher", "More facts.", "FINISH"])
    team = Supervisor(alice, team="research", workers=WORKERS, llm=llm)
    team.run(TASK)

    second = team.run("Why do tide pools shelter anemones?")

    system = llm.calls[6].messages[0].content
    assert f"## Your memories\n- {FACTS}" in system
    team_part = system.split("## Team memories\n", 1)[1]
    assert "- researcher: Tide pools shelter anemones." in team_part
    assert f"Result: {ANSWER}" in team_part
    assert second.output == "More facts."


def test_an_unreadable_route_is_retried_once(alice: Session) -> None:
    llm = ScriptedLLM(["Let me think.", " `Researcher`. ", FACTS, "finish"])
    memory = RecordingMemory()

    result = Supervisor(alice, team="research", workers=WORKERS, llm=llm, memory=memory).run(TASK)

    assert (result.output, result.stopped, result.success) == (FACTS, "finished", True)
    retry = llm.calls[1].messages
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[-1].content.startswith("'Let me think.' is not one of researcher, writer or FINISH.")
    assert [c[1] for c in memory.calls if c[0] == "message"] == ["supervisor", "researcher", "supervisor"]


def test_two_unreadable_routes_stop_the_team(alice: Session) -> None:
    memory = RecordingMemory()
    llm = ScriptedLLM(["researcher", FACTS, "the editor", "the editor, please"])

    result = Supervisor(alice, team="research", workers=WORKERS, llm=llm, memory=memory).run(TASK)

    assert (result.stopped, result.success, result.output) == ("bad_route", False, FACTS)
    assert result.reason == (
        "the supervisor answered 'the editor, please' twice instead of one of researcher, writer or FINISH"
    )
    assert memory.calls[-2:] == [
        (
            "message",
            "supervisor",
            "the editor, please",
            "supervisor",
            ("researcher",),
            "researcher -> STOP (no valid route)",
            FACTS,
            None,
        ),
        ("end", False),
    ]
    assert len(llm.calls) == 4
    assert f"Result: {FACTS}" in texts(alice, TEAM)[-1]


def test_max_rounds_stops_a_supervisor_that_never_finishes(alice: Session) -> None:
    llm = ScriptedLLM(["researcher", "one", "researcher", "two", "writer"])

    memory = RecordingMemory()

    result = Supervisor(alice, team="research", workers=WORKERS, llm=llm, max_rounds=2, memory=memory).run(TASK)

    assert (result.stopped, result.success, result.output) == ("max_rounds", False, "two")
    assert result.reason == "max_rounds: 2 worker turns done and the supervisor still asked for writer"
    assert [m.agent for m in result.messages if m.action is None] == ["researcher", "researcher"]
    # the second researcher turn read its own first output
    assert result.messages[3].upstream == ("researcher",)
    closing = memory.calls[-2]
    assert closing[1:3] == ("supervisor", "writer")
    assert closing[5:7] == ("researcher -> researcher -> STOP (max_rounds)", "two")


def test_a_judge_decides_success_and_the_memory_learns_it(alice: Session) -> None:
    seen: list[tuple[str, str]] = []

    def judge(task: str, output: str) -> bool:
        seen.append((task, output))
        return "anemones" not in output

    memory = RecordingMemory()
    llm = ScriptedLLM(["researcher", FACTS, FINISH])
    result = Supervisor(alice, team="research", workers=WORKERS, llm=llm, memory=memory, judge=judge).run(TASK)

    assert seen == [(TASK, FACTS)]
    assert result.success is False and memory.calls[-1] == ("end", False)
    [cube] = [c for c in alice.list(TEAM) if c.header.labels.get("entry") == "result"]
    assert cube.header.labels["success"] == "false"


def test_an_llm_judge_counts_its_tokens(alice: Session) -> None:
    judge_llm = ScriptedLLM([used("YES, it does.", 30, 3), used("no", 30, 1)])
    judge = LLMJudge(judge_llm)
    llm = ScriptedLLM(["writer", ANSWER, FINISH, "writer", "", FINISH])
    team = Supervisor(alice, team="research", workers=WORKERS, llm=llm, judge=judge)

    good = team.run(TASK)
    bad = team.run(TASK)

    assert (good.success, bad.success) == (True, False)
    assert (good.tokens.prompt, good.tokens.completion, good.tokens.calls) == (30, 3, 4)
    assert judge_llm.calls[0].messages[0].content.startswith(f"Task:\n{TASK}\n\nOutput:\n{ANSWER}")
    assert judge_llm.calls[1].messages[0].content.endswith("Answer with exactly one word: YES or NO.")


def test_each_agent_may_have_its_own_llm(alice: Session) -> None:
    boss = ScriptedLLM(["writer", FINISH])
    writer = ScriptedLLM([ANSWER])
    researcher = ScriptedLLM()

    result = Supervisor(
        alice,
        team="research",
        workers=WORKERS,
        llm={"supervisor": boss, "writer": writer, "researcher": researcher},
    ).run(TASK)

    assert result.output == ANSWER
    assert (len(boss.calls), len(writer.calls), len(researcher.calls)) == (2, 1, 0)


def test_workers_may_take_any_valid_name(alice: Session) -> None:
    llm = ScriptedLLM(["end", "ended", "start", "started", "finish."])
    workers = {"end": "You end things.", "start": "You start things."}

    result = Supervisor(alice, team="odd.names", workers=workers, llm=llm).run(TASK)

    assert [m.agent for m in result.messages if m.action is None] == ["end", "start"]
    assert (result.output, result.stopped) == ("started", "finished")
    assert texts(alice, ("alice", "teams", "odd.names", "end")) == ["ended"]


def test_pipeline_runs_in_order_each_reading_the_previous_output(alice: Session) -> None:
    llm = ScriptedLLM([used("1. anemones 2. tides", 20, 5), used("Draft about anemones.", 30, 6), "Final post."])
    memory = RecordingMemory()
    agents = [("planner", "You plan."), ("writer", "You write."), ("editor", "You edit.")]

    result = Pipeline(alice, team="blog", agents=agents, llm=llm, memory=memory).run(TASK)

    assert (result.output, result.stopped, result.success) == ("Final post.", "finished", True)
    assert [(m.agent, m.upstream) for m in result.messages] == [
        ("planner", ()),
        ("writer", ("planner",)),
        ("editor", ("writer",)),
    ]
    assert (result.tokens.prompt, result.tokens.completion, result.tokens.calls) == (50, 11, 3)
    assert memory.calls == [
        ("start", TASK, ("planner", "writer", "editor")),
        ("message", "planner", "1. anemones 2. tides", "planner", (), None, None, None),
        ("message", "writer", "Draft about anemones.", "writer", ("planner",), None, None, None),
        ("message", "editor", "Final post.", "editor", ("writer",), "planner -> writer -> editor", "Final post.", None),
        ("end", True),
    ]
    editor_prompt = llm.calls[2].messages[1].content
    assert "## Output of writer\nDraft about anemones." in editor_prompt
    assert "## Output of planner" not in editor_prompt
    blog = ("alice", "teams", "blog")
    assert texts(alice, (*blog, "planner")) == ["1. anemones 2. tides"]
    assert texts(alice, (*blog, "editor")) == ["Final post."]
    assert texts(alice, blog)[-1] == f"Task: {TASK}\nResult: Final post."
    assert len(texts(alice, blog)) == 4


def test_teams_against_an_openai_compatible_server(alice: Session, openai_server: FakeOpenAIServer) -> None:
    for text, prompt, completion in [
        ("researcher", 50, 1),
        (FACTS, 70, 14),
        ("FINISH", 90, 1),
        ("Plan: two facts.", 30, 4),
        (ANSWER, 40, 9),
    ]:
        openai_server.enqueue_chat(text, usage={"prompt_tokens": prompt, "completion_tokens": completion})
    llm = OpenAIChat("fake-model", base_url=openai_server.url, api_key="sk-test", timeout_s=5, max_retries=0)
    workers = {"researcher": WORKERS["researcher"]}

    supervised = Supervisor(alice, team="research", workers=workers, llm=llm).run(TASK)
    piped = Pipeline(alice, team="blog", agents=[("planner", "You plan."), ("writer", "You write.")], llm=llm).run(TASK)

    assert (supervised.output, supervised.success) == (FACTS, True)
    assert (supervised.tokens.prompt, supervised.tokens.completion) == (210, 16)
    assert (piped.output, piped.tokens.prompt, piped.tokens.completion) == (ANSWER, 70, 13)
    bodies = [r.json for r in openai_server.requests]
    assert len(bodies) == 5 and all("tools" not in body for body in bodies)
    assert bodies[1]["messages"][0]["role"] == "system"
    assert bodies[1]["messages"][0]["content"].startswith("You find facts.")
    assert f"[researcher]\n{FACTS}" in bodies[2]["messages"][1]["content"]
    assert "## Output of planner\nPlan: two facts." in bodies[4]["messages"][1]["content"]
    assert texts(alice, (*TEAM, "researcher")) == [FACTS]
    assert texts(alice, ("alice", "teams", "blog", "writer")) == [ANSWER]


def test_parse_route_is_strict() -> None:
    workers = ["researcher", "writer"]
    assert parse_route("researcher", workers) == "researcher"
    assert parse_route("  **Writer.**\n", workers) == "writer"
    assert parse_route('"finish"', workers) == FINISH
    assert parse_route("researcher, then writer", workers) is None
    assert parse_route("I pick the researcher", workers) is None
    assert parse_route("", workers) is None


def test_bad_team_configuration_raises_user_error(mos: MemOS, alice: Session) -> None:
    llm = ScriptedLLM()
    with pytest.raises(UserError, match="needs workers"):
        Supervisor(alice, team="t", workers={}, llm=llm)
    with pytest.raises(UserError, match="cannot be named 'supervisor'"):
        Supervisor(alice, team="t", workers={"supervisor": "x"}, llm=llm)
    with pytest.raises(UserError, match="invalid worker name 'two words'"):
        Supervisor(alice, team="t", workers={"two words": "x"}, llm=llm)
    with pytest.raises(UserError, match="needs a role prompt"):
        Supervisor(alice, team="t", workers={"a": " "}, llm=llm)
    with pytest.raises(UserError, match="max_rounds must be an integer from 1 to 50"):
        Supervisor(alice, team="t", workers=WORKERS, llm=llm, max_rounds=0)
    with pytest.raises(UserError, match="invalid team name 'a/b'"):
        Supervisor(alice, team="a/b", workers=WORKERS, llm=llm)
    with pytest.raises(UserError, match="llm names agents this team lacks: critic"):
        Supervisor(alice, team="t", workers=WORKERS, llm={"critic": llm})
    with pytest.raises(UserError, match="needs an LLM"):
        Supervisor(alice, team="t", workers=WORKERS)
    with pytest.raises(UserError, match="memory must implement on_task_start"):
        Supervisor(alice, team="t", workers=WORKERS, llm=llm, memory=object())  # type: ignore[arg-type]
    with pytest.raises(UserError, match="appears twice in the pipeline"):
        Pipeline(alice, team="t", agents=[("a", "x"), ("A", "y")], llm=llm)
    with pytest.raises(UserError, match="must be a \\(name, role prompt\\) pair"):
        Pipeline(alice, team="t", agents=[("a", "x", "extra")], llm=llm)  # type: ignore[list-item]
    with pytest.raises(UserError, match="a pipeline needs agents"):
        Pipeline(alice, team="t", agents={"a": "x"}, llm=llm)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="the task is empty"):
        Pipeline(alice, team="t", agents=[("a", "x")], llm=llm).run(" ")
    # another user's teams are refused before any model call
    with pytest.raises(PermissionDenied, match="bob may not write alice/teams/t"):
        Supervisor(mos.as_user("bob"), team="t", workers=WORKERS, llm=llm, owner="alice")
    assert llm.calls == []


def test_a_bad_memory_answer_is_refused(alice: Session) -> None:
    class Broken(RecordingMemory):
        def on_task_start(self, task: str, roles: Sequence[str]) -> dict[str, str]:
            return {"researcher": 3}  # type: ignore[dict-item]

    assert isinstance(Broken(), TeamMemory)
    llm = ScriptedLLM()
    with pytest.raises(UserError, match="on_task_start must return a dict of role name -> prompt text"):
        Supervisor(alice, team="t", workers=WORKERS, llm=llm, memory=Broken()).run(TASK)
    assert llm.calls == [] and alice.list(("alice",)) == []


def test_the_plugin_hook_registers_both_teams(alice: Session) -> None:
    entry = metadata.EntryPoint(name="teams", value="memos.agents.team", group="memos.plugins")
    registry = Registry(entry_points=[entry])

    assert {"supervisor-team", "pipeline-team"} <= set(registry.agents)
    team = registry.create("agents", "pipeline-team", alice, team="t", agents=[("a", "x")], llm=ScriptedLLM(["ok"]))
    assert isinstance(team, Pipeline) and team.run(TASK).output == "ok"
