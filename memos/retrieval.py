"""Hybrid ranking: dense (vector index) and lexical (BM25) candidate lists fused by reciprocal rank."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memos.cube import MemCube
from memos.embed import Embedder
from memos.storage.catalog import Catalog, CubeFilter
from memos.storage.vectors import VectorIndex

#: BM25 scores below this come only from terms found in most cubes (FTS5 clamps their idf to ~0); when
#: some hits score above it, the rest carry no evidence and are dropped from the lexical list
MIN_LEXICAL_SCORE = 1e-3
#: a filter matching at most this many cubes is searched exactly among them (chromadb `ids`)
MAX_EXACT_CANDIDATES = 2000
#: the RRF constant of Cormack et al. (2009): damps the gap between the first few ranks
RRF_K = 60


@dataclass(frozen=True)
class Hit:
    """One recalled cube and why it ranked where it did."""

    cube: MemCube
    #: fused score (higher is better): sum over lists of weight / (RRF_K + rank)
    score: float
    #: cosine similarity to the query, when the dense list found it
    dense: float | None = None
    #: BM25 score (higher is better), when the lexical list found it
    lexical: float | None = None
    dense_rank: int | None = None
    lexical_rank: int | None = None


def fuse(
    ranked_lists: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = RRF_K
) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of ranked id lists; ties broken by id for determinism."""
    weights = weights or [1.0] * len(ranked_lists)
    scores: dict[str, float] = {}
    for ids, weight in zip(ranked_lists, weights, strict=True):
        for rank, cube_id in enumerate(ids, start=1):
            scores[cube_id] = scores.get(cube_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def hybrid_search(
    catalog: Catalog,
    vectors: VectorIndex,
    embedder: Embedder,
    query: str,
    flt: CubeFilter,
    k: int,
    *,
    num_candidates: int | None = None,
    dense_weight: float = 1.0,
    lexical_weight: float = 1.0,
) -> list[Hit]:
    """The k best cubes for a query under a filter, from both lists, fused."""
    pool = num_candidates or max(50, 4 * k)
    query_vector = embedder.embed([query])[0]
    dense = dense_candidates(catalog, vectors, query_vector, flt, pool)
    lexical = catalog.lexical(query, flt, pool)
    if any(s >= MIN_LEXICAL_SCORE for _, s in lexical):
        lexical = [(i, s) for i, s in lexical if s >= MIN_LEXICAL_SCORE]
    dense_ids = [i for i, _ in dense]
    lexical_ids = [i for i, _ in lexical]
    fused = fuse([dense_ids, lexical_ids], [dense_weight, lexical_weight])[:k]
    cubes = catalog.get([i for i, _ in fused])
    dense_score = dict(dense)
    lexical_score = dict(lexical)
    dense_rank = {i: r for r, i in enumerate(dense_ids, start=1)}
    lexical_rank = {i: r for r, i in enumerate(lexical_ids, start=1)}
    return [
        Hit(
            cube=cubes[i],
            score=score,
            dense=dense_score.get(i),
            lexical=lexical_score.get(i),
            dense_rank=dense_rank.get(i),
            lexical_rank=lexical_rank.get(i),
        )
        for i, score in fused
        if i in cubes
    ]


def dense_candidates(
    catalog: Catalog, vectors: VectorIndex, query_vector: np.ndarray, flt: CubeFilter, pool: int
) -> list[tuple[str, float]]:
    """Up to `pool` nearest cubes that match the filter, as (id, cosine), best first.

    The catalog decides what matches (it is the source of truth); the index only ranks. A
    selective filter is searched exactly among its matching ids; a broad one takes ever more
    nearest neighbours from the whole graph until `pool` of them pass the filter.
    """
    narrowing = flt.tags or flt.labels or flt.levels is not None or flt.event_from or flt.event_to or flt.ids
    if narrowing:
        bound = catalog.count_upto(flt, MAX_EXACT_CANDIDATES + 1)
    else:
        # status, kind and expiry rarely exclude much: the namespace count (read from an index alone)
        # is a close upper bound, and the broad path below stays exact whatever it says
        bound = catalog.count_in_namespaces_upto(flt.prefixes, MAX_EXACT_CANDIDATES + 1)
    if bound <= MAX_EXACT_CANDIDATES:
        candidates = catalog.ids(flt)
        return vectors.query(query_vector, min(pool, len(candidates)), ids=candidates) if candidates else []
    fetch = 4 * pool
    while True:
        nearest = vectors.query(query_vector, fetch)
        allowed = set(catalog.filter_ids([i for i, _ in nearest], flt))
        passed = [(i, s) for i, s in nearest if i in allowed]
        # fewer neighbours than asked for means the whole index has been seen
        if len(passed) >= pool or len(nearest) < fetch:
            return passed[:pool]
        fetch *= 4
