"""The vector index: chromadb (embedded or server), embeddings always passed in, embedder id enforced."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memos.cube import MemCube
from memos.errors import BackendError, UserError
from memos.storage.catalog import CubeFilter
from memos.storage.schema import to_micros

COLLECTION = "memos_cubes"
#: stands in for "no expiry" / "no event time" so range filters stay plain comparisons
_FAR_FUTURE = 2**62
_NO_EVENT = -(2**62)


def cube_metadata(cube: MemCube) -> dict[str, Any]:
    """The fields a vector carries so queries can filter inside the index."""
    meta: dict[str, Any] = {f"ns{i}": seg for i, seg in enumerate(cube.namespace)}
    meta.update(
        depth=len(cube.namespace),
        kind=cube.kind.value,
        level=cube.level.value,
        status=cube.status.value,
        event_us=to_micros(cube.header.event_time) if cube.header.event_time else _NO_EVENT,
        expires_us=to_micros(cube.header.lifecycle.expires_at) if cube.header.lifecycle.expires_at else _FAR_FUTURE,
    )
    if cube.header.tags:
        meta["tags"] = list(cube.header.tags)
    for key, value in cube.header.labels.items():
        meta[f"label.{key}"] = value
    return meta


def _prefix_where(prefix: str) -> dict[str, Any]:
    parts = prefix.split("/")
    conds = [{f"ns{i}": seg} for i, seg in enumerate(parts)]
    return conds[0] if len(conds) == 1 else {"$and": conds}


def to_where(flt: CubeFilter) -> dict[str, Any] | None:
    """Translate a catalog filter into a chromadb `where` clause (None: no condition)."""
    conds: list[dict[str, Any]] = []
    if flt.prefixes is not None:
        if not flt.prefixes:
            raise UserError("no namespace to search")
        wheres = [_prefix_where(p) for p in flt.prefixes]
        conds.append(wheres[0] if len(wheres) == 1 else {"$or": wheres})
    for name, values in (("level", flt.levels), ("kind", flt.kinds), ("status", flt.statuses)):
        if values is not None:
            vals = list(values)
            conds.append({name: vals[0]} if len(vals) == 1 else {name: {"$in": vals}})
    conds.extend({"tags": {"$contains": tag}} for tag in flt.tags)
    conds.extend({f"label.{k}": v} for k, v in flt.labels.items())
    if flt.event_from is not None:
        conds.append({"event_us": {"$gte": to_micros(flt.event_from)}})
    if flt.event_to is not None:
        conds.append({"event_us": {"$lte": to_micros(flt.event_to)}})
    if flt.event_to is not None and flt.event_from is None:
        conds.append({"event_us": {"$gt": _NO_EVENT}})
    if flt.now is not None:
        conds.append({"expires_us": {"$gt": to_micros(flt.now)}})
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"$and": conds}


class VectorIndex:
    """One chromadb collection of cube vectors, tied to one embedder id and dimension."""

    def __init__(
        self, *, path: Path | None, url: str | None, embedder_id: str, dim: int, rebuild: bool = False
    ) -> None:
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
        except ImportError as exc:  # pragma: no cover - chromadb is a core dependency
            raise BackendError("chromadb is not installed: `pip install chromadb==1.5.9`") from exc
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if url:
                from urllib.parse import urlparse

                parsed = urlparse(url)
                self._client = chromadb.HttpClient(
                    host=parsed.hostname or "localhost",
                    port=parsed.port or 8000,
                    ssl=parsed.scheme == "https",
                    settings=chroma_settings,
                )
            else:
                assert path is not None
                path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(path), settings=chroma_settings)
            self._collection = self._client.get_or_create_collection(
                COLLECTION,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedder": embedder_id, "dim": dim},
            )
        except Exception as exc:
            raise BackendError(f"cannot open the vector index at {url or path}: {exc}") from exc
        self.embedder_id = embedder_id
        self.dim = dim
        meta = self._collection.metadata or {}
        if rebuild:
            self.reset()
        elif meta.get("embedder") != embedder_id or meta.get("dim") != dim:
            raise UserError(
                f"the vector index was built with embedder {meta.get('embedder')!r} (dim {meta.get('dim')}), "
                f"but {embedder_id!r} (dim {dim}) is configured: set MEMOS_EMBEDDER back, or run "
                "`memos reindex` to rebuild the index with the new embedder"
            )

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]]) -> None:
        """Insert or replace vectors (in chunks the server accepts)."""
        if not ids:
            return
        if vectors.shape != (len(ids), self.dim):
            raise BackendError(f"vector shape {vectors.shape} does not match {len(ids)} ids of dim {self.dim}")
        step = 5000
        for start in range(0, len(ids), step):
            end = start + step
            self._collection.upsert(
                ids=list(ids[start:end]), embeddings=vectors[start:end], metadatas=list(metadatas[start:end])
            )

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Replace the filterable fields of vectors that exist."""
        if ids:
            self._collection.update(ids=list(ids), metadatas=list(metadatas))

    def delete(self, ids: Sequence[str]) -> None:
        """Remove vectors (ids that are not there are ignored)."""
        for start in range(0, len(ids), 5000):
            self._collection.delete(ids=list(ids[start : start + 5000]))

    def query(
        self, vector: np.ndarray, n: int, *, where: dict[str, Any] | None = None, ids: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """Nearest (id, cosine similarity) pairs, best first, optionally only among `ids` or under `where`.

        An unrestricted query walks the HNSW graph (milliseconds); `where` makes chromadb scan the
        metadata of every vector first (tens of milliseconds per 10k vectors), so callers prefer
        `ids` for selective filters and over-fetch-then-filter for broad ones.
        """
        if n <= 0 or (ids is not None and not ids):
            return []
        result = self._collection.query(
            query_embeddings=vector.reshape(1, -1),
            n_results=n,
            where=where,
            ids=list(ids) if ids is not None else None,
            include=["distances"],
        )
        found = result["ids"][0]
        dists = result["distances"][0] if result["distances"] else [0.0] * len(found)
        return [(i, 1.0 - float(d)) for i, d in zip(found, dists, strict=True)]

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids have a vector."""
        found: set[str] = set()
        for start in range(0, len(ids), 5000):
            found.update(self._collection.get(ids=list(ids[start : start + 5000]), include=[])["ids"])
        return found

    def all_ids(self) -> set[str]:
        """Every id in the index."""
        out: set[str] = set()
        offset, page = 0, 10_000
        while True:
            batch = self._collection.get(include=[], limit=page, offset=offset)["ids"]
            out.update(batch)
            if len(batch) < page:
                return out
            offset += page

    def count(self) -> int:
        """Number of vectors."""
        return int(self._collection.count())

    def reset(self) -> None:
        """Drop every vector (used when rebuilding the index for another embedder)."""
        self._client.delete_collection(COLLECTION)
        self._collection = self._client.create_collection(
            COLLECTION,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": self.embedder_id, "dim": self.dim},
        )
