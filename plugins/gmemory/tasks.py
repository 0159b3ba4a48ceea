"""Task records, their embeddings, the query graph over them, and G-Memory's hop-expanded retrieval.

A task record is what G-Memory keeps of one finished task: the task text, its description, the
trajectory ("> action" and observation lines of the steps kept), the label (success or failure),
the key steps and, for a failure, the reason it failed, and the interaction trace (state chain).
Each record is embedded once (the kernel's embedder, vectors L2-normalised, so cosine = dot) and
joins the query graph with an edge to each of its `link_k` nearest earlier records whose cosine
is at least `link_threshold`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memos.errors import UserError
from memos.plugins.gmemory.graph import QueryGraph
from memos.plugins.gmemory.trace import InteractionTrace

#: G-Memory's linking rule: each new task is linked to its 10 nearest earlier tasks with cosine >= 0.7
LINK_K = 10
LINK_THRESHOLD = 0.7


@dataclass
class TaskRecord:
    """One finished task as G-Memory stores it."""

    id: str
    task: str
    description: str
    trajectory: str
    success: bool
    key_steps: str = ""
    fail_reason: str = ""
    trace: InteractionTrace = field(default_factory=InteractionTrace)
    #: when the task ended (ISO 8601, from the kernel's clock)
    created: str = ""
    #: the memos cube that also holds this record, when G-Memory writes records into a namespace
    cube_id: str | None = None

    @property
    def label(self) -> str:
        """ "success" or "failure"."""
        return "success" if self.success else "failure"

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready data."""
        return {
            "id": self.id,
            "task": self.task,
            "description": self.description,
            "trajectory": self.trajectory,
            "success": self.success,
            "key_steps": self.key_steps,
            "fail_reason": self.fail_reason,
            "trace": self.trace.to_dict(),
            "created": self.created,
            "cube_id": self.cube_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        """Rebuild a record written by `to_dict`."""
        return cls(
            id=data["id"],
            task=data["task"],
            description=data.get("description", data["task"]),
            trajectory=data.get("trajectory", ""),
            success=bool(data["success"]),
            key_steps=data.get("key_steps", ""),
            fail_reason=data.get("fail_reason", ""),
            trace=InteractionTrace.from_dict(data.get("trace", {})),
            created=data.get("created", ""),
            cube_id=data.get("cube_id"),
        )


def encode_vector(vector: np.ndarray) -> str:
    """A float32 vector as base64 text (exact, and a quarter of the size of a JSON list)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dim: int) -> np.ndarray:
    """The vector `encode_vector` wrote; UserError when it does not have `dim` values."""
    vector = np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
    if vector.shape != (dim,):
        raise UserError(f"a stored G-Memory vector has {vector.size} values, expected {dim}: the state file is damaged")
    return vector


Scored = tuple[TaskRecord, float]


class TaskStore:
    """The task records in the order they were stored, their embeddings, and the query graph over them."""

    def __init__(self, dim: int, *, link_k: int = LINK_K, link_threshold: float = LINK_THRESHOLD) -> None:
        if link_k < 0:
            raise UserError(f"link_k must be at least 0, got {link_k}")
        if not -1.0 <= link_threshold <= 1.0:
            raise UserError(f"link_threshold is a cosine similarity between -1 and 1, got {link_threshold}")
        self.dim = dim
        self.link_k = link_k
        self.link_threshold = link_threshold
        self.records: list[TaskRecord] = []
        self.graph = QueryGraph()
        # invariant: _matrix row i is the embedding of records[i]; _index maps a record id to i
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._index

    def get(self, record_id: str) -> TaskRecord:
        """The record with this id; UserError when there is none."""
        if record_id not in self._index:
            raise UserError(f"no G-Memory task record {record_id!r}")
        return self.records[self._index[record_id]]

    def vector(self, record_id: str) -> np.ndarray:
        """The stored embedding of a record."""
        return self._matrix[self._index[record_id]]

    @property
    def matrix(self) -> np.ndarray:
        """All embeddings, one row per record in storage order."""
        return self._matrix

    def _check_vector(self, vector: np.ndarray) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise UserError(f"a task embedding must have {self.dim} values, got {vec.size}")
        return vec

    def add(self, record: TaskRecord, vector: np.ndarray) -> list[tuple[str, float]]:
        """Store a record and link it in the query graph; return the (record id, cosine) edges it got."""
        if record.id in self._index:
            raise UserError(f"G-Memory already holds a task record {record.id!r}")
        vec = self._check_vector(vector)
        links = [(earlier.id, sim) for earlier, sim in self.nearest(vec, self.link_k) if sim >= self.link_threshold]
        self._index[record.id] = len(self.records)
        self.records.append(record)
        self._matrix = np.vstack([self._matrix, vec[None, :]])
        self.graph.add_node(record.id)
        for other, sim in links:
            self.graph.add_edge(record.id, other, sim)
        return links

    def similarities(self, vector: np.ndarray) -> np.ndarray:
        """Cosine of the vector with every stored record, in storage order."""
        if not self.records:
            return np.zeros(0, dtype=np.float32)
        return self._matrix @ self._check_vector(vector)

    def nearest(
        self,
        vector: np.ndarray,
        k: int,
        *,
        success: bool | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Scored]:
        """The k records most similar to the vector (only one label when `success` is given), best first.

        Ties go to the record stored first, so the order never depends on anything but the data.
        """
        if k <= 0 or not self.records:
            return []
        sims = self.similarities(vector)
        skip = set(exclude)
        order = sorted(range(len(self.records)), key=lambda i: (-float(sims[i]), i))
        out: list[Scored] = []
        for i in order:
            record = self.records[i]
            if record.id in skip or (success is not None and record.success != success):
                continue
            out.append((record, float(sims[i])))
            if len(out) == k:
                break
        return out

    def hop_retrieve(
        self,
        vector: np.ndarray,
        wanted: Mapping[bool | None, int],
        *,
        hop: int = 1,
        threshold: float | None = None,
    ) -> dict[bool | None, list[Scored]]:
        """G-Memory's candidate retrieval: nearest tasks plus their h-hop neighbours, split by label.

        `wanted` maps a label (True: successes, False: failures, None: either) to how many
        candidates to return. The seeds are the max(total // 2, 1) records nearest to the vector;
        the candidates are the seeds and every record within `hop` edges of one in the query graph.
        A label short of its number is topped up with its nearest records not yet among the
        candidates. Each list is ordered by cosine (best first, ties to the earlier record),
        records under `threshold` are dropped, and the list is cut to its number.
        """
        total = sum(max(n, 0) for n in wanted.values())
        out: dict[bool | None, list[Scored]] = {label: [] for label in wanted}
        if total == 0 or not self.records:
            return out
        sims = self.similarities(vector)
        seeds = [record.id for record, _ in self.nearest(vector, max(total // 2, 1))]
        related = self.graph.expand(seeds, hop)
        for label, n in wanted.items():
            if n <= 0:
                continue
            chosen = [rid for rid in related if label is None or self.get(rid).success == label]
            if len(chosen) < n:
                # the reference code reassigns the list here (losing the hop candidates); extend it instead
                have = set(chosen)
                chosen.extend(r.id for r, _ in self.nearest(vector, n, success=label) if r.id not in have)
            ranked = sorted(chosen, key=lambda rid: (-float(sims[self._index[rid]]), self._index[rid]))
            scored = [(self.get(rid), float(sims[self._index[rid]])) for rid in ranked]
            if threshold is not None:
                scored = [(r, s) for r, s in scored if s >= threshold]
            out[label] = scored[:n]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Records (each with its embedding) and the query graph, as plain JSON-ready data."""
        return {
            "dim": self.dim,
            "link_k": self.link_k,
            "link_threshold": self.link_threshold,
            "records": [{**r.to_dict(), "vector": encode_vector(self.vector(r.id))} for r in self.records],
            "graph": self.graph.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskStore:
        """Rebuild a store written by `to_dict` (the graph as stored, never recomputed)."""
        store = cls(int(data["dim"]), link_k=int(data["link_k"]), link_threshold=float(data["link_threshold"]))
        vectors = []
        for i, item in enumerate(data.get("records", [])):
            record = TaskRecord.from_dict(item)
            store._index[record.id] = i
            store.records.append(record)
            vectors.append(decode_vector(item["vector"], store.dim))
        if vectors:
            store._matrix = np.stack(vectors)
        store.graph = QueryGraph.from_dict(data.get("graph", {}))
        missing = [rid for rid in store._index if rid not in store.graph]
        if missing or len(store.graph) != len(store.records):
            raise UserError("the G-Memory state file is damaged: its query graph and task records disagree")
        return store

    def ids(self) -> list[str]:
        """Record ids in storage order."""
        return [r.id for r in self.records]

    def by_ids(self, ids: Sequence[str]) -> list[TaskRecord]:
        """The records with these ids, in the given order (unknown ids skipped)."""
        return [self.records[self._index[i]] for i in ids if i in self._index]
