"""What G-Memory retrieves for a new task, and the memory text it renders into an agent's prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from memos.plugins.gmemory import prompts
from memos.plugins.gmemory.insights import Rule
from memos.plugins.gmemory.tasks import TaskRecord

_SCORE = re.compile(r"^(?:score\s*:\s*)?(10|[1-9])\.?$", re.IGNORECASE)


def parse_score(text: str) -> int:
    """A relevance answer as 1-10: exactly "Score: N" or "N" (N from 1 to 10); anything else is 0."""
    return int(m.group(1)) if (m := _SCORE.match((text or "").strip())) else 0


@dataclass
class Retrieval:
    """Past successes (best first), past failures, insights, and the insights adapted to each role."""

    task: str
    successes: list[TaskRecord] = field(default_factory=list)
    failures: list[TaskRecord] = field(default_factory=list)
    insights: list[Rule] = field(default_factory=list)
    #: votes each insight got from the tasks nearest to this one
    votes: dict[str, int] = field(default_factory=dict)
    #: role -> that role's version of the insights (only when projection ran)
    role_insights: dict[str, list[str]] = field(default_factory=dict)
    #: record id -> the LLM's relevance score (only for the candidates it scored)
    relevance: dict[str, int] = field(default_factory=dict)
    #: record ids of every candidate considered, successes then failures, in cosine order
    candidates: list[str] = field(default_factory=list)

    def insight_texts(self, role: str | None = None) -> list[str]:
        """The insights as text: the role's own version when there is one."""
        if role is not None and role in self.role_insights:
            return list(self.role_insights[role])
        return [rule.rule for rule in self.insights]

    def render(self, role: str | None = None) -> str:
        """The prompt sections: "Your Own Past Successes", failures if any, and numbered "Key Insights"."""
        parts: list[str] = []
        if self.successes:
            cases = [prompts.SUCCESSES_HEADING]
            for i, record in enumerate(self.successes, 1):
                cases.append(
                    f"### Success {i}\nTask: {record.description}\n"
                    f"Key steps:\n{record.key_steps.strip()}\nTrajectory:\n{record.trajectory.strip()}"
                )
            parts.append("\n".join(cases))
        if self.failures:
            cases = [prompts.FAILURES_HEADING]
            for i, record in enumerate(self.failures, 1):
                cases.append(
                    f"### Failure {i}\nTask: {record.description}\nWhy it failed: {record.fail_reason.strip()}"
                )
            parts.append("\n".join(cases))
        texts = self.insight_texts(role)
        if texts:
            parts.append(f"{prompts.INSIGHTS_HEADING}\n{prompts.numbered(texts)}")
        return "\n\n".join(parts)
