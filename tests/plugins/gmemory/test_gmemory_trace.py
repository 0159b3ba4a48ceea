"""The interaction graph of a task: node ids, spatial edges, step outcomes, kept steps, and a JSON round trip."""

from __future__ import annotations

import json

import pytest

from memos.errors import UserError
from memos.plugins.gmemory.trace import AgentNode, InteractionTrace, Step


def two_step_trace() -> InteractionTrace:
    trace = InteractionTrace()
    trace.add_message("solver", "Fill the kettle first.", role="solver")
    trace.add_message("critic", "Agreed.", role="critic", upstream=["solver"])
    trace.add_message("solver", "Filling it.", role="solver", upstream=["critic", "solver-0"])
    trace.close_step("fill kettle", "The kettle is full.", reward=0)
    trace.add_message("solver", "Open the window.", role="solver")
    trace.close_step("open window", "Nothing happens.", reward=-1)
    trace.add_message("solver", "Switch it on.", role="solver", upstream=["critic"])  # critic spoke in step 1 only
    trace.close_step("switch on kettle", "The water boils.", reward=1)
    trace.add_message("critic", "Done?", role="critic")
    return trace


def test_nodes_edges_and_step_outcomes() -> None:
    trace = two_step_trace()
    first = trace.steps[0]
    assert [n.id for n in first.nodes] == ["solver-0", "critic-0", "solver-1"]
    assert first.edges == [
        ("solver-0", "critic-0", "spatial"),
        ("critic-0", "solver-1", "spatial"),
        ("solver-0", "solver-1", "spatial"),
    ]
    assert first.predecessors("solver-1") == ["critic-0", "solver-0"]
    assert (first.action, first.observation, first.reward) == ("fill kettle", "The kettle is full.", 0.0)
    # node counters restart in every step; an upstream agent of an earlier step adds no edge
    assert [n.id for n in trace.steps[2].nodes] == ["solver-0"]
    assert trace.steps[2].edges == []
    # the open step holds the critic's last message and is not part of the trajectory
    assert trace.pending.nodes == [AgentNode("critic-0", "critic", "critic", "Done?")]
    assert not trace.pending.closed
    assert trace.messages() == 6


def test_negative_reward_steps_are_dropped_from_the_trajectory() -> None:
    trace = two_step_trace()
    assert [s.action for s in trace.kept_steps()] == ["fill kettle", "switch on kettle"]
    assert trace.trajectory() == "> fill kettle\nThe kettle is full.\n> switch on kettle\nThe water boils.\n"
    # a step without a reward counts as 0 and stays
    plain = InteractionTrace()
    plain.add_message("a", "x")
    plain.close_step("look")
    assert plain.trajectory() == "> look\n\n"


def test_bad_messages_are_refused() -> None:
    trace = InteractionTrace()
    with pytest.raises(UserError, match="never spoke"):
        trace.add_message("critic", "Agreed.", upstream=["solver"])
    with pytest.raises(UserError, match="list of agent names"):
        trace.add_message("critic", "Agreed.", upstream="solver")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="agent's name"):
        trace.add_message(" ", "hello")
    with pytest.raises(UserError, match="must be text"):
        trace.add_message("solver", 42)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="reward must be a number"):
        trace.close_step("go", "ok", reward="high")  # type: ignore[arg-type]
    assert trace.messages() == 0


def test_round_trip_through_json_is_exact() -> None:
    trace = two_step_trace()
    data = json.loads(json.dumps(trace.to_dict()))
    again = InteractionTrace.from_dict(data)
    assert again == trace
    assert again.to_dict() == trace.to_dict()
    assert again.steps[0] == trace.steps[0]
    assert Step.from_dict(trace.steps[1].to_dict()) == trace.steps[1]
    # the rebuilt trace keeps counting where the original would
    assert again.add_message("critic", "Yes.") == trace.add_message("critic", "Yes.") == "critic-1"
    assert InteractionTrace.from_dict({}) == InteractionTrace()
