"""MEM1 (arXiv 2506.15841): an agent that keeps a constant-size internal state instead of its whole history.

Each turn the model reads the task, its previous internal state, its previous action and the latest
observation, and writes a new internal state and one action (a search or the final answers).

    from memos.policies.mem1 import MEM1Agent, MultiObjectiveQA

    env = MultiObjectiveQA.from_locomo("locomo10.json", objectives=2)
    episode = MEM1Agent(llm, env).run()          # or: session.agent("mem1", env=env)
    episode.answers, episode.reward, measure(episode).peak
"""

from memos.policies.mem1.env import BM25, Action, Environment, MultiObjectiveQA
from memos.policies.mem1.format import (
    FORMATS,
    Document,
    ParsedObservation,
    ParsedTurn,
    format_documents,
    parse_observation,
    parse_turn,
    render_action,
    render_answers,
    render_observation,
    render_state,
)
from memos.policies.mem1.loop import (
    ConstantMemoryContext,
    Episode,
    FullHistoryContext,
    MEM1Agent,
    Turn,
    task_prompt,
)
from memos.policies.mem1.mask import StitchedMasks, build_masks
from memos.policies.mem1.meter import TokenReport, measure, measure_steps
from memos.policies.mem1.scoring import exact_match, multi_em, normalize_answer

__all__ = [
    "BM25",
    "FORMATS",
    "Action",
    "ConstantMemoryContext",
    "Document",
    "Environment",
    "Episode",
    "FullHistoryContext",
    "MEM1Agent",
    "MultiObjectiveQA",
    "ParsedObservation",
    "ParsedTurn",
    "StitchedMasks",
    "TokenReport",
    "Turn",
    "build_masks",
    "exact_match",
    "format_documents",
    "measure",
    "measure_steps",
    "multi_em",
    "normalize_answer",
    "parse_observation",
    "parse_turn",
    "render_action",
    "render_answers",
    "render_observation",
    "render_state",
    "task_prompt",
]
