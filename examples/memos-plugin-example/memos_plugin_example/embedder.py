"""The `charfreq` embedder: letter and digit counts hashed into DIM buckets, L2-normalised; no model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from memos.errors import UserError

DEFAULT_DIM = 64


class CharFreqEmbedder:
    """Deterministic character-frequency vectors (memos' Embedder protocol: `id`, `dim`, `embed`)."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 2:
            raise UserError(f"the charfreq embedder needs at least 2 dimensions, got {dim}")
        self.dim = dim
        #: recorded with every vector collection, so a home built with another embedder is noticed
        self.id = f"charfreq-v1-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text: how often each letter or digit occurs, bucketed by code point, unit length."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for char in text.lower():
                if char.isalnum():
                    out[row, ord(char) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (out / norms).astype(np.float32)


def make_charfreq(settings: Any, arg: str) -> CharFreqEmbedder:
    """Build the embedder `charfreq` or `charfreq:DIM` names (memos passes its settings and the part after ':')."""
    if not arg.strip():
        return CharFreqEmbedder()
    try:
        return CharFreqEmbedder(int(arg))
    except ValueError:
        raise UserError(f"bad embedder 'charfreq:{arg}': the dimension must be an integer, e.g. charfreq:64") from None
