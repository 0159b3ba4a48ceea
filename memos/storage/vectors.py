"""The vector index: chromadb (embedded or server), embeddings always passed in, embedder id enforced."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memos.errors import BackendError, UserError

COLLECTION = "memos_cubes"


class VectorIndex:
    """One chromadb collection of cube vectors, tied to one embedder id and dimension.

    Vectors carry no metadata: the catalog decides which cubes a query may see (it is the source
    of truth) and the index only ranks, by exact search among given ids or by nearest neighbours.
    """

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

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors (in chunks the server accepts)."""
        if not ids:
            return
        if vectors.shape != (len(ids), self.dim):
            raise BackendError(f"vector shape {vectors.shape} does not match {len(ids)} ids of dim {self.dim}")
        step = 5000
        for start in range(0, len(ids), step):
            end = start + step
            self._collection.upsert(ids=list(ids[start:end]), embeddings=vectors[start:end])

    def delete(self, ids: Sequence[str]) -> None:
        """Remove vectors (ids that are not there are ignored)."""
        for start in range(0, len(ids), 5000):
            self._collection.delete(ids=list(ids[start : start + 5000]))

    def query(self, vector: np.ndarray, n: int, *, ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Nearest (id, cosine similarity) pairs, best first, optionally only among `ids`.

        An unrestricted query walks the HNSW graph (milliseconds); chromadb's metadata `where`
        filters scan every vector's metadata first (tens of milliseconds per 10k vectors), which is
        why filtering is left to the catalog.
        """
        if n <= 0 or (ids is not None and not ids):
            return []
        try:
            result = self._collection.query(
                query_embeddings=vector.reshape(1, -1),
                n_results=n,
                ids=list(ids) if ids is not None else None,
                include=["distances"],
            )
        except Exception:
            if ids is None:
                raise
            # some ids have no vector yet (a change committed, its vector step still queued): rank the rest
            indexed = self.existing(ids)
            present = [i for i in ids if i in indexed]
            if len(present) == len(ids):
                raise
            return self.query(vector, min(n, len(present)), ids=present)
        found = result["ids"][0]
        dists = result["distances"][0] if result["distances"] else [0.0] * len(found)
        return [(i, 1.0 - float(d)) for i, d in zip(found, dists, strict=True)]

    def get(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these ids (ids without one are left out)."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 5000):
            got = self._collection.get(ids=list(ids[start : start + 5000]), include=["embeddings"])
            for cube_id, vector in zip(got["ids"], got["embeddings"], strict=True):
                out[cube_id] = np.asarray(vector, dtype=np.float32)
        return out

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
