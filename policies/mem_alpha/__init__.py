"""Mem-α (arXiv 2509.25911): an LLM keeps core, semantic and episodic memory with tools, chunk by chunk.

- memory.py: the memory state (core paragraph, item lists with short ids, rendering, search)
- backends.py: where it is kept: kernel cubes (the policy) or a scratch copy (RL rollouts)
- parse.py, tools.py: tool calls (OpenAI or ✿ text) and carrying them out
- prompt.py, agent.py: the per-chunk prompt and `MemAlphaPolicy`
- reward.py, env.py: the four-term reward and an RL environment over JSONL instances
"""

from __future__ import annotations

from .agent import MemAlphaPolicy, memorise
from .backends import KernelBackend, MemoryBackend, ScratchBackend, plan_ops
from .env import Instance, MemAlphaEnv, StepResult, load_instances, run_episode
from .memory import MAX_CORE_TOKENS, REGIONS, TRUNCATION_MARKER, Entry, MemoryState
from .parse import ParsedCall, calls_from_completion, parse_text_calls
from .reward import (
    BETA,
    GAMMA,
    RewardBreakdown,
    compute_reward,
    heuristic_type_judge,
    llm_answerer,
    llm_type_judge,
    normalize_answer,
    substring_score,
)
from .tools import TOOLS, WRITE_TOOLS, CallResult, ChunkStats, openai_tools, run_call, run_calls

__all__ = [
    "BETA",
    "GAMMA",
    "MAX_CORE_TOKENS",
    "REGIONS",
    "TOOLS",
    "TRUNCATION_MARKER",
    "WRITE_TOOLS",
    "CallResult",
    "ChunkStats",
    "Entry",
    "Instance",
    "KernelBackend",
    "MemAlphaEnv",
    "MemAlphaPolicy",
    "MemoryBackend",
    "MemoryState",
    "ParsedCall",
    "RewardBreakdown",
    "ScratchBackend",
    "StepResult",
    "calls_from_completion",
    "compute_reward",
    "heuristic_type_judge",
    "llm_answerer",
    "llm_type_judge",
    "load_instances",
    "memorise",
    "normalize_answer",
    "openai_tools",
    "parse_text_calls",
    "plan_ops",
    "run_call",
    "run_calls",
    "run_episode",
    "substring_score",
]
