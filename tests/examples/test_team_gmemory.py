"""examples/team_gmemory.py runs a supervisor team with G-Memory: tasks stored, insights accumulating."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from memos import MemOS
from memos.plugins.gmemory import GMemory

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "team_gmemory.py"
TEAM = ("alice", "teams", "reef")


def run_example(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the script as `python examples/team_gmemory.py HOME` in this process."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(home)])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_the_team_learns_insights_across_three_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"

    run_example(home, monkeypatch)

    out = capsys.readouterr().out
    assert out.startswith("task 1: Explain why kelp forests matter for sea otters.\n")
    assert out.count("  route: researcher -> writer -> FINISH\n") == 3
    assert "  answer: I cannot answer: there are no facts to go on.\n  success: no\n" in out
    assert "  G-Memory: 1 task(s) stored, 0 insight(s)\n" in out
    assert "  G-Memory: 2 task(s) stored, 2 insight(s)\n" in out
    # the insights learnt from the first two tasks reached the writer's prompt in the third
    assert (
        "  answer: Coral reefs give fish shelter from predators and places to feed. "
        "(Written following 2 team insight(s).)\n  success: yes\n"
    ) in out
    assert out.endswith("insights after each task: 0 -> 2 -> 3\n")

    with MemOS.open(home, embedder="hash") as mos:
        alice = mos.as_user("alice")
        memory = GMemory(alice, name="reef")
        assert [r.success for r in memory.records] == [False, True, True]
        assert (
            memory.records[0].fail_reason == "The researcher found no facts, so the writer had nothing to answer with."
        )
        assert memory.records[1].trajectory == (
            "> researcher -> writer -> FINISH\nTide pools keep anemones, crabs and snails wet between tides.\n"
        )
        rules = {rule.rule: rule.score for rule in memory.insights.rules}
        assert len(rules) == 3
        assert rules["Stop and report missing facts instead of answering, because an answer without facts failed."] == 3
        # the team's own memory: outputs per agent, summaries and results in the team namespace
        results = [c.text for c in alice.list(TEAM) if c.header.labels.get("entry") == "result"]
        assert [r.splitlines()[0] for r in results] == [
            "Task: Explain why kelp forests matter for sea otters.",
            "Task: Explain why tide pools matter for sea life.",
            "Task: Explain why coral reefs matter for fish.",
        ]
        researcher = [c.text for c in alice.list((*TEAM, "researcher"))]
        assert researcher[1:] == [
            "Tide pools keep anemones, crabs and snails wet between tides.",
            "Coral reefs give fish shelter from predators and places to feed.",
        ]


def test_the_example_needs_a_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    with pytest.raises(SystemExit, match=r"usage: python examples/team_gmemory\.py HOME"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
