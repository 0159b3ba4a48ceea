"""The interaction graph of one task: a directed graph of agent messages per environment step.

G-Memory keeps, for every task a team ran, the utterance-level trace of how its agents worked
together. Each environment step is one directed graph: its nodes are the agents' messages (node id
`agent-n`, n counting that agent's messages within the step from 0), its edges run from the upstream
messages a message answered (edge type "spatial"), and the step carries the action sent to the
environment, the observation that came back and the reward. Messages added after the last action
belong to an open step that is kept with the trace but is not part of the trajectory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memos.errors import UserError

#: the only edge type G-Memory records inside one step
SPATIAL = "spatial"


@dataclass
class AgentNode:
    """One message of one agent in one step."""

    id: str
    agent: str
    role: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The node as plain JSON-ready data."""
        return {"id": self.id, "agent": self.agent, "role": self.role, "message": self.message}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentNode:
        """Rebuild a node written by `to_dict`."""
        return cls(id=data["id"], agent=data["agent"], role=data.get("role"), message=data["message"])


@dataclass
class Step:
    """One environment step: agent messages (nodes), spatial edges, and the step's outcome."""

    nodes: list[AgentNode] = field(default_factory=list)
    #: (upstream node id, node id, edge type)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    action: str | None = None
    observation: str | None = None
    reward: float | None = None

    @property
    def closed(self) -> bool:
        """True once an action was sent to the environment for this step."""
        return self.action is not None

    def node(self, node_id: str) -> AgentNode | None:
        """The node with this id, or None."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def latest(self, agent: str) -> AgentNode | None:
        """The agent's last message in this step, or None."""
        return next((n for n in reversed(self.nodes) if n.agent == agent), None)

    def predecessors(self, node_id: str) -> list[str]:
        """Ids of the messages this one answered, in the order the edges were added."""
        return [up for up, down, _ in self.edges if down == node_id]

    def to_dict(self) -> dict[str, Any]:
        """The step as plain JSON-ready data."""
        return {
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [list(e) for e in self.edges],
            "action": self.action,
            "observation": self.observation,
            "reward": self.reward,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """Rebuild a step written by `to_dict`."""
        return cls(
            nodes=[AgentNode.from_dict(n) for n in data.get("nodes", [])],
            edges=[(str(a), str(b), str(t)) for a, b, t in data.get("edges", [])],
            action=data.get("action"),
            observation=data.get("observation"),
            reward=data.get("reward"),
        )


class InteractionTrace:
    """The chain of step graphs of one task; `add_message` builds the open step, `close_step` ends it."""

    def __init__(self, steps: Sequence[Step] = (), pending: Step | None = None) -> None:
        #: the closed steps, oldest first
        self.steps: list[Step] = list(steps)
        #: the step being built (messages since the last action)
        self.pending: Step = pending if pending is not None else Step()

    def add_message(self, agent: str, message: str, *, role: str | None = None, upstream: Sequence[str] = ()) -> str:
        """Add an agent's message to the open step, linked from its upstream messages; return its node id.

        An upstream entry is a node id of this step ("critic-0") or an agent name, meaning that
        agent's latest message in this step. Edges only run inside a step, so an agent that spoke in
        an earlier step but not in this one adds no edge; a name that never spoke is an error.
        """
        if not isinstance(agent, str) or not agent.strip():
            raise UserError("an agent message needs the agent's name: pass agent='solver' (a non-empty string)")
        if not isinstance(message, str):
            raise UserError(f"the message of agent {agent!r} must be text, got {type(message).__name__}")
        if isinstance(upstream, str):
            raise UserError(f"upstream must be a list of agent names or node ids, not the string {upstream!r}")
        step = self.pending
        sources: list[str] = []
        for item in upstream:
            found = step.node(item) or step.latest(item)
            if found is None and self._spoke_before(item):
                continue
            if found is None:
                raise UserError(
                    f"upstream {item!r} of agent {agent!r} never spoke in this task: name an agent that "
                    "already spoke, or a node id of this step such as 'solver-0'"
                )
            if found.id not in sources:
                sources.append(found.id)
        count = sum(1 for n in step.nodes if n.agent == agent)
        node = AgentNode(id=f"{agent}-{count}", agent=agent, role=role, message=message)
        step.nodes.append(node)
        step.edges.extend((source, node.id, SPATIAL) for source in sources)
        return node.id

    def _spoke_before(self, name: str) -> bool:
        return any(node.agent == name or node.id == name for step in self.steps for node in step.nodes)

    def close_step(self, action: str, observation: str | None = None, reward: float | None = None) -> Step:
        """End the open step with the action sent, what came back and its reward; return it."""
        if not isinstance(action, str):
            raise UserError(f"a step's action must be text, got {type(action).__name__}")
        if reward is not None and not isinstance(reward, int | float):
            raise UserError(f"a step's reward must be a number, got {type(reward).__name__}")
        step = self.pending
        step.action = action
        step.observation = observation if observation is not None else ""
        step.reward = None if reward is None else float(reward)
        self.steps.append(step)
        self.pending = Step()
        return step

    def kept_steps(self) -> list[Step]:
        """The closed steps without those whose reward is negative (what G-Memory learns from)."""
        return [s for s in self.steps if (s.reward or 0.0) >= 0]

    def trajectory(self) -> str:
        """The kept steps as "> action" and observation lines, G-Memory's trajectory text."""
        return "".join(f"> {s.action}\n{s.observation}\n" for s in self.kept_steps())

    def messages(self) -> int:
        """How many agent messages the trace holds, the open step included."""
        return sum(len(s.nodes) for s in self.steps) + len(self.pending.nodes)

    def to_dict(self) -> dict[str, Any]:
        """The trace as plain JSON-ready data."""
        return {"steps": [s.to_dict() for s in self.steps], "pending": self.pending.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InteractionTrace:
        """Rebuild a trace written by `to_dict`."""
        pending = data.get("pending")
        return cls(
            steps=[Step.from_dict(s) for s in data.get("steps", [])],
            pending=Step.from_dict(pending) if pending else None,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InteractionTrace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"InteractionTrace(steps={len(self.steps)}, messages={self.messages()})"
