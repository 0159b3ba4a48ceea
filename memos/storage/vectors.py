"""The vector index: chromadb (embedded or server), embeddings always passed in, embedder id enforced."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from memos.errors import BackendError, UserError

COLLECTION = "memos_cubes"
#: a collection name a Chroma server accepts: 3-63 characters, letters, digits, '.', '_' or '-', alphanumeric ends
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
#: in an embedded index folder: the file whose lock orders the processes sharing it, holding a change counter
LOCK_FILE = ".memos-vectors.lock"
#: per embedded folder, in this process: the change counter last seen on disk, and how often it was reloaded
_seen: dict[str, int] = {}
_reloads: dict[str, int] = {}
_thread_locks: dict[str, threading.RLock] = {}
_registry_lock = threading.Lock()


def server_target(url: str) -> tuple[str, int, bool, str]:
    """(host, port, ssl, collection) of a Chroma server URL `http[s]://host[:port][/collection]`.

    The path names the collection, so several homes can share one server (default: memos_cubes).
    """
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"bad vector URL {url!r}: use http://host:port or http://host:port/collection")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    except ValueError:
        raise UserError(f"bad vector URL {url!r}: the port must be a number from 1 to 65535") from None
    name = parsed.path.strip("/") or COLLECTION
    if not _COLLECTION_NAME.match(name) or ".." in name:
        raise UserError(
            f"bad vector URL {url!r}: the collection {name!r} must be 3-512 letters, digits, '.', '_' or '-'"
        )
    return parsed.hostname, port, parsed.scheme == "https", name


class _FolderLock:
    """A cross-process lock on an embedded index folder (flock), whose file holds a change counter."""

    def __init__(self, folder: Path) -> None:
        self.key = str(folder.resolve())
        # a file object (unbuffered), so the descriptor is closed with it even when close() is never called
        self._file = os.fdopen(os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)
        self._fd = self._file.fileno()
        with _registry_lock:
            self.thread_lock = _thread_locks.setdefault(self.key, threading.RLock())

    @contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        """Hold the lock (shared for reads, exclusive for changes) against other threads and processes."""
        import fcntl

        with self.thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def generation(self) -> int:
        """The folder's change counter (0 when never changed)."""
        raw = os.pread(self._fd, 20, 0).strip()
        return int(raw) if raw.isdigit() else 0

    def bump(self) -> int:
        """Count one change (exclusive lock held) and return the new counter."""
        value = self.generation() + 1
        os.pwrite(self._fd, f"{value:020d}".encode(), 0)
        return value

    def close(self) -> None:
        """Release the lock file."""
        self._file.close()


class VectorIndex:
    """One chromadb collection of cube vectors, tied to one embedder id and dimension.

    Vectors carry no metadata: the catalog decides which cubes a query may see (it is the source
    of truth) and the index only ranks, by exact search among given ids or by nearest neighbours.

    An embedded index may be shared by several processes (one home opened by several programs):
    chromadb keeps its graph in each process's memory, so every call holds a lock on the folder
    (shared for reads, exclusive for changes), and a process whose copy is older than the last
    change on disk reloads it first.
    """

    def __init__(
        self, *, path: Path | None, url: str | None, embedder_id: str, dim: int, rebuild: bool = False
    ) -> None:
        try:
            import chromadb  # noqa: F401
        except ImportError as exc:  # pragma: no cover - chromadb is a core dependency
            raise BackendError("chromadb is not installed: `pip install chromadb==1.5.9`") from exc
        target = server_target(url) if url else None
        self.collection_name = target[3] if target else COLLECTION
        self._target = target
        self._path = path
        self._where = url or str(path)
        self.embedder_id = embedder_id
        self.dim = dim
        self._lock: _FolderLock | None = None
        self._reload_seen = 0
        if target is None:
            assert path is not None
            try:
                path.mkdir(parents=True, exist_ok=True)
                self._lock = _FolderLock(path)
            except OSError as exc:
                raise BackendError(f"cannot open the vector index at {path}: {exc}") from exc
        with self._guard(write=True):
            self._connect()
            meta = self._collection.metadata or {}
            if rebuild:
                self._reset()
            elif meta.get("embedder") != embedder_id or meta.get("dim") != dim:
                raise UserError(
                    f"the vector index was built with embedder {meta.get('embedder')!r} (dim {meta.get('dim')}), "
                    f"but {embedder_id!r} (dim {dim}) is configured: set MEMOS_EMBEDDER back, or run "
                    "`memos reindex` to rebuild the index with the new embedder"
                )

    def _connect(self) -> None:
        """(Re)create the client and open or create the collection."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if self._target:
                host, port, ssl, _ = self._target
                self._client: Any = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=chroma_settings)
            else:
                folder = self._lock.key if self._lock is not None else str(self._path)
                self._client = chromadb.PersistentClient(path=folder, settings=chroma_settings)
            self._collection: Any = self._client.get_or_create_collection(
                self.collection_name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedder": self.embedder_id, "dim": self.dim},
            )
        except Exception as exc:
            raise BackendError(f"cannot open the vector index at {self._where}: {exc}") from exc
        if self._lock is not None:
            self._reload_seen = _reloads.get(self._lock.key, 0)

    @contextmanager
    def _guard(self, *, write: bool) -> Iterator[None]:
        """Around one call on an embedded index: the folder lock, and a reload when another process changed it."""
        lock = self._lock
        if lock is None:
            yield
            return
        with lock.hold(exclusive=write):
            on_disk = lock.generation()
            if _seen.get(lock.key, on_disk) != on_disk:
                _reload_folder(lock.key)
            _seen[lock.key] = on_disk
            if self._reload_seen != _reloads.get(lock.key, 0) or not hasattr(self, "_collection"):
                self._connect()
            try:
                yield
            finally:
                if write:  # counted even when it failed half-way: the others must re-read what is there
                    _seen[lock.key] = lock.bump()

    def close(self) -> None:
        """Release the folder lock file (the index itself needs no closing)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace vectors (in chunks the server accepts)."""
        if not ids:
            return
        if vectors.shape != (len(ids), self.dim):
            raise BackendError(f"vector shape {vectors.shape} does not match {len(ids)} ids of dim {self.dim}")
        step = 5000
        with self._guard(write=True):
            for start in range(0, len(ids), step):
                end = start + step
                self._collection.upsert(ids=list(ids[start:end]), embeddings=vectors[start:end])

    def delete(self, ids: Sequence[str]) -> None:
        """Remove vectors (ids that are not there are ignored)."""
        if not ids:
            return
        with self._guard(write=True):
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
        with self._guard(write=False):
            try:
                result = self._query(vector, n, ids)
            except Exception:
                if ids is None:
                    raise
                # some ids have no vector yet (a change committed, its vector step still queued or landing
                # right now from another process): rank those that have one, exactly
                return self._exact(vector, n, ids)
        found = result["ids"][0]
        dists = result["distances"][0] if result["distances"] else [0.0] * len(found)
        return [(i, 1.0 - float(d)) for i, d in zip(found, dists, strict=True)]

    def _exact(self, vector: np.ndarray, n: int, ids: Sequence[str]) -> list[tuple[str, float]]:
        """Cosine similarity of the query to each stored vector among `ids`, best n first (ties by id)."""
        stored = self._get(ids)
        if not stored:
            return []
        names = list(stored)
        matrix = np.stack([stored[i] for i in names]).astype(np.float64)
        query = vector.astype(np.float64).reshape(-1)
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
        sims = (matrix @ query) / np.where(norms == 0, 1.0, norms)
        ranked = sorted(zip(names, sims.tolist(), strict=True), key=lambda h: (-h[1], h[0]))
        return [(i, float(s)) for i, s in ranked[:n]]

    def _query(self, vector: np.ndarray, n: int, ids: Sequence[str] | None) -> Any:
        return self._collection.query(
            query_embeddings=vector.reshape(1, -1),
            n_results=n,
            ids=list(ids) if ids is not None else None,
            include=["distances"],
        )

    def get(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these ids (ids without one are left out)."""
        with self._guard(write=False):
            return self._get(ids)

    def _get(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 5000):
            got = self._collection.get(ids=list(ids[start : start + 5000]), include=["embeddings"])
            for cube_id, vector in zip(got["ids"], got["embeddings"], strict=True):
                out[cube_id] = np.asarray(vector, dtype=np.float32)
        return out

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids have a vector."""
        with self._guard(write=False):
            return self._existing(ids)

    def _existing(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 5000):
            found.update(self._collection.get(ids=list(ids[start : start + 5000]), include=[])["ids"])
        return found

    def all_ids(self) -> set[str]:
        """Every id in the index."""
        out: set[str] = set()
        offset, page = 0, 10_000
        with self._guard(write=False):
            while True:
                batch = self._collection.get(include=[], limit=page, offset=offset)["ids"]
                out.update(batch)
                if len(batch) < page:
                    return out
                offset += page

    def count(self) -> int:
        """Number of vectors."""
        with self._guard(write=False):
            return int(self._collection.count())

    def reset(self) -> None:
        """Drop every vector (used when rebuilding the index for another embedder)."""
        with self._guard(write=True):
            self._reset()

    def _reset(self) -> None:
        self._client.delete_collection(self.collection_name)
        self._collection = self._client.create_collection(
            self.collection_name,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": self.embedder_id, "dim": self.dim},
        )


def _reload_folder(key: str) -> None:
    """Drop this process's in-memory copy of an embedded index folder, so the next client reads it from disk."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(key, None)
    SharedSystemClient._identifier_to_refcount.pop(key, None)
    if system is not None:
        system.stop()
    _reloads[key] = _reloads.get(key, 0) + 1
