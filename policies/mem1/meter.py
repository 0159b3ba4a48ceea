"""MEM1's efficiency metrics (`inference/eval.py`): peak tokens per turn and the attention-dependency count.

A trajectory after its task prompt q is turns (t_j, r_j, i_j): internal state, action, information.
Both metrics leave q out (as eval.py does) and count tokens of concatenated text, with cl100k_base by
default (memos's token unit); eval.py counts with gpt-4o-mini's encoding, o200k_base, which memos also
ships: pass tokenizer="o200k_base" to reproduce its counts exactly.

* constant memory (MEM1): turn j holds t_{j-1} r_{j-1} i_{j-1} plus its new output t_j r_j;
* full context (baseline): turn j holds every earlier t r i plus t_j r_j.

peak = the largest turn. dependency = Σ over generated segments s (each t_j, r_j) of
len(s) · (tokens before s in its turn + len(s) // 2): roughly how many (query, key) pairs attention
computes for the generated tokens; information tokens are read, not generated, and are not summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from memos.tokens import Tokenizer, count_tokens

if TYPE_CHECKING:
    from memos.policies.mem1.loop import Episode

Step = tuple[str, str, str]


@dataclass(frozen=True)
class TokenReport:
    """Tokens held at each turn, their peak, and the dependency count."""

    per_turn: tuple[int, ...]
    peak: int
    dependency: int


def measure_steps(
    steps: Sequence[Step],
    *,
    context: Literal["constant", "full"] = "constant",
    tokenizer: Tokenizer | str | None = None,
) -> TokenReport:
    """Token report of a trajectory's (t_j, r_j, i_j) steps under constant memory or the full context."""
    per_turn: list[int] = []
    dependency = 0
    carried = ""
    for state, action, observation in steps:
        text = carried
        for generated in (state, action):
            length = count_tokens(generated, tokenizer)
            dependency += length * (count_tokens(text, tokenizer) + length // 2)
            text += generated
        per_turn.append(count_tokens(text, tokenizer))
        carried = (text if context == "full" else state + action) + observation
    return TokenReport(per_turn=tuple(per_turn), peak=max(per_turn, default=0), dependency=dependency)


def measure(episode: Episode, *, tokenizer: Tokenizer | str | None = None) -> TokenReport:
    """Token report of an episode, under the context it was run with."""
    return measure_steps(episode.steps(), context=episode.context, tokenizer=tokenizer)
