"""Every prompt G-Memory sends, as short templates (after the paper's reference prompts, shortened)."""

from __future__ import annotations

KEY_STEPS_SYSTEM = (
    "You extract key points. Given a task and a trajectory of actions and observations, list the steps "
    "that were needed to complete the task, one per line, leaving out steps that achieved nothing."
)
KEY_STEPS_USER = """Follow the trajectory strictly: add no step that is not in it, and drop actions whose observation \
says nothing happened.

## Task
{task}

## Trajectory
{trajectory}

## Key steps
"""

FAIL_REASON_SYSTEM = (
    "You analyse failures. Given a task and a failed trajectory, compare its final state with the state the "
    "task required and say in one or two sentences the most likely reason it failed."
)
FAIL_REASON_USER = """## Task
{task}

## Trajectory
{trajectory}

## Reason for the failure
"""

RELEVANCE_SYSTEM = "You score how relevant one text is to another."
RELEVANCE_USER = """Here is a task that was completed successfully, and a new task. Do not summarise them; rate how \
relevant and helpful the successful case is for the new task, on a scale of 1-10.

## Successful case
{case}

## New task
{task}

Answer with one line: "Score: N"."""

_OPERATIONS = """Answer with at most 4 operations, one per line, nothing else:
ADD: <new rule>
AGREE <n>: <existing rule n>
EDIT <n>: <existing rule n, improved>
REMOVE <n>: <existing rule n>
AGREE a rule that is strongly relevant, REMOVE one that is wrong or duplicated, EDIT one that can be made more \
general, ADD only rules that differ from the existing ones. Every rule reads "X, because Y." and ends with a period; \
rules are general (no task-specific items); each existing rule gets at most one operation."""

FULL_SUFFIX = (
    "\nThe rule list is full: prefer REMOVE, EDIT or AGREE, and ADD only a rule that is very insightful and "
    "different from the existing ones."
)

COMPARE_SYSTEM = (
    "You derive rules from examples. You get two similar tasks: the first succeeded, the second failed, with the "
    "reason it failed. Turn the reason into general rules that help future agents avoid the mistake."
)
COMPARE_USER = (
    """## Task 1 (success)
{success_task}
{success_trajectory}

## Task 2 (failure)
Reason it failed: {fail_reason}
{failure_task}
{failure_trajectory}

## Existing rules
{rules}

"""
    + _OPERATIONS
)

SUCCESS_SYSTEM = (
    "You maintain a set of rules drawn from past tasks. You get successful task trials; derive general, "
    "high-level tips from them that help future agents think and act better."
)
SUCCESS_USER = (
    """## Successful trials
{trials}

## Existing rules
{rules}

"""
    + _OPERATIONS
)

MERGE_SYSTEM = (
    "You consolidate insights drawn from similar tasks. Merge the ones that overlap, keep what they say and add "
    'nothing new. Answer with a numbered list only (1. ..., 2. ...); every insight reads "X, because Y." and '
    "ends with a period."
)
MERGE_USER = """## Insights
{rules}

Rewrite them into at most {limit} insights."""

PROJECT_SYSTEM = (
    "You adapt general insights to one agent role, so that an agent in that role can act on them. Answer with a "
    'numbered list only (1. ..., 2. ...); every insight reads "X, because Y." and ends with a period.'
)
PROJECT_USER = """## General insights
{rules}

## Role
{role}

## Insights for this role"""

#: headings of the memory text put into an agent's prompt
SUCCESSES_HEADING = "## Your Own Past Successes"
FAILURES_HEADING = "## Past Failures To Avoid"
INSIGHTS_HEADING = "## Key Insights"


def numbered(items: list[str]) -> str:
    """Items as "1. a" lines ("(none)" when there are none)."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)) or "(none)"
