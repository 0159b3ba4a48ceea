"""G-Memory (arXiv 2506.07398): hierarchical memory for multi-agent teams, on a memos home.

Three tiers: the interaction graph of each task (agent messages per environment step), the query
graph over tasks (each linked to its similar predecessors), and insights (scored rules that the LLM
adds, agrees with, edits and removes as tasks come in). A team calls three hooks:

    from memos.plugins.gmemory import GMemory

    memory = GMemory(mos.as_user("team"), llm, name="household")
    texts = memory.on_task_start(task, roles=["solver", "critic"])      # role -> memory text for its prompt
    memory.on_agent_message("solver", "open the fridge", role="solver")
    memory.on_agent_message("critic", "ok", role="critic", upstream=["solver"],
                            action="open fridge 1", observation="The fridge is open.", reward=0)
    report = memory.on_task_end(success=True)                          # stored, linked, insights evolved

State lives in `<home>/gmemory/<name>/state.json`, written atomically.
"""

from memos.plugins.gmemory.cluster import finch_partitions, first_neighbour_partition
from memos.plugins.gmemory.graph import QueryGraph
from memos.plugins.gmemory.insights import (
    ApplyReport,
    InsightStore,
    ParsedOps,
    Rule,
    RuleOp,
    parse_numbered_rules,
    parse_rule_ops,
    rule_problem,
)
from memos.plugins.gmemory.memory import GMemory, triggers
from memos.plugins.gmemory.retrieval import Retrieval, parse_score
from memos.plugins.gmemory.tasks import TaskRecord, TaskStore
from memos.plugins.gmemory.trace import AgentNode, InteractionTrace, Step

__all__ = [
    "AgentNode",
    "ApplyReport",
    "GMemory",
    "InsightStore",
    "InteractionTrace",
    "ParsedOps",
    "QueryGraph",
    "Retrieval",
    "Rule",
    "RuleOp",
    "Step",
    "TaskRecord",
    "TaskStore",
    "finch_partitions",
    "first_neighbour_partition",
    "parse_numbered_rules",
    "parse_rule_ops",
    "parse_score",
    "rule_problem",
    "triggers",
]
