"""How the insights evolve: finetune rounds (critiques of similar tasks) and merges over task clusters.

Finetune (every `rounds_every` tasks once there are `start_at`): each round samples one stored
task with a seeded RNG, fetches its 3 most similar successes and 1 most similar failure, shows the
LLM the rules supported by at least half of those tasks, and asks it to critique each
(success, failure) pair and each chunk of at most 5 successes; the rule operations it answers are
applied for the tasks concerned. Merge (every `merge_every` tasks): the tasks are clustered
(first-neighbour clustering, `cluster.py`), the rules supported by each cluster are merged by the
LLM in batches of 10, and the merged rules replace the whole set at score 2.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memos.plugins.gmemory import prompts
from memos.plugins.gmemory.asker import Asker
from memos.plugins.gmemory.cluster import clusters
from memos.plugins.gmemory.insights import (
    FULL_AT,
    NEW_SCORE,
    InsightStore,
    Rule,
    parse_numbered_rules,
    parse_rule_ops,
)
from memos.plugins.gmemory.tasks import TaskRecord, TaskStore

#: per finetune round: similar successes and failures fetched around the sampled task
ROUND_SUCCESSES = 3
ROUND_FAILURES = 1
#: a rule is shown in a round when it is supported by at least this share of the round's tasks
ROUND_SHARE = 0.5
#: most successes critiqued in one prompt
CHUNK = 5
#: most rules merged in one prompt
MERGE_BATCH = 10


@dataclass
class EvolveReport:
    """What a finetune or a merge did."""

    kind: str
    llm_calls: int = 0
    #: (operation, rule id) for finetune; (cluster index, merged rule id) for merge
    applied: list[tuple[str, str]] = field(default_factory=list)
    #: (line or operation, why it was not used): parser and store rejections together
    rejected: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: sampled task ids (finetune) or cluster sizes (merge)
    detail: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data."""
        return {
            "kind": self.kind,
            "llm_calls": self.llm_calls,
            "applied": [list(a) for a in self.applied],
            "rejected": [list(r) for r in self.rejected],
            "deleted": list(self.deleted),
            "detail": list(self.detail),
        }


def _rules_text(insights: InsightStore, shown: Sequence[str]) -> str:
    return prompts.numbered([rule.rule for rid in shown if (rule := insights.get(rid)) is not None])


def _critique(
    ask: Asker,
    insights: InsightStore,
    report: EvolveReport,
    system: str,
    user: str,
    shown: Sequence[str],
    tasks: Sequence[str],
) -> None:
    """One critique call: ask, parse strictly, apply for `tasks`, record everything in the report."""
    full = len(insights) >= FULL_AT
    answer = ask("finetune", system + (prompts.FULL_SUFFIX if full else ""), user)
    report.llm_calls += 1
    parsed = parse_rule_ops(answer)
    report.rejected.extend(parsed.rejected)
    applied = insights.apply(parsed.ops, shown, tasks)
    report.applied.extend(applied.applied)
    report.rejected.extend(applied.rejected)
    report.deleted.extend(applied.deleted)


def _trial(index: int, record: TaskRecord) -> str:
    return f"### Task {index}\n{record.description}\nKey steps:\n{record.key_steps.strip()}"


def finetune(
    store: TaskStore,
    insights: InsightStore,
    ask: Asker,
    *,
    rounds: int,
    seed: int,
) -> EvolveReport:
    """Run `rounds` finetune rounds; the RNG of round r is seeded by (seed, memory size, r)."""
    report = EvolveReport("finetune")
    if not len(store):
        return report
    size = len(store)
    for round_no in range(rounds):
        rng = random.Random(f"{seed}:{size}:{round_no}")
        sample = rng.choice(store.records)
        vec = store.vector(sample.id)
        successes = [r for r, _ in store.nearest(vec, ROUND_SUCCESSES, success=True, exclude=[sample.id])]
        failures = [r for r, _ in store.nearest(vec, ROUND_FAILURES, success=False, exclude=[sample.id])]
        (successes if sample.success else failures).append(sample)
        task_ids = [r.id for r in successes + failures]
        shown_at_start = [rule.id for rule in insights.supported(task_ids, ROUND_SHARE)]
        report.detail.append(sample.id)
        for success, failure in zip(successes, failures, strict=False):
            shown = [rid for rid in shown_at_start if insights.get(rid) is not None]
            user = prompts.COMPARE_USER.format(
                success_task=success.description,
                success_trajectory=success.trajectory,
                fail_reason=failure.fail_reason or "(not given)",
                failure_task=failure.description,
                failure_trajectory=failure.trajectory,
                rules=_rules_text(insights, shown),
            )
            _critique(ask, insights, report, prompts.COMPARE_SYSTEM, user, shown, [success.id, failure.id])
        order = list(successes)
        rng.shuffle(order)
        for start in range(0, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            shown = [rid for rid in shown_at_start if insights.get(rid) is not None]
            trials = "\n\n".join(_trial(i, r) for i, r in enumerate(chunk, 1))
            user = prompts.SUCCESS_USER.format(trials=trials, rules=_rules_text(insights, shown))
            _critique(ask, insights, report, prompts.SUCCESS_SYSTEM, user, shown, [r.id for r in chunk])
    return report


def merge(store: TaskStore, insights: InsightStore, ask: Asker, *, batch: int = MERGE_BATCH) -> EvolveReport:
    """Merge the rules of each task cluster; the merged rules replace all rules, at score 2.

    A batch of one rule is kept as it is (nothing to merge, no call). When the model's answer holds
    no valid rule, the batch's rules are kept rather than lost.
    """
    report = EvolveReport("merge")
    if not len(insights) or not len(store):
        return report
    groups = clusters(store.ids(), store.matrix)
    merged: list[tuple[int, str, list[str]]] = []  # (cluster index, rule text, supporting task ids)
    for index, group in enumerate(groups):
        related = [rule for rule, _ in insights.votes(group)]
        report.detail.append(len(group))
        for start in range(0, len(related), batch):
            chunk: list[Rule] = related[start : start + batch]
            if len(chunk) == 1:
                merged.append((index, chunk[0].rule, group))
                continue
            limit = max(1, math.ceil(len(chunk) / 3))
            user = prompts.MERGE_USER.format(rules=prompts.numbered([r.rule for r in chunk]), limit=limit)
            answer = ask("merge", prompts.MERGE_SYSTEM, user)
            report.llm_calls += 1
            rules, rejected = parse_numbered_rules(answer)
            report.rejected.extend(rejected)
            if len(rules) > limit:
                report.rejected.extend((extra, f"more than {limit} merged rules") for extra in rules[limit:])
                rules = rules[:limit]
            merged.extend((index, text, group) for text in rules or [r.rule for r in chunk])
    # built aside and swapped in at the end: the old rules stay until every merge call has answered
    fresh = InsightStore(next_id=insights.next_id)
    for index, text, group in merged:
        rule = fresh.find(text)
        if rule is None:
            rule = fresh.new_rule(text, group, score=NEW_SCORE)
        else:
            rule.positive_tasks.extend(t for t in group if t not in rule.positive_tasks)
        report.applied.append((str(index), rule.id))
    report.deleted = [r.id for r in insights.rules]
    insights.rules, insights.next_id = fresh.rules, fresh.next_id
    return report
