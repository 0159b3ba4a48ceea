"""GMemory end to end on a real home: the team hooks, retrieval, triggers, persistence, atomic failures, plugin."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from memos import MemOS
from memos.errors import BackendError, PermissionDenied, UserError
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM, ScriptedLLM
from memos.plugins.gmemory import GMemory, prompts
from memos.plugins.gmemory import state as state_file
from memos.registry import Registry

ROLES = ["solver", "critic"]
SUCCESS_RULE = "Prepare every tool before starting, because missing tools stop the work."
SECOND_RULE = "Confirm the goal state at the end, because small mismatches fail a task."
COMPARE_RULE = "Check that each step worked, because unchecked steps hide failures."


def _section(text: str, heading: str) -> str:
    """The paragraph under a heading of a prompt."""
    return text.split(heading, 1)[1].strip().split("\n\n", 1)[0] if heading in text else ""


def answer(messages: list[Message], tools: list[ToolSchema]) -> str:
    """A deterministic stand-in for the model, answering each G-Memory prompt by its system prompt."""
    system, user = messages[0].content, messages[-1].content
    if system == prompts.KEY_STEPS_SYSTEM:
        actions = re.findall(r"^> (.*)$", user, flags=re.MULTILINE)
        return "\n".join(f"{i}. {a}" for i, a in enumerate(actions, 1))
    if system == prompts.FAIL_REASON_SYSTEM:
        return "The water never boiled."
    if system == prompts.RELEVANCE_SYSTEM:
        case = _section(user, "## Successful case")
        return "Score: 9" if "tea" in case else "Score: 2"
    if system.startswith(prompts.COMPARE_SYSTEM):
        return f"ADD: {COMPARE_RULE}"
    if system.startswith(prompts.SUCCESS_SYSTEM):
        rules = _section(user, "## Existing rules")
        if rules == "(none)":
            return f"Sure, here you go:\nADD: {SUCCESS_RULE}"
        first = rules.splitlines()[0].split(". ", 1)[1]
        return f"AGREE 1: {first}\nADD: {SECOND_RULE}"
    if system == prompts.MERGE_SYSTEM:
        return "1. Work carefully and check the result, because care prevents failure."
    if system == prompts.PROJECT_SYSTEM:
        role = _section(user, "## Role")
        return f"1. As the {role}, check your own part, because each role owns its output."
    raise AssertionError(f"unexpected prompt: {system[:60]!r}")


def run_task(memory: GMemory, task: str, success: bool, *, bad_step: bool = False) -> dict:
    """One task through the three hooks: two agents, one or two steps."""
    memory.on_task_start(task, ROLES)
    memory.on_agent_message("solver", f"I will start on: {task}", role="solver")
    memory.on_agent_message(
        "critic",
        "Go ahead.",
        role="critic",
        upstream=["solver"],
        action="fill kettle",
        observation="It is full.",
        reward=0,
    )
    if bad_step:
        memory.on_agent_message("solver", "Try the window.", role="solver", action="open window", reward=-1)
    memory.on_agent_message("solver", "Switching on.", role="solver", action="switch on", observation="It boils.")
    return memory.on_task_end(success)


@pytest.fixture
def llm() -> FunctionLLM:
    return FunctionLLM(answer)


def test_hook_sequence_end_to_end(mos: MemOS, llm: FunctionLLM) -> None:
    memory = GMemory(mos.as_user("team"), llm, name="house")
    # an empty memory has nothing to give and asks the model nothing
    assert memory.on_task_start("boil water for tea", ROLES) == {"solver": "", "critic": ""}
    memory.on_agent_message("solver", "Fill the kettle.", role="solver")
    memory.on_agent_message(
        "critic", "Yes.", role="critic", upstream=["solver"], action="fill kettle", observation="It is full.", reward=0
    )
    memory.on_agent_message("solver", "Oops.", role="solver", action="open window", observation="Cold.", reward=-1)
    memory.on_agent_message(
        "solver", "On.", role="solver", upstream=["critic"], action="switch on", observation="It boils."
    )
    report = memory.on_task_end(True)
    assert report == {
        "record_id": "t1",
        "success": True,
        "steps": 3,
        "steps_kept": 2,
        "links": [],
        "insights_credited": [],
        "insight_delta": 1,
        "insights_deleted": [],
        "memory_size": 1,
        "cube_id": None,
        "finetune": None,
        "merge": None,
    }
    [record] = memory.records
    assert record.trajectory == "> fill kettle\nIt is full.\n> switch on\nIt boils.\n"
    assert record.key_steps == "1. fill kettle\n2. switch on"
    assert (record.success, record.fail_reason, record.created) == (True, "", "2024-01-01T00:00:00+00:00")
    assert [n.id for n in record.trace.steps[0].nodes] == ["solver-0", "critic-0"]
    assert [c.kwargs["temperature"] for c in llm.calls] == [0.1]

    # a failure: its reason comes from the model; the first task is its only candidate (no scoring call)
    texts = memory.on_task_start("boil water for coffee", ROLES)
    assert (
        texts["solver"]
        == texts["critic"]
        == (
            "## Your Own Past Successes\n### Success 1\nTask: boil water for tea\n"
            "Key steps:\n1. fill kettle\n2. switch on\nTrajectory:\n> fill kettle\nIt is full.\n> switch on\nIt boils."
        )
    )
    memory.on_agent_message("solver", "Wait.", role="solver", action="wait", observation="Nothing happens.")
    report = memory.on_task_end(False)
    assert (report["record_id"], report["memory_size"]) == ("t2", 2)
    assert memory.records[1].fail_reason == "The water never boiled."
    assert memory.usage.calls == {"key_steps": 2, "fail_reason": 1}
    assert not memory.running


def test_retrieval_scores_candidates_and_votes_insights(mos: MemOS, llm: FunctionLLM) -> None:
    memory = GMemory(mos, llm, name="votes")
    for task in ("boil water for tea", "boil water for soup", "boil water for rice"):
        run_task(memory, task, True)
    # two candidates for k_s=1: the model prefers the tea case (9) over the closest one by cosine (2)
    before = memory.usage.calls["relevance"]
    found = memory.retrieve_memory("boil water for soup and tea")
    assert found.candidates == ["t2", "t1"]  # soup first by cosine
    assert found.relevance == {"t2": 2, "t1": 9}
    assert [r.task for r in found.successes] == ["boil water for tea"]
    assert memory.usage.calls["relevance"] - before == 2
    # insights vote: rules supported by the nearest tasks, most votes first
    memory.insights.new_rule(SUCCESS_RULE, ["t1", "t2", "t3"])  # r1: 3 votes
    memory.insights.new_rule(SECOND_RULE, ["t2"], score=7)  # r2: 1 vote
    memory.insights.new_rule(COMPARE_RULE, ["t9"])  # r3: no vote
    found = memory.retrieve_memory("boil water for soup", k_i=3)
    assert [r.id for r in found.insights] == ["r1", "r2"]
    assert found.votes == {"r1": 3, "r2": 1}
    assert found.render().endswith(f"## Key Insights\n1. {SUCCESS_RULE}\n2. {SECOND_RULE}")
    assert [r.id for r in memory.retrieve_memory("boil water for soup", k_i=1).insights] == ["r1"]
    # projection: one call per role, the role's own version of the insights
    projected = memory.retrieve_memory("boil water for soup", k_s=0, roles=ROLES, project=True)
    assert projected.role_insights == {
        "solver": ["As the solver, check your own part, because each role owns its output."],
        "critic": ["As the critic, check your own part, because each role owns its output."],
    }
    assert projected.render("critic") == (
        "## Key Insights\n1. As the critic, check your own part, because each role owns its output."
    )


def test_insights_given_are_credited_after_the_task(mos: MemOS, llm: FunctionLLM) -> None:
    memory = GMemory(mos, llm, name="credit", k_i=2)
    run_task(memory, "boil water for tea", True)
    memory.insights.new_rule(SUCCESS_RULE, ["t1"], score=2)  # r1
    memory.insights.new_rule(SECOND_RULE, ["t1"], score=5)  # r2
    report = run_task(memory, "boil water for soup", True)
    assert (report["insights_credited"], report["insight_delta"]) == (["r2", "r1"], 1)
    assert [(r.id, r.score) for r in memory.insights.rules] == [("r1", 3), ("r2", 6)]
    report = run_task(memory, "boil water for rice", False)
    assert (report["insights_credited"], report["insight_delta"], report["insights_deleted"]) == (["r2", "r1"], -2, [])
    assert [(r.id, r.score) for r in memory.insights.rules] == [("r1", 1), ("r2", 4)]
    report = run_task(memory, "boil water for pasta", False)
    assert report["insights_deleted"] == ["r1"]
    assert [(r.id, r.score) for r in memory.insights.rules] == [("r2", 2)]


def test_finetune_exactly_every_five_and_merge_at_twenty(mos: MemOS, llm: FunctionLLM) -> None:
    memory = GMemory(mos, llm, name="triggers")
    due = {}
    for n in range(1, 21):
        report = run_task(memory, f"boil water for dish number {n}", success=n % 3 != 0)
        due[n] = [kind for kind in ("finetune", "merge") if report[kind] is not None]
        if n == 5:
            first = report["finetune"]
    assert {n: kinds for n, kinds in due.items() if kinds} == {
        5: ["finetune"],
        10: ["finetune"],
        15: ["finetune"],
        20: ["finetune", "merge"],
    }
    # the first finetune: 5 rounds (tasks sampled with the seeded RNG), each with a (success, failure)
    # pair (task 3 is the only failure) and one chunk of successes: 10 calls
    assert first["kind"] == "finetune"
    assert first["detail"] == ["t4", "t1", "t3", "t1", "t4"]
    assert first["llm_calls"] == 10
    agree = f"AGREE 1: {SUCCESS_RULE}"
    assert first["applied"] == [
        [f"ADD: {COMPARE_RULE}", "r1"],
        [f"ADD: {SUCCESS_RULE}", "r2"],
        [agree, "r2"],
        [f"ADD: {SECOND_RULE}", "r3"],
        [agree, "r2"],
        [agree, "r2"],
        [agree, "r2"],
    ]
    assert first["rejected"][:2] == [
        ["Sure, here you go:", "not an operation (ADD, AGREE n, EDIT n or REMOVE n)"],
        [f"ADD: {COMPARE_RULE}", "duplicate of r1"],
    ]
    assert len(first["rejected"]) == 8
    # the hashing embedder puts these 20 near-identical tasks in one cluster: one merge call, and
    # its merged rule replaces every rule, at score 2, supported by the cluster's tasks
    assert report["merge"] == {
        "kind": "merge",
        "llm_calls": 1,
        "applied": [["0", "r6"]],
        "rejected": [],
        "deleted": ["r2", "r4", "r5"],
        "detail": [20],
    }
    [merged] = memory.insights.rules
    assert (merged.id, merged.rule, merged.score) == (
        "r6",
        "Work carefully and check the result, because care prevents failure.",
        2,
    )
    assert merged.positive_tasks == [f"t{n}" for n in range(1, 21)]
    assert memory.usage.calls == {"key_steps": 20, "relevance": 36, "fail_reason": 6, "finetune": 48, "merge": 1}


def test_state_round_trips_exactly(mos: MemOS, llm: FunctionLLM, home: Path) -> None:
    memory = GMemory(mos, llm, name="keep")
    for n in range(1, 7):
        run_task(memory, f"boil water for meal {n}", success=n != 4, bad_step=n == 2)
    assert (home / "gmemory" / "keep" / "state.json").is_file()
    again = GMemory(mos, llm, name="keep")
    assert again.to_dict() == memory.to_dict()
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in memory.records]
    assert again.records[1].trace == memory.records[1].trace
    assert again.store.graph == memory.store.graph
    assert again.insights == memory.insights
    assert (
        again.retrieve_memory("boil water for meal 3").render()
        == memory.retrieve_memory("boil water for meal 3").render()
    )
    # ids go on where they stopped
    assert run_task(again, "boil water for meal 7", True)["record_id"] == "t7"
    # another memory name is another memory
    assert GMemory(mos, llm, name="other").size == 0


def test_state_problems_are_clear_errors(mos: MemOS, llm: FunctionLLM, home: Path) -> None:
    memory = GMemory(mos, llm, name="bad")
    run_task(memory, "boil water for tea", True)
    path = home / "gmemory" / "bad" / "state.json"
    with pytest.raises(UserError, match="link_k=10"):
        GMemory(mos, llm, name="bad", link_k=3)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "embedder": "other-model"}))
    with pytest.raises(UserError, match="built with the embedder 'other-model'"):
        GMemory(mos, llm, name="bad")
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        GMemory(mos, llm, name="bad")
    with pytest.raises(UserError, match="G-Memory name"):
        GMemory(mos, llm, name="../escape")
    with pytest.raises(UserError, match="k_s must be an integer"):
        GMemory(mos, llm, name="fine", k_s=-1)
    with pytest.raises(UserError, match="threshold is a cosine"):
        GMemory(mos, llm, name="fine", threshold=2)
    with pytest.raises(UserError, match="thr is a cosine"):
        GMemory(mos, llm, name="fine").retrieve_memory("task", thr="high")  # type: ignore[arg-type]


def test_hooks_refuse_bad_calls(mos: MemOS, llm: FunctionLLM) -> None:
    memory = GMemory(mos, llm, name="calls")
    with pytest.raises(UserError, match="on_task_start"):
        memory.on_agent_message("solver", "hi")
    with pytest.raises(UserError, match="on_task_start"):
        memory.on_task_end(True)
    with pytest.raises(UserError, match="roles must be a list"):
        memory.on_task_start("task", "solver")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="non-empty text"):
        memory.on_task_start("  ", ROLES)
    memory.on_task_start("boil water", ROLES)
    with pytest.raises(UserError, match="still running"):
        memory.on_task_start("another", ROLES)
    with pytest.raises(UserError, match="pass action="):
        memory.on_agent_message("solver", "hi", observation="seen")
    with pytest.raises(UserError, match="True or False"):
        memory.on_task_end(1)  # type: ignore[arg-type]
    assert memory.abandon() is True
    assert memory.abandon() is False
    assert memory.size == 0


def test_a_failing_model_stores_nothing_and_the_task_stays_open(mos: MemOS, home: Path) -> None:
    calls = {"n": 0}

    def flaky(messages: list[Message], tools: list[ToolSchema]) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BackendError("model server unreachable")
        return answer(messages, tools)

    memory = GMemory(mos, FunctionLLM(flaky), name="flaky")
    memory.on_task_start("boil water for tea", ROLES)
    memory.on_agent_message("solver", "Go.", action="switch on", observation="It boils.")
    with pytest.raises(BackendError, match="unreachable"):
        memory.on_task_end(True)
    assert (memory.size, memory.running) == (0, True)
    assert not (home / "gmemory" / "flaky" / "state.json").exists()
    assert memory.on_task_end(True)["record_id"] == "t1"


def test_a_failing_save_leaves_state_as_it_was(mos: MemOS, llm: FunctionLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = GMemory(mos, llm, name="disk")
    run_task(memory, "boil water for tea", True)
    memory.insights.new_rule(SUCCESS_RULE, ["t1"])
    memory._save()
    before_file = (memory.folder / "state.json").read_bytes()
    before = memory.to_dict()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    memory.on_task_start("boil water for soup", ROLES)
    memory.on_agent_message("solver", "Go.", action="switch on", observation="It boils.")
    monkeypatch.setattr(state_file.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        memory.on_task_end(False)
    assert memory.to_dict() == before  # the insight credit was undone too
    assert (memory.folder / "state.json").read_bytes() == before_file
    assert sorted(p.name for p in memory.folder.iterdir()) == [".lock", "state.json"]  # no temporary file left
    assert memory.running
    monkeypatch.undo()
    assert memory.on_task_end(False)["record_id"] == "t2"


def test_a_failing_model_during_evolution_keeps_the_record(mos: MemOS) -> None:
    def no_finetune(messages: list[Message], tools: list[ToolSchema]) -> str:
        if messages[0].content.startswith((prompts.COMPARE_SYSTEM, prompts.SUCCESS_SYSTEM)):
            raise BackendError("model server unreachable")
        return answer(messages, tools)

    memory = GMemory(mos, FunctionLLM(no_finetune), name="evolve")
    for n in range(1, 6):
        report = run_task(memory, f"boil water for dish {n}", True)
    assert report["finetune"] == {"kind": "finetune", "error": "model server unreachable"}
    assert (memory.size, len(memory.insights)) == (5, 0)
    assert GMemory(mos, FunctionLLM(answer), name="evolve").size == 5


def test_without_a_model_it_falls_back_and_never_evolves(mos: MemOS) -> None:
    assert mos.llm is None
    memory = GMemory(mos, name="plain")
    for n in range(1, 6):
        report = run_task(memory, f"boil water for dish {n}", success=n != 2, bad_step=True)
    assert report["finetune"] == {
        "kind": "finetune",
        "skipped": "no LLM: pass llm= or set MEMOS_LLM to evolve insights",
    }
    assert memory.records[0].key_steps == "fill kettle\nswitch on"
    assert memory.records[1].fail_reason == "The task was not completed; the last observation was: It boils."
    assert memory.usage.total_calls == 0
    found = memory.retrieve_memory("boil water for dish 3", k_s=2)
    assert len(found.successes) == 2 and found.relevance == {}


def test_records_can_also_be_cubes_in_a_team_namespace(mos: MemOS, llm: FunctionLLM) -> None:
    team = mos.as_user("team")
    memory = GMemory(team, llm, name="cubes", namespace="team/gmemory")
    report = run_task(memory, "boil water for tea", False)
    cube = team.get(report["cube_id"])
    assert cube.text == (
        "Task: boil water for tea\nOutcome: failure\nKey steps:\n1. fill kettle\n2. switch on\n"
        "Trajectory:\n> fill kettle\nIt is full.\n> switch on\nIt boils.\n\nWhy it failed: The water never boiled."
    )
    assert cube.header.labels == {"type": "gmemory-task", "gmemory": "cubes", "label": "failure"}
    assert memory.records[0].cube_id == cube.id
    assert [a["action"] for a in team.audit(cube.id)] == ["write"]
    with pytest.raises(UserError, match="needs a user"):
        GMemory(mos, llm, name="cubes2", namespace="team/gmemory")
    with pytest.raises(PermissionDenied):
        GMemory(mos.as_user("mallory"), llm, name="cubes3", namespace="team/gmemory")


def test_registered_as_an_agent_factory(mos: MemOS) -> None:
    entry = metadata.EntryPoint(name="gmemory", value="memos.plugins.gmemory.plugin", group="memos.plugins")
    registry = Registry(entry_points=[entry])
    factory = registry.agents["gmemory"]
    llm = ScriptedLLM()
    memory = factory(mos.as_user("team"), llm=llm, name="plugged", k_i=5)
    assert isinstance(memory, GMemory)
    assert (memory.name, memory.k_i, memory.llm) == ("plugged", 5, llm)
    assert registry.plugins[0].names() == {"agents": ["gmemory"]}
