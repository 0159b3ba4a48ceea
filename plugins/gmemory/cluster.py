"""First-neighbour clustering of task embeddings, after FINCH (Sarfraz et al., CVPR 2019).

FINCH links every point to its first (nearest) neighbour and takes the connected components of
those links as clusters: i and j share a cluster when j is i's nearest neighbour, i is j's, or
they have the same nearest neighbour (all three are paths in the graph of links i - nn(i)).
Repeating this on the clusters' mean vectors gives coarser partitions, down to one cluster.

Here the neighbour is the highest cosine (vectors are L2-normalised), a tie goes to the lower
index, and clusters are numbered in the order of their first member, so the result depends on the
data alone. G-Memory's merge uses the first (finest) partition.
"""

from __future__ import annotations

import numpy as np


def first_neighbours(vectors: np.ndarray) -> np.ndarray:
    """For each row, the index of the most similar other row (cosine; ties to the lower index)."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    # argmax returns the first (lowest) index among equal maxima
    return np.argmax(sims, axis=1)


def first_neighbour_partition(vectors: np.ndarray) -> np.ndarray:
    """One FINCH step: cluster labels 0..c-1, numbered by each cluster's first member."""
    n = len(vectors)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in enumerate(first_neighbours(vectors)):
        a, b = root(i), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    labels = np.zeros(n, dtype=np.int64)
    numbering: dict[int, int] = {}
    for i in range(n):
        labels[i] = numbering.setdefault(root(i), len(numbering))
    return labels


def finch_partitions(vectors: np.ndarray) -> list[np.ndarray]:
    """Every FINCH level, finest first: each a label per row, until one cluster remains or nothing merges."""
    data = np.asarray(vectors, dtype=np.float64)
    if len(data) == 0:
        return []
    levels: list[np.ndarray] = []
    mapping = np.arange(len(data))
    points = data
    while True:
        step = first_neighbour_partition(points)
        if levels and step.max() + 1 == len(points):
            break
        mapping = step[mapping]
        levels.append(mapping.copy())
        count = int(step.max()) + 1
        if count == 1:
            break
        points = np.stack([points[step == c].mean(axis=0) for c in range(count)])
    return levels


def clusters(ids: list[str], vectors: np.ndarray) -> list[list[str]]:
    """The first FINCH partition of these ids as lists of ids, clusters in order of their first member."""
    if not ids:
        return []
    labels = finch_partitions(vectors)[0]
    out: list[list[str]] = [[] for _ in range(int(labels.max()) + 1)]
    for rid, label in zip(ids, labels, strict=True):
        out[int(label)].append(rid)
    return out
