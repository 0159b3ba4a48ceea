"""The insight store: scored rules, the strict parser of the LLM's rule operations, and their arithmetic.

A rule is {rule, score, positive_tasks, negative_tasks}. The LLM edits the rule set with at most
four operations, one per line:

    ADD: <new rule>
    AGREE <n>: <rule n>
    EDIT <n>: <rule n rewritten>
    REMOVE <n>: <rule n>

where n numbers the rules shown to it (from 1), and every rule is phrased "X, because Y." ending
with a period. Anything else is rejected and counted, never raised. Operations apply in the order
REMOVE, AGREE, EDIT, ADD: REMOVE takes 1 from the score (3 once the store holds 10 rules or more),
AGREE and EDIT add 1 and put the tasks in the rule's positive set (EDIT also replaces the text), ADD
creates a rule at score 2 unless the same rule exists. Rules whose score falls to 0 or below are
deleted. After a task, each rule it was given gains 1 on success and loses 2 on failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memos.errors import UserError

OPERATIONS = ("ADD", "AGREE", "EDIT", "REMOVE")
#: the order operations take effect in
APPLY_ORDER = ("REMOVE", "AGREE", "EDIT", "ADD")
#: most operations one LLM answer may carry
MAX_OPS = 4
#: a new rule's score, and every merged rule's
NEW_SCORE = 2
#: from this many rules on, REMOVE weighs FULL_REMOVE instead of 1
FULL_AT = 10
FULL_REMOVE = 3
#: score change of the rules a task was given, after it succeeded / failed
SUCCESS_CREDIT = 1
FAILURE_CREDIT = -2
#: a rule number longer than this is rejected unread
MAX_NUMBER_DIGITS = 100

_OP_LINE = re.compile(r"^\s*(?:[-*]\s+)?(ADD|AGREE|EDIT|REMOVE)\b(.*)$")
_NUMBERED = re.compile(r"^ (\d+):(?: (.*))?$")
_UNNUMBERED = re.compile(r"^:(?: (.*))?$")
_EMBEDDED_OP = re.compile(r"\b(?:ADD|AGREE|EDIT|REMOVE)(?: \d+)?:")
_LIST_ITEM = re.compile(r"^\s*(\d+)\.\s+(.*)$")


def rule_problem(text: str) -> str | None:
    """Why `text` is not a rule of the form "X, because Y." (None when it is one)."""
    body = text.strip()
    if not body:
        return "the rule is empty"
    if not body.endswith("."):
        return "a rule must end with a period"
    if _EMBEDDED_OP.search(body):
        return "the rule text holds another operation"
    head, sep, reason = body[:-1].partition(", because ")
    if not sep or not head.strip() or not reason.strip():
        return 'a rule must read "X, because Y."'
    return None


def normalise_rule(text: str) -> str:
    """The form two rules are compared in: case-folded, single spaces, no final period."""
    return " ".join(text.split()).casefold().rstrip(".")


@dataclass(frozen=True)
class RuleOp:
    """One parsed operation: ADD (number None), AGREE, EDIT or REMOVE of shown rule `number`."""

    op: str
    number: int | None
    text: str

    def __str__(self) -> str:
        return f"{self.op}: {self.text}" if self.number is None else f"{self.op} {self.number}: {self.text}"


@dataclass
class ParsedOps:
    """What the parser kept, and each line it rejected with the reason."""

    ops: list[RuleOp] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def parse_rule_ops(text: str, max_ops: int = MAX_OPS) -> ParsedOps:
    """Parse an LLM answer into rule operations; malformed lines and lines past `max_ops` are rejected.

    Empty lines are ignored. Every other line counts: a line that is not an operation is rejected;
    operation lines after the first `max_ops` are rejected whether well-formed or not. A line may
    start with "- " or "* ". The keyword is upper case, followed by " n: " (AGREE, EDIT, REMOVE) or
    ": " (ADD), then the rule.
    """
    out = ParsedOps()
    seen_ops = 0
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _OP_LINE.match(line)
        if match is None:
            out.rejected.append((line, "not an operation (ADD, AGREE n, EDIT n or REMOVE n)"))
            continue
        seen_ops += 1
        if seen_ops > max_ops:
            out.rejected.append((line, f"more than {max_ops} operations"))
            continue
        op, rest = match.group(1), match.group(2)
        number: int | None = None
        if op == "ADD":
            found = _UNNUMBERED.match(rest)
            if found is None:
                why = "ADD takes no rule number" if rest.strip()[:1].isdigit() else "malformed ADD"
                out.rejected.append((line, f'{why}: write "ADD: X, because Y."'))
                continue
            rule = found.group(1) or ""
        else:
            found = _NUMBERED.match(rest)
            if found is None:
                out.rejected.append((line, f'{op} needs a rule number: "{op} 2: X, because Y."'))
                continue
            digits, rule = found.group(1), found.group(2) or ""
            if len(digits) > MAX_NUMBER_DIGITS:
                out.rejected.append((line, f"rule number {digits[:12]}... is far too large"))
                continue
            number = int(digits)
            if number < 1:
                out.rejected.append((line, "rule numbers start at 1"))
                continue
        problem = rule_problem(rule)
        if problem is not None:
            out.rejected.append((line, problem))
            continue
        out.ops.append(RuleOp(op, number, rule.strip()))
    return out


def parse_numbered_rules(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Rules from a numbered list ("1. X, because Y."), and each other non-empty line with why it was rejected."""
    rules: list[str] = []
    rejected: list[tuple[str, str]] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _LIST_ITEM.match(line)
        if match is None:
            rejected.append((line, "not a numbered list item"))
            continue
        problem = rule_problem(match.group(2))
        if problem is not None:
            rejected.append((line, problem))
            continue
        rules.append(match.group(2).strip())
    return rules, rejected


@dataclass
class Rule:
    """One insight: its text, score, and the tasks that support or contradict it."""

    id: str
    rule: str
    score: int
    positive_tasks: list[str] = field(default_factory=list)
    negative_tasks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain JSON-ready data."""
        return {
            "id": self.id,
            "rule": self.rule,
            "score": self.score,
            "positive_tasks": list(self.positive_tasks),
            "negative_tasks": list(self.negative_tasks),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Rebuild a rule written by `to_dict`; UserError when the data is not such a rule."""
        if not isinstance(data, Mapping):
            raise UserError(f"the G-Memory state file is damaged: an insight is {type(data).__name__}, not an object")
        rule_id, text, score = data.get("id"), data.get("rule"), data.get("score")
        positive, negative = data.get("positive_tasks", []), data.get("negative_tasks", [])
        if not isinstance(rule_id, str) or not isinstance(text, str):
            raise UserError("the G-Memory state file is damaged: an insight lacks its id or rule text")
        if isinstance(score, bool) or not isinstance(score, int):
            raise UserError(f"the G-Memory state file is damaged: insight {rule_id!r} has no integer score")
        if not all(isinstance(t, list) and all(isinstance(i, str) for i in t) for t in (positive, negative)):
            raise UserError(f"the G-Memory state file is damaged: insight {rule_id!r} has bad task lists")
        return cls(id=rule_id, rule=text, score=score, positive_tasks=list(positive), negative_tasks=list(negative))


def _join(into: list[str], items: Iterable[str]) -> None:
    for item in items:
        if item not in into:
            into.append(item)


@dataclass
class ApplyReport:
    """What one batch of operations did."""

    #: (operation as given, id of the rule it changed or created)
    applied: list[tuple[str, str]] = field(default_factory=list)
    #: (operation as given, why it was not applied)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: ids of the rules deleted because their score fell to 0 or below
    deleted: list[str] = field(default_factory=list)


class InsightStore:
    """The rules, in the order they were created; ids are "r1", "r2", ... and never reused."""

    def __init__(self, rules: Sequence[Rule] = (), next_id: int = 1) -> None:
        self.rules: list[Rule] = list(rules)
        self.next_id = next_id

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, or None (deleted or never made)."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def find(self, text: str) -> Rule | None:
        """The rule that says the same as `text` (compared by `normalise_rule`), or None."""
        key = normalise_rule(text)
        return next((r for r in self.rules if normalise_rule(r.rule) == key), None)

    def new_rule(self, text: str, tasks: Iterable[str], score: int = NEW_SCORE) -> Rule:
        """Append a rule with a fresh id."""
        rule = Rule(id=f"r{self.next_id}", rule=text, score=score)
        _join(rule.positive_tasks, tasks)
        self.next_id += 1
        self.rules.append(rule)
        return rule

    def prune(self) -> list[str]:
        """Delete the rules at score 0 or below; return their ids."""
        gone = [r.id for r in self.rules if r.score <= 0]
        self.rules = [r for r in self.rules if r.score > 0]
        return gone

    def apply(
        self,
        ops: Sequence[RuleOp],
        shown: Sequence[str],
        tasks: Sequence[str],
        *,
        full_at: int = FULL_AT,
    ) -> ApplyReport:
        """Carry out operations whose numbers refer to the rules `shown` (ids, numbered from 1) for `tasks`.

        Checked first, in the order given: a number outside the shown list, a rule already deleted,
        or a second operation on one rule is rejected; an ADD of a rule that exists (or that an
        earlier ADD of the batch adds) is rejected as a duplicate; an EDIT whose new text is an
        existing rule becomes an AGREE of that rule. Then REMOVE, AGREE, EDIT and ADD take effect in
        that order, and rules at score <= 0 are deleted.
        """
        report = ApplyReport()
        full = len(self.rules) >= full_at
        planned: list[tuple[RuleOp, str, Rule | None]] = []  # (op, effective kind, target)
        touched: set[str] = set()
        added: set[str] = set()
        for op in ops:
            label = str(op)
            if op.op == "ADD":
                twin = self.find(op.text)
                key = normalise_rule(op.text)
                if twin is not None or key in added:
                    which = twin.id if twin is not None else "an earlier ADD"
                    report.rejected.append((label, f"duplicate of {which}"))
                    continue
                added.add(key)
                planned.append((op, "ADD", None))
                continue
            number = op.number or 0
            if not 1 <= number <= len(shown):
                report.rejected.append((label, f"rule {number} was not shown (1..{len(shown)})"))
                continue
            target = self.get(shown[number - 1])
            if target is None:
                report.rejected.append((label, f"rule {number} no longer exists"))
                continue
            kind = op.op
            if kind == "EDIT":
                twin = self.find(op.text)
                if twin is not None:
                    kind, target = "AGREE", twin
            if target.id in touched:
                report.rejected.append((label, f"rule {target.id} already has an operation"))
                continue
            touched.add(target.id)
            planned.append((op, kind, target))
        for kind_now in APPLY_ORDER:
            for op, kind, target in planned:
                if kind != kind_now:
                    continue
                if kind == "ADD":
                    rule = self.new_rule(op.text, tasks)
                    report.applied.append((str(op), rule.id))
                    continue
                assert target is not None
                if kind == "REMOVE":
                    target.score -= FULL_REMOVE if full else 1
                    _join(target.negative_tasks, tasks)
                else:
                    target.score += 1
                    _join(target.positive_tasks, tasks)
                    if kind == "EDIT":
                        target.rule = op.text
                report.applied.append((str(op), target.id))
        report.deleted = self.prune()
        return report

    def credit(self, rule_ids: Iterable[str], success: bool) -> tuple[list[str], list[str]]:
        """After a task: +1 (success) or -2 (failure) for each rule it was given; return (credited, deleted)."""
        delta = SUCCESS_CREDIT if success else FAILURE_CREDIT
        credited = []
        for rule_id in dict.fromkeys(rule_ids):
            rule = self.get(rule_id)
            if rule is not None:
                rule.score += delta
                credited.append(rule_id)
        return credited, self.prune()

    def votes(self, task_ids: Sequence[str]) -> list[tuple[Rule, int]]:
        """Rules with one vote per listed task in their positive set: most votes, then highest score, first."""
        scored = []
        for position, rule in enumerate(self.rules):
            count = sum(1 for task in task_ids if task in rule.positive_tasks)
            if count:
                scored.append((rule, count, position))
        scored.sort(key=lambda item: (-item[1], -item[0].score, item[2]))
        return [(rule, count) for rule, count, _ in scored]

    def supported(self, task_ids: Sequence[str], share: float = 0.5) -> list[Rule]:
        """Rules whose positive set holds at least `share` of the tasks, most supported first."""
        need = share * len(task_ids)
        scored = []
        for position, rule in enumerate(self.rules):
            count = sum(1 for task in task_ids if task in rule.positive_tasks)
            if count and count >= need:
                scored.append((rule, count, position))
        scored.sort(key=lambda item: (-item[1], item[2]))
        return [rule for rule, _, _ in scored]

    def to_dict(self) -> dict[str, Any]:
        """The rules and the id counter as plain JSON-ready data."""
        return {"next_id": self.next_id, "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InsightStore:
        """Rebuild a store written by `to_dict`; UserError when the data is damaged."""
        if not isinstance(data, Mapping) or not isinstance(data.get("rules", []), list):
            raise UserError("the G-Memory state file is damaged: its insights are not a list of rules")
        rules = [Rule.from_dict(r) for r in data.get("rules", [])]
        next_id = data.get("next_id", len(rules) + 1)
        if isinstance(next_id, bool) or not isinstance(next_id, int) or next_id < 1:
            raise UserError("the G-Memory state file is damaged: its insight counter is not a positive integer")
        store = cls(rules, next_id)
        if len({r.id for r in rules}) != len(rules):
            raise UserError("the G-Memory state file is damaged: two insights share an id")
        return store

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InsightStore):
            return NotImplemented
        return self.to_dict() == other.to_dict()
