"""A supervisor team (researcher + writer) that learns across tasks with G-Memory.

    python examples/team_gmemory.py ./team-home

Three tasks run one after the other. G-Memory hands each agent what it learnt so far (past
successes and numbered insights) at the start of a task, records every message, and after each
task stores it (success or failure, judged by a keyword check) and evolves its insights. The
printout shows the insights accumulating and reaching the agents' prompts.

Everything runs offline: a stand-in model (a FunctionLLM) plays the supervisor, the two workers and
G-Memory's own prompts (key steps, failure reasons, relevance scores, rule operations), and the home
uses the hashing embedder. G-Memory's state lives in the home: run it on a new one to see the
same printout again.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from memos import MemOS
from memos.agents.team import Supervisor, TeamResult
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM
from memos.plugins.gmemory import GMemory
from memos.plugins.gmemory import prompts as gm

TEAM = "reef"
WORKERS = {
    "researcher": "You are the team's researcher: gather the facts the task needs.",
    "writer": "You are the team's writer: answer the task from the researcher's facts.",
}
#: (task, a word a successful answer contains); the researcher knows nothing about kelp, so the first fails
TASKS = [
    ("Explain why kelp forests matter for sea otters.", "urchins"),
    ("Explain why tide pools matter for sea life.", "anemones"),
    ("Explain why coral reefs matter for fish.", "shelter"),
]
#: what the stand-in researcher knows
FACTS = {
    "tide pools": "Tide pools keep anemones, crabs and snails wet between tides.",
    "coral reefs": "Coral reefs give fish shelter from predators and places to feed.",
}
#: the rules the stand-in model proposes: from successful trials, in order, and from a success/failure pair
SUCCESS_RULES = [
    "Let the researcher gather concrete facts before the writer drafts, because answers built on facts succeeded.",
    "Name the animals a habitat shelters, because specific examples made past answers convincing.",
]
FAILURE_RULE = "Stop and report missing facts instead of answering, because an answer without facts failed."


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same level."""
    _, found, rest = text.partition(heading + "\n")
    return rest.split("\n## ", 1)[0].strip() if found else ""


def numbered_items(text: str) -> list[str]:
    """The items of a "1. x" list."""
    return [m.group(1) for line in text.splitlines() if (m := re.match(r"^\d+\.\s+(.*)$", line.strip()))]


class StandIn:
    """The stand-in model: answers each prompt of the team and of G-Memory deterministically.

    Asked to critique successful trials it adds the next of SUCCESS_RULES; asked to compare a success
    with a failure it adds FAILURE_RULE. Each rule is proposed once.
    """

    def __init__(self) -> None:
        self.proposed: list[str] = []

    def critique(self, system: str) -> str:
        """One ADD operation, or nothing once the rules it knows are all proposed."""
        candidates = [FAILURE_RULE] if system.startswith(gm.COMPARE_SYSTEM) else SUCCESS_RULES
        new = next((rule for rule in candidates if rule not in self.proposed), None)
        if new is None:
            return ""
        self.proposed.append(new)
        return f"ADD: {new}"

    def __call__(self, messages: list[Message], tools: list[ToolSchema]) -> str:
        """The answer to one request."""
        system, user = messages[0].content, messages[-1].content
        if system.startswith(gm.KEY_STEPS_SYSTEM):
            actions = [line[2:] for line in section(user, "## Trajectory").splitlines() if line.startswith("> ")]
            return "\n".join(f"{i}. {action}" for i, action in enumerate(actions, 1))
        if system.startswith(gm.FAIL_REASON_SYSTEM):
            return "The researcher found no facts, so the writer had nothing to answer with."
        if system.startswith(gm.RELEVANCE_SYSTEM):
            return "Score: 7"
        if system.startswith((gm.COMPARE_SYSTEM, gm.SUCCESS_SYSTEM)):
            return self.critique(system)
        if system.startswith((gm.MERGE_SYSTEM, gm.PROJECT_SYSTEM)):
            return "\n".join(f"{i}. {rule}" for i, rule in enumerate(numbered_items(user), 1))
        if system.startswith(Supervisor.DEFAULT_PROMPT):
            work = section(user, "## Work so far")
            return next((name for name in WORKERS if f"[{name}]" not in work), "FINISH")
        task = user.splitlines()[0].removeprefix("Task: ").lower()
        if "You are researcher" in system:
            return next((fact for topic, fact in FACTS.items() if topic in task), "I found no facts about this.")
        facts = section(user, "## Output of researcher").split("\n\n", 1)[0]
        insights = numbered_items(section(system, gm.INSIGHTS_HEADING))
        answer = facts if "no facts" not in facts else "I cannot answer: there are no facts to go on."
        return answer + (f" (Written following {len(insights)} team insight(s).)" if insights else "")


def judge(expected: str) -> Callable[[str, str], bool]:
    """A success judge for one task: the answer must mention the expected word."""

    def check(task: str, output: str) -> bool:
        return expected in output.lower()

    return check


def run(home: Path) -> list[tuple[TeamResult, list[str]]]:
    """Run the three tasks; (team result, insights G-Memory holds afterwards) per task."""
    llm = FunctionLLM(StandIn(), model_id="stand-in")
    out: list[tuple[TeamResult, list[str]]] = []
    with MemOS.open(home, embedder="hash", auto_paging=False) as mos:
        session = mos.as_user("alice")
        # evolve the insights after every task (the paper waits for 5) so three tasks show it
        memory = GMemory(session, llm, name=TEAM, start_at=1, every=1, rounds=1)
        for task, expected in TASKS:
            team = Supervisor(session, team=TEAM, workers=WORKERS, llm=llm, memory=memory, judge=judge(expected))
            result = team.run(task)
            out.append((result, [f"[{rule.score}] {rule.rule}" for rule in memory.insights.rules]))
    return out


def main(argv: list[str]) -> None:
    """Run the example in the home named on the command line and print what the team learnt."""
    if len(argv) != 2:
        raise SystemExit("usage: python examples/team_gmemory.py HOME")
    results = run(Path(argv[1]))
    for number, (result, insights) in enumerate(results, 1):
        route = " -> ".join(m.action for m in result.messages if m.action)
        print(f"task {number}: {TASKS[number - 1][0]}")
        print(f"  route: {route}")
        print(f"  answer: {result.output}")
        print(f"  success: {'yes' if result.success else 'no'}")
        print(f"  G-Memory: {result.memory['memory_size']} task(s) stored, {len(insights)} insight(s)")
        for line in insights:
            print(f"    {line}")
    print("insights after each task: " + " -> ".join(str(len(insights)) for _, insights in results))


if __name__ == "__main__":
    main(sys.argv)
