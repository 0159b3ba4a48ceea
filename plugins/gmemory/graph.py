"""The query graph: an undirected, weighted graph over task records, and its h-hop neighbourhoods.

A new task is linked to each of its nearest earlier tasks whose cosine similarity reaches a
threshold (G-Memory: the 10 nearest, cosine >= 0.7); the edge weight is that similarity. Retrieval
expands the tasks nearest to a query by their neighbours up to `hop` edges away, so a related task
that is not itself near the query can still be found through the tasks between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class QueryGraph:
    """Nodes are task record ids; `adjacency[a][b]` is the similarity on the edge a-b (symmetric)."""

    def __init__(self) -> None:
        # invariant: adjacency[a][b] == adjacency[b][a] for every edge, no self-loops; insertion order kept
        self.adjacency: dict[str, dict[str, float]] = {}

    def add_node(self, node: str) -> None:
        """Add a node without edges (nothing happens when it exists)."""
        self.adjacency.setdefault(node, {})

    def add_edge(self, a: str, b: str, weight: float) -> None:
        """Link two existing nodes (an undirected edge carrying `weight`)."""
        if a == b:
            return
        self.adjacency[a][b] = weight
        self.adjacency[b][a] = weight

    def __contains__(self, node: object) -> bool:
        return node in self.adjacency

    def __len__(self) -> int:
        return len(self.adjacency)

    @property
    def nodes(self) -> list[str]:
        """Node ids in the order they were added."""
        return list(self.adjacency)

    def edges(self) -> list[tuple[str, str, float]]:
        """Each edge once, as (earlier node, later node, weight), in node order."""
        order = {node: i for i, node in enumerate(self.adjacency)}
        out = []
        for a, nbrs in self.adjacency.items():
            out.extend((a, b, w) for b, w in nbrs.items() if order[a] < order[b])
        return out

    def neighbours(self, node: str) -> list[str]:
        """The nodes one edge away, in the order their edges were added."""
        return list(self.adjacency.get(node, {}))

    def expand(self, seeds: Iterable[str], hop: int) -> list[str]:
        """The seeds and every node at most `hop` edges from one of them (breadth first, seeds first)."""
        seen: dict[str, None] = {}
        frontier = [s for s in seeds if s in self.adjacency]
        for node in frontier:
            seen.setdefault(node, None)
        for _ in range(max(hop, 0)):
            nxt = []
            for node in frontier:
                for nb in self.adjacency[node]:
                    if nb not in seen:
                        seen[nb] = None
                        nxt.append(nb)
            frontier = nxt
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        """The adjacency lists as plain JSON-ready data (orders kept, so a reload expands identically)."""
        return {"adjacency": [[node, [[nb, w] for nb, w in nbrs.items()]] for node, nbrs in self.adjacency.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryGraph:
        """Rebuild a graph written by `to_dict`."""
        graph = cls()
        for node, nbrs in data.get("adjacency", []):
            graph.adjacency[str(node)] = {str(nb): float(w) for nb, w in nbrs}
        return graph

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryGraph):
            return NotImplemented
        return self.to_dict() == other.to_dict()
