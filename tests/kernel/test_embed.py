"""Embedders: the local MiniLM model (offline, batched, order-preserving) and the hashing embedder."""

from __future__ import annotations

import numpy as np
import pytest

from memos.embed import HashingEmbedder, MiniLMEmbedder

TEXTS = [
    "I moved to Lisbon in May 2023.",
    "ok",
    "My sister Ana plays the cello in a youth orchestra every Saturday morning.",
    "We adopted a greyhound called Biscuit.",
]


def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    a = HashingEmbedder(64).embed(TEXTS)
    b = HashingEmbedder(64).embed(TEXTS)
    assert a.shape == (4, 64) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert HashingEmbedder(64).id == "hash-v1-64"


@pytest.mark.slow
def test_minilm_offline_batched_matches_one_by_one() -> None:
    embedder = MiniLMEmbedder(batch_size=2, dtype="float32")
    batched = embedder.embed(TEXTS)
    single = np.concatenate([embedder.embed([t]) for t in TEXTS])
    assert batched.shape == (4, 384)
    # length-sorted batching must hand rows back in the caller's order
    assert np.allclose(batched, single, atol=1e-5)
    sims = batched @ batched.T
    assert sims[0, 3] < sims[0, 0]
    bf16 = MiniLMEmbedder(dtype="bfloat16").embed(TEXTS)
    assert float((bf16 * batched).sum(axis=1).min()) > 0.999
