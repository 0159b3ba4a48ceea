"""Masks for training on a stitched MEM1 trajectory q, t0, r0, i0, t1, r1, i1, ... in one forward pass.

Under constant memory, turn j was generated from a prompt holding only q, t_{j-1}, r_{j-1}, i_{j-1}.
Stitching every turn into one sequence and masking attention to what each turn's prompt held lets one
pass reproduce all turns. The rule here is the one consistent with inference (the loop in `loop.py`):

* q attends causally within q;
* t_j attends to q, t_{j-1}, r_{j-1}, i_{j-1}, and causally within t_j;
* r_j attends to the same, plus all of t_j, and causally within r_j;
* i_j attends to q, t_j, r_j, and causally within i_j: turn j+1's prompt is q t_j r_j i_j.

MEM1's released `attn_mask_utils.py` leaves t_{j-1} out of what t_j and r_j see, although its inference
keeps it in the prompt; this module keeps it, so training matches what the model reads at inference.

The loss covers the generated tokens only (every t_j and r_j), never q or the information blocks.
Position ids run contiguously over the stitched sequence, as in MEM1's trainer. This is an
approximation both ways share: at inference t_j sits right after q, here it sits after all earlier
turns, and a segment seen by two turns (t_j by r_j and by turn j+1) has one copy and one encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memos.errors import UserError

#: a stitched segment: kind ("q", "t", "r" or "i"), its turn (-1 for q), start and end (exclusive)
Segment = tuple[str, int, int, int]


@dataclass(frozen=True)
class StitchedMasks:
    """The masks of one stitched trajectory of length L."""

    #: [L, L] bool: row i may attend to column j
    attention: np.ndarray
    #: [L] bool: the token is trained on (a generated t or r token)
    loss: np.ndarray
    #: [L] int64: 0 .. L-1
    position_ids: np.ndarray
    segments: tuple[Segment, ...]


def build_masks(q: int, turns: Sequence[tuple[int, int, int]]) -> StitchedMasks:
    """Masks for a prompt of q tokens followed by turns of (len t_j, len r_j, len i_j) tokens (a length may be 0)."""
    lengths = [q, *(n for turn in turns for n in turn)]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in lengths):
        raise UserError(f"segment lengths must be non-negative integers, got q={q!r}, turns={list(turns)!r}")
    if any(len(turn) != 3 for turn in turns):
        raise UserError("each turn is (len t, len r, len i)")
    segments: list[Segment] = [("q", -1, 0, q)]
    position = q
    for j, turn in enumerate(turns):
        for kind, length in zip("tri", turn, strict=True):
            segments.append((kind, j, position, position + length))
            position += length
    size = position
    attention = np.zeros((size, size), dtype=bool)
    loss = np.zeros(size, dtype=bool)
    where = {(kind, j): (start, end) for kind, j, start, end in segments}

    def see(rows: tuple[int, int], kind: str, j: int) -> None:
        start, end = where.get((kind, j), (0, 0))
        attention[rows[0] : rows[1], start:end] = True

    for kind, j, start, end in segments:
        rows = (start, end)
        # causal within the segment itself
        attention[start:end, start:end] = np.tril(np.ones((end - start, end - start), dtype=bool))
        if kind == "q":
            continue
        see(rows, "q", -1)
        if kind == "i":
            see(rows, "t", j)
            see(rows, "r", j)
            continue
        for previous in "tri":
            see(rows, previous, j - 1)
        if kind == "r":
            see(rows, "t", j)
        loss[start:end] = True
    return StitchedMasks(
        attention=attention,
        loss=loss,
        position_ids=np.arange(size, dtype=np.int64),
        segments=tuple(segments),
    )
