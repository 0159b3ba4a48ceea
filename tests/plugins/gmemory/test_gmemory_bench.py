"""The G-Memory benchmark script: its task generators, the retrieval run on a tiny home, and the team trials."""

from __future__ import annotations

import sys
from pathlib import Path

from memos import MemOS
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench import gmemory as bench  # noqa: E402


def test_task_sets_are_deterministic_with_known_families() -> None:
    flat, chained = bench.flat_set(0), bench.chained_set(0)
    assert (len(flat.stored), len(flat.queries), len(chained.stored), len(chained.queries)) == (48, 12, 42, 12)
    assert bench.flat_set(0) == flat and bench.chained_set(0) == chained
    assert bench.flat_set(1) != flat
    assert {t.family for t in flat.stored} == set(bench.FLAT_GOALS)
    # no query repeats a stored task
    assert not {q.text for q in flat.queries} & {t.text for t in flat.stored}
    # a chain: (goal 1, setting 1), (goal 1, setting 2), (goal 2, setting 2), ... each shares one half with the next
    heat = [t.text for t in chained.stored if t.family == "heat"]
    goals = bench.CHAIN_GOALS["heat"]
    assert sorted(sum(t.startswith(g) for t in heat) for g in goals) == [1, 2, 2, 2]
    first, last = (q.text for q in chained.queries if q.family == "heat")
    assert first.startswith(goals[0]) and last.startswith(goals[3])
    # the queries are set where another family works
    settings = {
        t.text.removeprefix(g) for t in chained.stored if t.family == "heat" for g in goals if t.text.startswith(g)
    }
    assert first.removeprefix(goals[0]) not in settings


def test_retrieval_run_on_a_tiny_home(mos: MemOS) -> None:
    result = bench.run_retrieval(mos, bench.chained_set(0), 0.7, ks=(1, 3), hops=(1,))
    assert (result.stored, result.queries, result.link_threshold) == (42, 12, 0.7)
    assert 0 <= result.same_family_edges <= result.edges
    one, three = result.cells
    # one seed, ranked first: k=1 is plain search
    assert (one.k, one.plain_p, one.plain_r) == (1, one.hop_p, one.hop_r)
    assert 0.0 <= three.hop_p <= 1.0 and 0.0 <= three.plain_pool_r <= 1.0
    # every stored task went through the hooks, every 4th as a failure
    memory = bench.GMemory(mos, name="bench-chained-0.7")
    assert memory.size == 42
    assert [r.success for r in memory.records[:4]] == [True, True, True, False]


def team_answer(messages: list[Message], tools: list[ToolSchema]) -> str:
    """A stand-in model for the team (supervisor, workers, judge) and for G-Memory's own prompts."""
    user = messages[-1].content
    if "## Work so far" in user:
        work = user.split("## Work so far", 1)[1]
        return "planner" if "(nothing yet)" in work else ("worker" if "[worker]" not in work else "FINISH")
    if "Do your part of the task now." in user:
        return "1. go to the kitchen\n2. do it"
    if "Answer with exactly one word: YES or NO." in user:
        return "YES"
    if "Score: N" in user:
        return "Score: 5"
    return "1. go to the kitchen"


def test_team_trials_and_the_page(mos: MemOS, tmp_path: Path) -> None:
    rows = bench.team_trials(mos.as_user("bench"), FunctionLLM(team_answer), ["heat the soup", "cool the juice"], 2)
    assert [(r.team, r.trial, r.success) for r in rows] == [
        ("no team memory", 1, 1.0),
        ("no team memory", 2, 1.0),
        ("G-Memory", 1, 1.0),
        ("G-Memory", 2, 1.0),
    ]
    assert rows[0].memory_tokens == 0 and rows[2].memory_tokens > 0
    out = tmp_path / "gmemory.md"
    args = ["--embedder", "hash", "--sets", "flat", "--link-thresholds", "0.7", "--out", str(out)]
    page = bench.main([*args, "--workdir", str(tmp_path / "w"), "--trials", "1", "--team-tasks", "2"])
    assert out.read_text() == page
    assert "## flat, link threshold 0.7" in page
    assert "| hop | k | P@k plain | P@k G-Memory |" in page
    assert "Not run" in page  # no model configured
    page = bench.main(
        [*args, "--workdir", str(tmp_path / "w2"), "--trials", "1", "--team-tasks", "2"], llm=FunctionLLM(team_answer)
    )
    assert "| G-Memory | 1 | 100% |" in page
    assert "2 tasks per trial, model function" in page
