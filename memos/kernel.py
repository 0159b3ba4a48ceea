"""MemOS: the system-call surface. Wires catalog, vector index, embedder, tokens and governance."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from memos import inputs
from memos.clock import Clock, SystemClock
from memos.config import CONFIG_FILE, Settings
from memos.cube import (
    ACL,
    Header,
    Kind,
    Level,
    Lifecycle,
    MemCube,
    Namespace,
    Right,
    Status,
    ns_path,
    parse_namespace,
)
from memos.embed import Embedder, make_embedder
from memos.errors import Conflict, NotFound, UserError
from memos.governance import Governance
from memos.ids import new_id
from memos.llm import make_llm
from memos.llm.base import LLM
from memos.log import configure as configure_logging
from memos.log import get_logger
from memos.paging import Pager, PagingConfig, SegmentInfo
from memos.retrieval import Hit, hybrid_search
from memos.scheduler import Scheduler, WorkingSet
from memos.storage.blobs import BlobStore
from memos.storage.catalog import SEARCHABLE, Catalog, CubeFilter
from memos.storage.vectors import VectorIndex
from memos.tiers.activation import ActivationTier
from memos.tiers.adapters import AdapterTier
from memos.tokens import Tokenizer, get_tokenizer

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from memos.policies.mem1 import Environment, Episode
    from memos.prompt import Answer
    from memos.tiers.parametric import LoRASettings

log = get_logger("kernel")
#: every lifecycle status (blobs named by cubes of any status are kept)
ALL_STATUSES = tuple(s.value for s in Status)


@dataclass
class WriteRequest:
    """One memory to write (the keyword arguments of `write`, for batches)."""

    text: str
    level: Level | str = Level.short
    event_time: datetime | str | None = None
    provenance: Mapping[str, Any] | None = None
    tags: Sequence[str] | None = None
    labels: Mapping[str, str] | None = None
    expires_at: datetime | str | None = None
    ttl: float | None = None


@dataclass
class Consolidation:
    """What `consolidate` built: the derived cube, how many cubes it came from, and its build report."""

    cube: MemCube
    sources: int
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stats:
    """What a user can see of a home."""

    #: (kind, level, status) -> number of cubes
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    namespaces: list[tuple[str, int]] = field(default_factory=list)
    num_vectors: int = 0
    num_pending_vector_sync: int = 0
    #: paging state: segments active / paged out, knowledge counts, paging moves so far
    paging: dict[str, int] = field(default_factory=dict)
    #: the hottest mid-term segments
    hottest: list[SegmentInfo] = field(default_factory=list)
    embedder: str = ""
    home: str = ""

    @property
    def total(self) -> int:
        """Cubes of any status."""
        return sum(self.counts.values())


class MemOS:
    """A memos home: open it, then act as a user with `as_user`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        embedder: Embedder | None = None,
        tokenizer: Tokenizer | None = None,
        llm: LLM | None = None,
        rebuild_vectors: bool = False,
    ) -> None:
        self.settings = settings
        if not structlog.is_configured():
            # structlog's default prints every level to stdout: a library must not chatter there
            configure_logging(json=settings.log_json, level=settings.log_level)
        self.clock: Clock = clock or SystemClock()
        self.home = settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder or make_embedder(settings)
        # a local model counts tokens with its own tokenizer; otherwise the configured BPE encoding
        local_model = settings.llm.startswith("hf:")
        self.tokenizer = tokenizer or get_tokenizer(settings.llm if local_model else settings.tokenizer)
        self.catalog = Catalog(settings.catalog)
        self.vectors = VectorIndex(
            path=None if settings.vector_url else self.home / "vectors",
            url=settings.vector_url,
            embedder_id=self.embedder.id,
            dim=self.embedder.dim,
            rebuild=rebuild_vectors,
        )
        self.governance = Governance(self.catalog, self.clock)
        # serialises this process's writes so the outbox drain never races a write's own sync
        self._write_lock = threading.RLock()
        #: the model paging and promotion ask (continuity, summaries, profile); None: extractive fallbacks
        self.llm = llm if llm is not None else make_llm(settings)
        self.pager = Pager(self, PagingConfig.from_settings(settings), llm=self.llm)
        #: KV blocks and LoRA adapters live here, named by activation and parametric cubes
        self.blobs = BlobStore(self.home / "blobs")
        self.activation = ActivationTier(self)
        self.adapters = AdapterTier(self)
        self.scheduler = Scheduler(self)
        if rebuild_vectors:
            self._reindex_all()
        else:
            self.recover()

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        *,
        clock: Clock | None = None,
        embedder: Embedder | str | None = None,
        tokenizer: Tokenizer | None = None,
        llm: LLM | str | None = None,
        **overrides: Any,
    ) -> MemOS:
        """Open (creating if missing) a home; `embedder` and `llm` may be objects or specs; overrides are Settings."""
        if isinstance(embedder, str):
            overrides["embedder"] = embedder
            embedder = None
        if isinstance(llm, str):
            overrides["llm"] = llm
            llm = None
        settings = Settings.load(home, **overrides)
        config = settings.home / CONFIG_FILE
        try:
            settings.home.mkdir(parents=True, exist_ok=True)
            if not config.exists():
                config.write_text("# memos settings for this home; MEMOS_* environment variables override them\n")
        except OSError as exc:
            raise UserError(
                f"cannot create the memos home at {settings.home}: {exc.strerror}; pick another --home"
            ) from exc
        return cls(settings, clock=clock, embedder=embedder, tokenizer=tokenizer, llm=llm)

    def close(self) -> None:
        """Finish queued background paging, stop its worker and release the catalog's connections."""
        self.pager.close()
        self.catalog.close()
        self.vectors.close()

    def __enter__(self) -> MemOS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def emit(self, event: str, **fields: Any) -> None:
        """Tell the plugins of an event (memos_on_write, memos_on_recall, memos_on_task_end); never raises.

        The change the event reports is already committed: a plugin that fails is logged and skipped.
        """
        from memos.registry import get_registry

        try:
            getattr(get_registry().hook, event)(**fields)
        except Exception as exc:
            log.warning("a plugin failed on an event; the change itself is saved", hook=event, error=str(exc))

    def as_user(self, name: str) -> Session:
        """Act as a user (registered on first use)."""
        return Session(self, self.governance.ensure_user(name))

    def users(self) -> list[tuple[str, datetime]]:
        """Registered users with their creation times."""
        return self.catalog.list_users()

    # ---- catalog <-> vector index ------------------------------------------------------------

    def recover(self) -> int:
        """Bring the vector index in line with the catalog; return how many cubes were re-synced.

        Replays the outbox (changes committed to the catalog whose vector step may not have run),
        then, if the counts still disagree, compares the id sets in full.
        """
        synced = 0
        while pending := self.catalog.pending_vector_sync(limit=2000):
            self.sync_vectors(pending)
            synced += len(pending)
        expected = self.catalog.indexable_ids()
        if len(expected) != self.vectors.count():
            present = self.vectors.all_ids()
            want = set(expected)
            missing = [i for i in expected if i not in present]
            extra = [i for i in present if i not in want]
            self.sync_vectors(missing + extra)
            synced += len(missing) + len(extra)
            log.info("vector index repaired", missing=len(missing), extra=len(extra))
        return synced

    def sync_after_commit(self, ids: Sequence[str], vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """Sync vectors for a change that is already committed; a failure is logged, never raised.

        The change stays queued in the outbox, so `tick` or the next open indexes it; meanwhile
        the cube is found through the lexical index.
        """
        try:
            self.sync_vectors(ids, vectors)
        except Exception as exc:
            log.warning(
                "vector index not updated; the change is saved and `memos tick` will index it",
                num_cubes=len(ids),
                error=str(exc),
            )

    def sync_vectors(self, ids: Sequence[str], vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """Make the index hold exactly the catalog's current state for these ids, then clear the outbox."""
        if not ids:
            return
        # read the outbox before the catalog: a re-queue after this point survives the clear below
        generations = self.catalog.vector_sync_generations(ids)
        current = self.catalog.get(ids)
        keep = [c for c in current.values() if c.kind == Kind.plaintext and c.content and c.status.value in SEARCHABLE]
        kept = {c.id for c in keep}
        drop = [i for i in ids if i not in kept]
        if keep:
            given = vectors or {}
            todo = [c for c in keep if c.id not in given]
            fresh = (
                dict(zip([c.id for c in todo], self.embedder.embed([c.text for c in todo]), strict=True))
                if todo
                else {}
            )
            matrix = np.stack([given.get(c.id, fresh.get(c.id)) for c in keep])
            self.vectors.upsert([c.id for c in keep], matrix)
        if drop:
            self.vectors.delete(drop)
        self.catalog.clear_vector_sync(generations)

    def _reindex_all(self) -> None:
        ids = self.catalog.indexable_ids()
        for start in range(0, len(ids), 512):
            self.sync_vectors(ids[start : start + 512])
        # whatever is still queued is not indexable (forgotten, purged): syncing removes its vectors
        while pending := self.catalog.pending_vector_sync(limit=2000):
            self.sync_vectors(pending)

    def reindex(self) -> int:
        """Rebuild the vector index from the catalog with the configured embedder; return cubes indexed."""
        with self._write_lock:
            self.vectors.reset()
            self._reindex_all()
            return self.vectors.count()


class Session:
    """The system calls, made as one user; every call checks that user's rights."""

    def __init__(self, mos: MemOS, user: str) -> None:
        self.mos = mos
        self.user = user

    # ---- writes ------------------------------------------------------------------------------

    def write(
        self,
        namespace: Namespace | Sequence[str] | str,
        text: str,
        *,
        level: Level | str = Level.short,
        kind: Kind | str = Kind.plaintext,
        event_time: datetime | str | None = None,
        provenance: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        expires_at: datetime | str | None = None,
        ttl: float | None = None,
    ) -> MemCube:
        """Store one memory and return its cube."""
        if inputs.enum_value(Kind, kind, "kind") != Kind.plaintext:
            raise UserError(
                "only plaintext cubes can be written directly; activation and parametric cubes are built "
                "from plaintext ones: `memos migrate CUBE... --to KIND` or `memos consolidate NAMESPACE --to KIND`"
            )
        request = WriteRequest(text, level, event_time, provenance, tags, labels, expires_at, ttl)
        return self.write_many(namespace, [request])[0]

    def write_many(
        self, namespace: Namespace | Sequence[str] | str, items: Iterable[WriteRequest | Mapping[str, Any]]
    ) -> list[MemCube]:
        """Store many memories in one transaction (all or none), embedding them in one batch."""
        ns = parse_namespace(namespace)
        mos = self.mos
        mos.governance.require(self.user, ns, Right.write)
        now = mos.clock.now()
        requests = [item if isinstance(item, WriteRequest) else _request(item) for item in items]
        if not requests:
            return []
        cubes = [self._new_cube(ns, r, now) for r in requests]
        vectors = mos.embedder.embed([c.text for c in cubes])
        with mos._write_lock:
            _link_sessions(mos, ns, cubes)

            def store(conn: Connection) -> None:
                owner = mos.governance.claim(conn, self.user, ns)
                for cube in cubes:
                    cube.header.acl = ACL(owner=owner)
                mos.catalog.insert_cubes(conn, cubes)
                mos.catalog.audit_many(conn, at=now, actor=self.user, action="write", cubes_=cubes)

            mos.catalog.transact(store)
            mos.sync_after_commit([c.id for c in cubes], dict(zip([c.id for c in cubes], vectors, strict=True)))
        if mos.settings.auto_paging and any(c.level == Level.short for c in cubes):
            mos.pager.schedule(ns_path(ns))
        mos.emit("memos_on_write", user=self.user, cubes=cubes)
        return cubes

    def _new_cube(self, ns: Namespace, req: WriteRequest, now: datetime) -> MemCube:
        mos = self.mos
        body = inputs.text(req.text, mos.settings.max_text_chars)
        expires = inputs.when(req.expires_at, "expires_at")
        ttl = inputs.duration(req.ttl)
        if ttl is not None:
            expires = now + ttl
        return MemCube(
            id=new_id(),
            namespace=ns,
            kind=Kind.plaintext,
            level=inputs.enum_value(Level, req.level, "level"),
            content=body,
            header=Header(
                provenance=inputs.provenance(req.provenance, self.user),
                created_at=now,
                updated_at=now,
                event_time=inputs.when(req.event_time, "event_time"),
                lifecycle=Lifecycle(expires_at=expires),
                acl=ACL(owner=self.user),
                tags=inputs.tags(req.tags),
                labels=inputs.labels(req.labels),
                tokens=mos.tokenizer.count(body),
                embedder=mos.embedder.id,
            ),
        )

    def update(
        self,
        cube_id: str,
        text: str | None = None,
        *,
        tags: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        level: Level | str | None = None,
        event_time: datetime | str | None = None,
        expires_at: datetime | str | None = None,
        expected_version: int | None = None,
    ) -> MemCube:
        """Make a new version of a cube (the old one stays in its history)."""
        mos = self.mos
        with mos._write_lock:
            cube = self._load(cube_id, Right.write)
            if cube.status == Status.deleted:
                raise Conflict(f"cube {cube.id} was forgotten; it cannot be updated", cube_id=cube.id)
            if expected_version is not None and expected_version != cube.header.version:
                raise Conflict(
                    f"cube {cube.id} is at version {cube.header.version}, not {expected_version}: re-read it and retry",
                    cube_id=cube.id,
                )
            if all(v is None for v in (text, tags, labels, level, event_time, expires_at)):
                raise UserError("nothing to update: give new text, tags, labels, level, event_time or expires_at")
            now = mos.clock.now()
            header = cube.header.model_copy(deep=True)
            header.version = cube.header.version + 1
            header.previous = cube.header.version
            header.updated_at = now
            content = cube.content
            if text is not None:
                content = inputs.text(text, mos.settings.max_text_chars)
                header.tokens = mos.tokenizer.count(content)
                header.embedder = mos.embedder.id
            if tags is not None:
                header.tags = inputs.tags(tags)
            if labels is not None:
                header.labels = inputs.labels(labels)
            if event_time is not None:
                header.event_time = inputs.when(event_time, "event_time")
            if expires_at is not None:
                header.lifecycle.expires_at = inputs.when(expires_at, "expires_at")
            new = cube.model_copy(
                update={
                    "content": content,
                    "header": header,
                    "level": inputs.enum_value(Level, level, "level") if level is not None else cube.level,
                }
            )
            self._commit(new, action="update", now=now, new_version=True, detail={"version": header.version})
            return new

    def forget(self, cube_id: str, *, hard: bool = False) -> None:
        """Forget a cube: soft (status deleted, history kept) or hard (purged everywhere)."""
        mos = self.mos
        with mos._write_lock:
            cube = self._load(cube_id, Right.write)
            now = mos.clock.now()
            if hard:
                with mos.catalog.tx() as conn:
                    mos.catalog.purge_cube(conn, cube.id, now)
                    mos.catalog.audit(
                        conn,
                        at=now,
                        actor=self.user,
                        action="forget",
                        cube_id=cube.id,
                        ns=_path(cube),
                        detail={"hard": True},
                    )
                mos.sync_after_commit([cube.id])
            elif cube.status != Status.deleted:
                self._commit(_with_status(cube, Status.deleted, now), action="forget", now=now, detail={"hard": False})

    def restore(self, cube_id: str) -> MemCube:
        """Bring a soft-forgotten cube back to active."""
        mos = self.mos
        with mos._write_lock:
            cube = self._load(cube_id, Right.write)
            if cube.status != Status.deleted:
                raise Conflict(f"cube {cube.id} is {cube.status.value}, not forgotten")
            restored = _with_status(cube, Status.active, mos.clock.now())
            self._commit(restored, action="restore", now=restored.header.updated_at)
            return restored

    # ---- reads -------------------------------------------------------------------------------

    def get(self, cube_id: str) -> MemCube:
        """The current version of a cube."""
        return self._load(cube_id, Right.read)

    def history(self, cube_id: str) -> list[MemCube]:
        """Every version of a cube, oldest first (the last one is the current content)."""
        cube = self._load(cube_id, Right.read)
        return self.mos.catalog.versions(cube.id)

    def recall(
        self,
        namespace: Namespace | Sequence[str] | str,
        query: str,
        k: int = 10,
        *,
        level: Level | str | Sequence[Level | str] | None = None,
        kind: Kind | str = Kind.plaintext,
        tags: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        event_from: datetime | str | None = None,
        event_to: datetime | str | None = None,
        include_archived: bool = False,
    ) -> list[Hit]:
        """The k memories under a namespace that best match a query (dense + BM25, fused by rank)."""
        mos = self.mos
        ns = parse_namespace(namespace)
        query = inputs.text(query, mos.settings.max_text_chars, "query")
        k = inputs.top_k(k)
        flt = CubeFilter(
            prefixes=mos.governance.readable_prefixes(self.user, ns),
            levels=_levels(level),
            kinds=[inputs.enum_value(Kind, kind, "kind").value],
            statuses=SEARCHABLE if include_archived else (Status.active.value,),
            tags=inputs.tags(tags),
            labels=inputs.labels(labels),
            event_from=inputs.when(event_from, "event_from"),
            event_to=inputs.when(event_to, "event_to"),
            now=mos.clock.now(),
        )
        # over-fetch: knowledge promoted from a page (same words) is dropped when its page ranks above it
        hits = _without_copies(hybrid_search(mos.catalog, mos.vectors, mos.embedder, query, flt, 2 * k))[:k]
        mos.catalog.touch([h.cube.id for h in hits], mos.clock.now())
        mos.emit("memos_on_recall", user=self.user, query=query, hits=hits)
        return hits

    def context(
        self,
        namespace: Namespace | Sequence[str] | str,
        query: str,
        budget_tokens: int = 1500,
        *,
        pool: int | None = None,
    ) -> WorkingSet:
        """The working set for an LLM call: the cubes chosen for this query, packed into the token budget.

        Searches every level (paged-out memories included, and paged back in when used), ranks them
        (relevance, segment, neighbours, speaker, heat, recency, dates for *when* questions), drops
        near-duplicates and packs the best into `budget_tokens` counted with the kernel's tokenizer.
        """
        mos = self.mos
        ns = parse_namespace(namespace)
        query = inputs.text(query, mos.settings.max_text_chars, "query")
        if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or not 1 <= budget_tokens <= 1_000_000:
            raise UserError(f"the token budget must be an integer from 1 to 1000000, got {budget_tokens!r}")
        if pool is not None:
            pool = inputs.top_k(pool)
        mos.governance.require(self.user, ns, Right.read)
        return mos.scheduler.context(self.user, ns, query, budget_tokens, pool=pool)

    def list(
        self,
        namespace: Namespace | Sequence[str] | str,
        *,
        level: Level | str | Sequence[Level | str] | None = None,
        statuses: Sequence[Status | str] = (Status.active,),
        limit: int | None = None,
        order: str = "created",
    ) -> list[MemCube]:
        """Cubes under a namespace: oldest first ('created'), last changed first ('recent') or most used first."""
        if order not in ("created", "recent", "used"):
            raise UserError(f"unknown order {order!r}: use created, recent or used")
        ns = parse_namespace(namespace)
        flt = CubeFilter(
            prefixes=self.mos.governance.readable_prefixes(self.user, ns),
            levels=_levels(level),
            statuses=[inputs.enum_value(Status, s, "status").value for s in statuses],
        )
        return self.mos.catalog.select(flt, limit=limit, order=order)

    def stats(self, namespace: Namespace | Sequence[str] | str | None = None) -> Stats:
        """Counts per kind, level and status for what this user can read."""
        mos = self.mos
        if namespace is None:
            prefixes = mos.governance.visible_prefixes(self.user)
        else:
            prefixes = mos.governance.readable_prefixes(self.user, parse_namespace(namespace))
        return Stats(
            counts={(k, lv, s): n for k, lv, s, n in mos.catalog.stats(prefixes)},
            paging=mos.pager.counts(prefixes),
            hottest=mos.pager.hottest(prefixes, 5),
            namespaces=mos.catalog.namespaces(prefixes),
            num_vectors=mos.vectors.count(),
            num_pending_vector_sync=mos.catalog.count_pending_vector_sync(),
            embedder=mos.embedder.id,
            home=str(mos.home),
        )

    def audit(self, cube_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries (of one cube, or of the namespaces this user can read), newest first."""
        if cube_id is not None:
            self._load(cube_id, Right.read)
            return self.mos.catalog.audit_log(cube_id=inputs.cube_id(cube_id), limit=limit)
        visible = self.mos.governance.visible_prefixes(self.user)
        return self.mos.catalog.audit_log(actor_or_prefixes=(self.user, visible), limit=limit)

    # ---- governance --------------------------------------------------------------------------

    def share(self, namespace: Namespace | Sequence[str] | str, user: str, right: Right | str = Right.read) -> None:
        """Let another user read (or read and write) a namespace and everything below it."""
        self.mos.governance.share(self.user, parse_namespace(namespace), user, inputs.enum_value(Right, right, "right"))

    def revoke(self, namespace: Namespace | Sequence[str] | str, user: str) -> None:
        """Withdraw a grant made with share."""
        self.mos.governance.revoke(self.user, parse_namespace(namespace), user)

    def grants(self, namespace: Namespace | Sequence[str] | str) -> list[dict[str, Any]]:
        """Grants at or below a namespace this user owns."""
        ns = parse_namespace(namespace)
        self.mos.governance.require(self.user, ns, Right.read)
        return self.mos.catalog.grants_on("/".join(ns))

    # ---- lifecycle ---------------------------------------------------------------------------

    def tick(self) -> dict[str, int]:
        """Run lifecycle work now: expiry, paging and promotion, and pending vector syncs."""
        mos = self.mos
        now = mos.clock.now()
        with mos._write_lock:
            prefixes = mos.governance.visible_prefixes(self.user)
            due = mos.catalog.select(CubeFilter(prefixes=prefixes, statuses=SEARCHABLE, expiring_by=now))

            def expire(conn: Connection) -> None:
                for cube in sorted(due, key=lambda c: c.id):  # row locks in id order, as every writer takes them
                    expired = _with_status(cube, Status.expired, cube.header.updated_at)
                    mos.catalog.replace_cube(conn, expired, new_version=False)
                    mos.catalog.audit(conn, at=now, actor=self.user, action="expire", cube_id=cube.id, ns=_path(cube))

            mos.catalog.transact(expire)
            synced = mos.recover()
        namespaces = [ns for ns, _ in mos.catalog.namespaces(prefixes)]
        # an empty list pages nothing (None would mean every namespace of the home)
        paging = mos.pager.run(namespaces)
        activated = mos.activation.promote(self.user, namespaces)
        with mos._write_lock:
            named = mos.catalog.select(
                CubeFilter(kinds=[Kind.activation.value, Kind.parametric.value], statuses=ALL_STATUSES)
            )
            mos.blobs.sweep(c.blob for c in named if c.blob)
        mos.catalog.optimize_lexical()
        return {"expired": len(due), **asdict(paging), "activated": activated, "vector_synced": synced}

    # ---- tiers -------------------------------------------------------------------------------

    def migrate(self, cube_ids: Sequence[str], to: Kind | str) -> list[MemCube]:
        """Move cubes between kinds; the plaintext sources always remain, so nothing is lost.

        Plaintext cubes (of one namespace) -> activation or parametric: one derived cube built from them,
        in that order. An activation or parametric cube -> plaintext: it is retired and its sources are
        returned; -> the other derived kind: it is rebuilt there from its sources.
        """
        mos = self.mos
        target = inputs.enum_value(Kind, to, "kind")
        if isinstance(cube_ids, str) or not cube_ids:
            raise UserError("name at least one cube to migrate (a list of ids)")
        cubes = [self._load(i, Right.write) for i in dict.fromkeys(cube_ids)]
        kinds = {c.kind for c in cubes}
        if kinds == {Kind.plaintext}:
            if target == Kind.plaintext:
                raise UserError("these cubes are plaintext already")
            paths = {_path(c) for c in cubes}
            if len(paths) != 1:
                raise UserError(f"migrate cubes of one namespace at a time, not {', '.join(sorted(paths))}")
            return [self._derive(paths.pop(), [c.id for c in cubes], target)]
        if Kind.plaintext in kinds:
            raise UserError("migrate plaintext cubes and derived (activation/parametric) cubes in separate calls")
        out: list[MemCube] = []
        for cube in cubes:
            if cube.kind == target:
                raise UserError(f"cube {cube.id} is {target.value} already")
            if cube.status != Status.active:
                raise Conflict(f"cube {cube.id} is {cube.status.value}; only active cubes migrate")
            sources = [s for s in mos.catalog.get(cube.sources).values() if s.status == Status.active]
            sources.sort(key=lambda s: cube.sources.index(s.id))
            if target == Kind.plaintext:
                self._retire(cube)
                out.extend(sources)
            else:
                if not sources:
                    raise Conflict(f"cube {cube.id} has no active source cubes left to rebuild it from")
                built = self._derive(_path(cube), [s.id for s in sources], target)
                self._retire(cube)
                out.append(built)
        return out

    def consolidate(
        self,
        namespace: Namespace | Sequence[str] | str,
        to: Kind | str = Kind.parametric,
        *,
        level: Level | str | Sequence[Level | str] | None = Level.long,
        lora: LoRASettings | Mapping[str, Any] | None = None,
    ) -> Consolidation:
        """Turn a namespace's memories into a derived cube: a LoRA adapter (parametric) or its KV block (activation).

        parametric: trains on the namespace's active plaintext cubes of `level` (long-term by default).
        activation: builds the block from the cubes used most in working sets (or, when none qualify yet,
        the most recent cubes of `level`).
        """
        mos = self.mos
        ns = parse_namespace(namespace)
        target = inputs.enum_value(Kind, to, "kind")
        mos.governance.require(self.user, ns, Right.write)
        path = ns_path(ns)
        flt = CubeFilter(ns=path, kinds=[Kind.plaintext.value], levels=_levels(level))
        if target == Kind.parametric:
            from memos.tiers.parametric import LoRASettings

            settings = lora if isinstance(lora, LoRASettings) else inputs.model(LoRASettings, lora or {}, "lora")
            sources = mos.catalog.select(flt)
            if not sources:
                raise UserError(
                    f"{path} has no active {'/'.join(flt.levels or ['any'])}-term plaintext cubes to consolidate; "
                    "run `memos tick` to promote some, or pass --level all"
                )
            cube, report = mos.adapters.consolidate(self.user, path, [c.id for c in sources], settings)
            return Consolidation(cube=cube, sources=len(sources), report=asdict(report))
        if target == Kind.activation:
            chosen = mos.activation.candidates(path) or _recent_within(mos, flt)
            if not chosen:
                raise UserError(f"{path} has no active plaintext cubes to build an activation block from")
            cube = mos.activation.build(self.user, path, [c.id for c in chosen])
            return Consolidation(cube=cube, sources=len(chosen), report={"tokens": cube.header.tokens})
        raise UserError("consolidate builds activation or parametric cubes; use --to activation or --to parametric")

    def ask(
        self,
        namespace: Namespace | Sequence[str] | str,
        question: str,
        *,
        budget_tokens: int = 1500,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Answer:
        """Answer a question with memory: the working set as prompt, the namespace's KV block and adapters used."""
        from memos.prompt import answer

        return answer(
            self, namespace, question, budget_tokens=budget_tokens, max_tokens=max_tokens, temperature=temperature
        )

    def _derive(self, ns: str, ids: list[str], target: Kind) -> MemCube:
        if target == Kind.activation:
            return self.mos.activation.build(self.user, ns, ids)
        return self.mos.adapters.consolidate(self.user, ns, ids)[0]

    def _retire(self, cube: MemCube) -> None:
        if cube.kind == Kind.activation:
            self.mos.activation.retire(self.user, cube, "migrated")
        else:
            self.mos.adapters.retire(self.user, cube)

    # ---- archives ----------------------------------------------------------------------------

    def export(self, namespace: Namespace | Sequence[str] | str, path: str | Path) -> dict[str, Any]:
        """Write a namespace (and everything below it) with full history to a portable archive."""
        from memos.archive import export_namespace

        return export_namespace(self, parse_namespace(namespace), Path(path))

    def import_(self, path: str | Path, *, into: Namespace | Sequence[str] | str | None = None) -> dict[str, Any]:
        """Load an archive made by export, all or nothing (into another namespace with new ids if asked)."""
        from memos.archive import import_archive

        return import_archive(self, Path(path), parse_namespace(into) if into is not None else None)

    # ---- helpers -----------------------------------------------------------------------------

    def _commit(
        self,
        cube: MemCube,
        *,
        action: str,
        now: datetime,
        new_version: bool = False,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a cube's new state with its audit entry in one transaction, then sync its vector."""
        mos = self.mos

        def store(conn: Connection) -> None:
            mos.catalog.replace_cube(conn, cube, new_version=new_version)
            mos.catalog.audit(
                conn, at=now, actor=self.user, action=action, cube_id=cube.id, ns=_path(cube), detail=detail
            )

        mos.catalog.transact(store)
        mos.sync_after_commit([cube.id])

    def _load(self, cube_id: str, right: Right) -> MemCube:
        cid = inputs.cube_id(cube_id)
        cube = self.mos.catalog.get([cid]).get(cid)
        if cube is None:
            raise NotFound(f"no cube with id {cid}", cube_id=cid)
        self.mos.governance.require_cube(self.user, cube, right)
        return cube

    # ---- agents ------------------------------------------------------------------------------

    def agent(
        self,
        policy: str = "mem1",
        *,
        env: Environment,
        llm: LLM | None = None,
        max_turns: int = 6,
        format: str = "think",
        namespace: Namespace | Sequence[str] | str | None = None,
    ) -> Episode:
        """Run an agent loop in an environment with the kernel's LLM (or `llm`) and return its episode.

        "mem1" is MEM1's constant-memory loop: each turn sees the task, its previous internal state,
        action and observation only. With `namespace`, the episode's transcript is also written there
        as one long-term cube labelled type=trajectory.
        """
        if policy != "mem1":
            raise UserError(f"unknown agent policy {policy!r}: the only one available is 'mem1'", policy=policy)
        from memos.policies.mem1.plugin import run_episode

        episode = run_episode(self, env=env, llm=llm, max_turns=max_turns, format=format, namespace=namespace)
        self.mos.emit("memos_on_task_end", user=self.user, task=episode, success=bool(episode.reward))
        return episode


def _without_copies(hits: Sequence[Hit]) -> list[Hit]:
    """Drop each hit that only repeats the text of the pages it was derived from, ranked above it."""
    kept: list[Hit] = []
    seen: dict[str, str] = {}
    for hit in hits:
        sources = hit.cube.header.provenance.derived_from
        if sources and all(seen.get(i) == hit.cube.text for i in sources):
            continue
        kept.append(hit)
        seen[hit.cube.id] = hit.cube.text
    return kept


def _recent_within(mos: MemOS, flt: CubeFilter) -> list[MemCube]:
    """The most recent cubes matching `flt` whose lines fit one activation block, oldest first."""
    from memos.scheduler import render_line

    room = mos.settings.activation_block_tokens // 2
    chosen: list[MemCube] = []
    for cube in mos.catalog.select(flt, order="recent", limit=512):
        cost = mos.tokenizer.count(render_line(cube)) + 1
        if cost > room:
            break
        chosen.append(cube)
        room -= cost
    return chosen[::-1]


def _link_sessions(mos: MemOS, ns: Namespace, cubes: Sequence[MemCube]) -> None:
    """Set each page's `preceded_by`: the page before it in the same conversation session."""
    last: dict[str, str] = {}
    for cube in cubes:
        provenance = cube.header.provenance
        session = provenance.session_id
        if not session:
            continue
        if provenance.preceded_by is None:
            provenance.preceded_by = last.get(session) or mos.catalog.previous_in_session(ns_path(ns), session)
        last[session] = cube.id


def _with_status(cube: MemCube, status: Status, when: datetime) -> MemCube:
    """A copy of the cube with a new lifecycle status, stamped as updated at `when`."""
    header = cube.header.model_copy(deep=True)
    header.lifecycle.status = status
    header.updated_at = when
    return cube.model_copy(update={"header": header})


def _path(cube: MemCube) -> str:
    return "/".join(cube.namespace)


def _levels(level: Level | str | Sequence[Level | str] | None) -> list[str] | None:
    if level is None:
        return None
    values = [level] if isinstance(level, str | Level) else list(level)
    return [inputs.enum_value(Level, v, "level").value for v in values]


def _request(item: Mapping[str, Any]) -> WriteRequest:
    if not isinstance(item, Mapping):
        raise UserError(f"each item to write must be a mapping with a 'text' field, not {type(item).__name__}")
    unknown = set(item) - set(WriteRequest.__dataclass_fields__)
    if unknown:
        raise UserError(f"unknown write fields {sorted(unknown)}; use {sorted(WriteRequest.__dataclass_fields__)}")
    if "text" not in item:
        raise UserError("each item to write needs a 'text' field")
    return WriteRequest(**item)
