"""A sequential team: agents run in a fixed order, each reading the output of the one before it.

    pipeline = Pipeline(alice, team="blog", agents=[("planner", "Plan ..."), ("writer", "Write ...")], llm=llm)
    result = pipeline.run("A post about tide pools")    # result.output is the writer's text

Namespaces, memory writes and the `TeamMemory` hooks are those of every team (memos.agents.team):
the first agent's step has no upstream, each later one has the agent before it as its upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memos.errors import UserError
from memos.llm.base import LLM

from .team import FINISH, SUPERVISOR, Judge, Team, TeamMemory, TeamMessage, TeamState, check_segment
from .tool_agent import load_langgraph

if TYPE_CHECKING:
    from memos.kernel import Session

#: most agents one pipeline may chain
MAX_AGENTS = 20


def _check_agents(agents: Any) -> dict[str, str]:
    """(name, role prompt) pairs in order as a dict; UserError for a malformed or repeated entry."""
    if isinstance(agents, str | bytes | Mapping) or not isinstance(agents, Sequence) or not agents:
        raise UserError("a pipeline needs agents: a list of (name, role prompt) pairs, in the order they run")
    if len(agents) > MAX_AGENTS:
        raise UserError(f"a pipeline chains at most {MAX_AGENTS} agents, got {len(agents)}")
    out: dict[str, str] = {}
    for position, item in enumerate(agents):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise UserError(f"pipeline agent {position} must be a (name, role prompt) pair, got {item!r}")
        name, prompt = item
        check_segment(name, "agent name")
        if name.lower() in (SUPERVISOR, FINISH.lower()):
            raise UserError(f"an agent cannot be named {name!r}: that name is reserved; rename it")
        if name.lower() in {n.lower() for n in out}:
            raise UserError(f"agent {name!r} appears twice in the pipeline; give each step its own name")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"agent {name!r} needs a role prompt (a non-empty string)")
        out[name] = prompt
    return out


class Pipeline(Team):
    """Agents in a fixed order; each reads the task and the previous agent's output."""

    def __init__(
        self,
        session: Session,
        *,
        team: str,
        agents: Sequence[tuple[str, str]],
        llm: LLM | Mapping[str, LLM] | None = None,
        memory: TeamMemory | None = None,
        judge: Judge | None = None,
        owner: str | None = None,
        k: int = 3,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        prompts = _check_agents(agents)
        super().__init__(
            session,
            team=team,
            role_prompts=prompts,
            llm=llm,
            memory=memory,
            judge=judge,
            owner=owner,
            k=k,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        self.roles = list(prompts)
        self.graph = self._build()

    def _build(self) -> Any:
        graph = load_langgraph()
        builder = graph.StateGraph(TeamState)
        previous = graph.START
        for name in self.roles:
            builder.add_node(name, self._step(name))
            builder.add_edge(previous, name)
            previous = name
        builder.add_edge(previous, graph.END)
        return builder.compile()

    def _recursion_limit(self) -> int:
        return len(self.roles) + 2

    def _step(self, name: str) -> Callable[[TeamState], dict[str, Any]]:
        def node(state: TeamState) -> dict[str, Any]:
            inputs = [TeamMessage.from_dict(m) for m in state["messages"][-1:]]
            return self._work(name, state, inputs, last=name == self.roles[-1])

        node.__name__ = f"agent_{name}"
        return node
