"""The catalog: the source of truth for cubes, versions, users, grants and the audit log (SQL)."""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from memos.cube import ACL, Header, Lifecycle, MemCube, Provenance, Usage, ns_path
from memos.errors import BackendError, Busy, Conflict, UserError
from memos.storage.schema import (
    audit,
    cube_labels,
    cube_tags,
    cube_versions,
    cubes,
    from_micros,
    grants,
    migrate,
    roots,
    to_micros,
    users,
    vector_outbox,
)

#: function words: they never help lexical ranking and their posting lists are the longest
_STOPWORD_TEXT = (
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has have "
    "having he her here hers herself him himself his how i if in into is it its itself just me more most "
    "my myself no nor not now of off on once only or other our ours ourselves out over own same she "
    "should so some such than that the their theirs them themselves then there these they this those "
    "through to too under until up very was we were what when where which while who whom why will with "
    "would you your yours yourself yourselves"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"\w+", re.UNICODE)
#: below this many indexed cubes every query term is kept (pruning only pays off, and df is only
#: meaningful, on larger collections)
MIN_DOCS_TO_PRUNE = 1000
#: on such collections, terms found in more than this share of the cubes are dropped while rarer ones
#: remain: their idf is small (at most log 9 against ~5-7 for a distinctive word) and their long posting
#: lists are most of a query's cost (on the store benchmark at 100k cubes: BM25 p95 23 -> 14 ms, the
#: same top-10 for all 200 queries)
MAX_TERM_SHARE = 0.10
#: and terms found in more than this many cubes, whatever the share: at a million cubes 10 % is still
#: 100k postings per term to score on every query (idf <= log 50 at the 2 % this is of 1M cubes)
MAX_TERM_DOCS = 20_000
#: seconds the collection size and the terms' document counts are reused between queries: counting
#: them reads the whole docsize table and each term's full posting list; a pruning decision from
#: slightly old counts is as good as a fresh one
TERM_STATS_TTL_S = 30.0
#: ... but only from this many indexed cubes on: smaller collections are counted afresh on every query
#: (cheap there, and exact right after a write)
TERM_STATS_CACHE_MIN_DOCS = 50_000
#: query words whose stems are remembered (the cache is emptied when it would grow past this)
MAX_CACHED_STEMS = 100_000
#: the lexical index's tokenizer, as migration 9 created cubes_fts with it: query words are stemmed with
#: the same one to look up their document counts
LEXICAL_TOKENIZER = "porter unicode61"
#: statuses whose text stays searchable (archived = paged out, found on demand)
SEARCHABLE = ("active", "archived")


@dataclass(frozen=True)
class CubeFilter:
    """Which cubes a query may see; every field narrows the set."""

    #: namespace paths; a cube matches when its namespace is one of these or below one (None: any)
    prefixes: Sequence[str] | None = None
    levels: Sequence[str] | None = None
    kinds: Sequence[str] | None = None
    statuses: Sequence[str] = ("active",)
    #: every tag listed must be on the cube
    tags: Sequence[str] = ()
    #: every key must carry exactly this value
    labels: Mapping[str, str] = field(default_factory=dict)
    event_from: datetime | None = None
    event_to: datetime | None = None
    #: when set, cubes whose expires_at is at or before this instant are left out
    now: datetime | None = None
    #: when set, only cubes whose expires_at is at or before this instant
    expiring_by: datetime | None = None
    ids: Sequence[str] | None = None
    #: when set, only cubes in exactly this namespace path (not below it)
    ns: str | None = None
    #: when set, only cubes used (by recall or a working set) at least this many times
    min_uses: int | None = None


def query_terms(text: str) -> list[str]:
    """The distinct lower-cased words of a query, stop words removed, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def prefix_clause(column: sa.ColumnElement[Any], prefix: str) -> sa.ColumnElement[bool]:
    """Namespace `prefix` itself or anything below it ('a/b' matches 'a/b' and 'a/b/c', not 'a/bc')."""
    # '0' is the character after '/', so the range holds exactly the paths that start with prefix + '/'
    return sa.or_(column == prefix, sa.and_(column >= prefix + "/", column < prefix + "0"))


_T = TypeVar("_T")
#: SQLSTATEs of a transaction the server aborted to break a deadlock or a serialization conflict
_RETRYABLE = frozenset({"40P01", "40001"})


class Catalog:
    """SQL catalog over SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: the URL as messages show it: the password hidden
        self.shown_url = _shown(url)
        # lexical term statistics reused between queries (see _term_stats)
        self._stats_at = -math.inf
        self._num_docs: int | None = None
        self._df: dict[str, int] = {}
        #: query word -> its tokens as the lexical index stores them (a pure function of the word)
        self._stems: dict[str, tuple[str, ...]] = {}
        self._stats_lock = threading.Lock()
        try:
            self.engine: Engine = self._make_engine(url)
            with self.engine.begin() as conn:
                migrate(conn)
        except sa.exc.ArgumentError as exc:
            raise UserError(f"bad catalog URL {self.shown_url!r}: {exc}") from exc
        except sa.exc.OperationalError as exc:
            raise BackendError(f"cannot open the catalog at {self.shown_url}: {_line(exc.orig)}") from exc
        self.dialect = self.engine.dialect.name

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a committed transaction survives a process crash (not a power cut)
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            return engine
        return sa.create_engine(url, pool_pre_ping=True)

    def close(self) -> None:
        """Release all connections."""
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A transaction: everything inside commits together or not at all."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE:
                raise Busy(f"catalog busy ({self.shown_url}): {_line(exc.orig)}; nothing was saved") from exc
            raise BackendError(f"catalog error ({self.shown_url}): {_line(exc.orig)}") from exc
        except sa.exc.DataError as exc:
            # a value the database refuses (too long for its column, out of range): nothing was written
            raise UserError(f"the catalog refused a value ({_line(exc.orig)}); nothing was saved") from exc

    def transact(self, body: Callable[[Connection], _T], *, tries: int = 5) -> _T:
        """Run body(conn) in a transaction, again (after a short random pause) when the database aborts it as Busy.

        The body must do nothing outside the transaction that a second run would repeat.
        """
        failed = 0
        while True:
            try:
                with self.tx() as conn:
                    return body(conn)
            except Busy:
                failed += 1
                if failed >= tries:
                    raise
                time.sleep(random.uniform(0.005, 0.02) * 2**failed)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads."""
        with self.engine.connect() as conn:
            yield conn

    # ---- cubes -------------------------------------------------------------------------------

    def insert_cube(self, conn: Connection, cube: MemCube) -> None:
        """Add a new cube with its first version snapshot, tags, labels and lexical entry."""
        self.insert_cubes(conn, [cube])

    def insert_cubes(self, conn: Connection, new: Sequence[MemCube]) -> None:
        """Add new cubes in one round of batched statements (one executemany per table)."""
        if not new:
            return
        conn.execute(sa.insert(cubes), [_to_row(c) for c in new])
        self._write_side_tables(conn, new, new_version=True)

    def replace_cube(self, conn: Connection, cube: MemCube, *, new_version: bool) -> None:
        """Overwrite a cube's current state; record a version snapshot when new_version."""
        rid = conn.execute(sa.select(cubes.c.rid).where(cubes.c.id == cube.id)).scalar_one()
        stmt = sa.update(cubes).where(cubes.c.id == cube.id)
        if new_version:
            # optimistic: the version it was made from must still be the stored one (another process may have
            # written a new version meanwhile; its row lock makes this wait, then see the change)
            made_from = cube.header.previous if cube.header.previous is not None else cube.header.version - 1
            stmt = stmt.where(cubes.c.version == made_from)
        if conn.execute(stmt.values(**_to_row(cube))).rowcount != 1:
            raise Conflict(
                f"cube {cube.id} changed while version {cube.header.version} was being made from it: re-read and retry",
                cube_id=cube.id,
            )
        conn.execute(sa.delete(cube_tags).where(cube_tags.c.cube_id == cube.id))
        conn.execute(sa.delete(cube_labels).where(cube_labels.c.cube_id == cube.id))
        self._lexical_delete(conn, rid)
        self._write_side_tables(conn, [cube], new_version=new_version)

    def _write_side_tables(self, conn: Connection, batch: Sequence[MemCube], *, new_version: bool) -> None:
        tags = [{"cube_id": c.id, "tag": t} for c in batch for t in c.header.tags]
        if tags:
            conn.execute(sa.insert(cube_tags), tags)
        labels = [{"cube_id": c.id, "key": k, "value": v} for c in batch for k, v in c.header.labels.items()]
        if labels:
            conn.execute(sa.insert(cube_labels), labels)
        if new_version:
            conn.execute(
                sa.insert(cube_versions),
                [
                    {
                        "cube_id": c.id,
                        "version": c.header.version,
                        "snapshot": c.model_dump_json(),
                        "recorded_at": to_micros(c.header.updated_at),
                    }
                    for c in batch
                ],
            )
        searchable = [c for c in batch if c.content and c.status in SEARCHABLE]
        if searchable:
            rids = self._rids(conn, [c.id for c in searchable])
            contexts = self._contexts(conn, searchable)
            self._lexical_insert(conn, [(rids[c.id], c.text, contexts.get(c.id, "")) for c in searchable])
        self.queue_vector_sync(conn, [c.id for c in batch], batch[0].header.updated_at)

    def _contexts(self, conn: Connection, batch: Sequence[MemCube]) -> dict[str, str]:
        """The text each cube follows in its conversation (its `preceded_by` page), from the batch or the table."""
        wanted = {c.id: p for c in batch if (p := c.header.provenance.preceded_by)}
        if not wanted:
            return {}
        texts = {c.id: c.text for c in batch}
        missing = sorted({p for p in wanted.values() if p not in texts})
        for start in range(0, len(missing), 900):
            chunk = missing[start : start + 900]
            texts.update(
                (i, t or "")
                for i, t in conn.execute(sa.select(cubes.c.id, cubes.c.content).where(cubes.c.id.in_(chunk)))
            )
        return {cid: texts.get(prev, "") for cid, prev in wanted.items()}

    def previous_in_session(self, ns: str, session_id: str, scan: int = 50) -> str | None:
        """The newest cube among the namespace's last `scan` cubes that carries this session id."""
        stmt = (
            sa.select(cubes.c.id, cubes.c.provenance).where(cubes.c.ns == ns).order_by(cubes.c.rid.desc()).limit(scan)
        )
        with self.read() as c:
            for cube_id, provenance in c.execute(stmt):
                if json.loads(provenance).get("session_id") == session_id:
                    return str(cube_id)
        return None

    def _rids(self, conn: Connection, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 900):
            chunk = list(ids[start : start + 900])
            out.update(
                (i, int(r)) for i, r in conn.execute(sa.select(cubes.c.id, cubes.c.rid).where(cubes.c.id.in_(chunk)))
            )
        return out

    def purge_cube(self, conn: Connection, cube_id: str, when: datetime) -> None:
        """Remove every trace of a cube except the audit log (hard forget)."""
        rid = conn.execute(sa.select(cubes.c.rid).where(cubes.c.id == cube_id)).scalar_one_or_none()
        if rid is not None:
            self._lexical_delete(conn, rid)
        for table in (cube_tags, cube_labels, cube_versions):
            conn.execute(sa.delete(table).where(table.c.cube_id == cube_id))
        conn.execute(sa.delete(cubes).where(cubes.c.id == cube_id))
        self.queue_vector_sync(conn, [cube_id], when)

    def get(
        self, ids: Sequence[str], conn: Connection | None = None, *, for_update: bool = False
    ) -> dict[str, MemCube]:
        """Current state of the given cubes, by id (missing ids are absent from the result).

        for_update locks their rows until the caller's transaction ends, in id order (PostgreSQL; SQLite
        has one writer at a time anyway), so that a check made on them still holds when they are written.
        """
        if not ids:
            return {}
        out: dict[str, MemCube] = {}
        wanted = sorted(set(ids)) if for_update else list(ids)
        with self._conn(conn) as c:
            for start in range(0, len(wanted), 500):
                stmt = sa.select(cubes).where(cubes.c.id.in_(wanted[start : start + 500]))
                if for_update:
                    stmt = stmt.order_by(cubes.c.id).with_for_update()
                for row in c.execute(stmt).mappings():
                    out[row["id"]] = _from_row(row)
        return out

    def select(
        self,
        flt: CubeFilter,
        *,
        limit: int | None = None,
        order: str = "created",
        conn: Connection | None = None,
    ) -> list[MemCube]:
        """Cubes matching a filter, oldest first by creation ('recent': last updated first; 'used': most used first)."""
        order_by = {
            "created": [cubes.c.created_at, cubes.c.id],
            "recent": [cubes.c.updated_at.desc(), cubes.c.id.desc()],
            "used": [cubes.c.access_count.desc(), cubes.c.last_access.desc(), cubes.c.id],
        }[order]
        stmt = sa.select(cubes).where(self.where(flt)).order_by(*order_by)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._conn(conn) as c:
            return [_from_row(row) for row in c.execute(stmt).mappings()]

    def count(self, flt: CubeFilter, conn: Connection | None = None) -> int:
        """Number of cubes matching a filter."""
        with self._conn(conn) as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(cubes).where(self.where(flt))).scalar_one())

    def filter_ids(self, ids: Sequence[str], flt: CubeFilter) -> list[str]:
        """The ids that also match the filter, in the order given."""
        if not ids:
            return []
        keep: set[str] = set()
        with self.read() as c:
            for start in range(0, len(ids), 900):
                chunk = list(ids[start : start + 900])
                stmt = sa.select(cubes.c.id).where(cubes.c.id.in_(chunk)).where(self.where(flt))
                keep.update(c.execute(stmt).scalars())
        return [i for i in ids if i in keep]

    def count_upto(self, flt: CubeFilter, limit: int) -> int:
        """Number of cubes matching a filter, counting no further than `limit`."""
        inner = sa.select(sa.literal(1)).select_from(cubes).where(self.where(flt)).limit(limit).subquery()
        with self.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())

    def existing_external_ids(self, ns: str, external_ids: Sequence[str]) -> set[str]:
        """Which of these external ids already name a cube (of any status) in exactly this namespace."""
        found: set[str] = set()
        with self.read() as c:
            for start in range(0, len(external_ids), 900):
                chunk = list(external_ids[start : start + 900])
                stmt = sa.select(cubes.c.external_id).where(cubes.c.ns == ns, cubes.c.external_id.in_(chunk))
                found.update(c.execute(stmt).scalars())
        return found

    def count_in_namespaces_upto(self, prefixes: Sequence[str] | None, limit: int) -> int:
        """Cubes of any status under the namespaces, counting no further than `limit` (index only)."""
        stmt = sa.select(sa.literal(1)).select_from(cubes)
        if prefixes is not None:
            stmt = stmt.where(sa.or_(sa.false(), *(prefix_clause(cubes.c.ns, p) for p in prefixes)))
        inner = stmt.limit(limit).subquery()
        with self.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())

    def ids(self, flt: CubeFilter, limit: int | None = None) -> list[str]:
        """Ids of the cubes matching a filter."""
        stmt = sa.select(cubes.c.id).where(self.where(flt))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.read() as c:
            return list(c.execute(stmt).scalars())

    def versions(self, cube_id: str) -> list[MemCube]:
        """Every recorded version of a cube, oldest first."""
        with self.read() as c:
            rows = c.execute(
                sa.select(cube_versions.c.snapshot)
                .where(cube_versions.c.cube_id == cube_id)
                .order_by(cube_versions.c.version)
            ).scalars()
            return [MemCube.model_validate_json(s) for s in rows]

    def where(self, flt: CubeFilter) -> sa.ColumnElement[bool]:
        """The SQL condition a filter stands for."""
        conds: list[sa.ColumnElement[bool]] = []
        if flt.ids is not None:
            conds.append(cubes.c.id.in_(list(flt.ids)))
        if flt.prefixes is not None:
            conds.append(sa.or_(sa.false(), *(prefix_clause(cubes.c.ns, p) for p in flt.prefixes)))
        if flt.ns is not None:
            conds.append(cubes.c.ns == flt.ns)
        if flt.min_uses is not None:
            conds.append(cubes.c.access_count >= flt.min_uses)
        if flt.levels is not None:
            conds.append(cubes.c.level.in_(list(flt.levels)))
        if flt.kinds is not None:
            conds.append(cubes.c.kind.in_(list(flt.kinds)))
        conds.append(cubes.c.status.in_(list(flt.statuses)))
        for tag in flt.tags:
            conds.append(sa.exists().where(sa.and_(cube_tags.c.cube_id == cubes.c.id, cube_tags.c.tag == tag)))
        for key, value in flt.labels.items():
            conds.append(
                sa.exists().where(
                    sa.and_(
                        cube_labels.c.cube_id == cubes.c.id,
                        cube_labels.c.key == key,
                        cube_labels.c.value == value,
                    )
                )
            )
        if flt.event_from is not None:
            conds.append(cubes.c.event_time >= to_micros(flt.event_from))
        if flt.event_to is not None:
            conds.append(cubes.c.event_time <= to_micros(flt.event_to))
        if flt.now is not None:
            conds.append(sa.or_(cubes.c.expires_at.is_(None), cubes.c.expires_at > to_micros(flt.now)))
        if flt.expiring_by is not None:
            conds.append(cubes.c.expires_at <= to_micros(flt.expiring_by))
        return sa.and_(sa.true(), *conds)

    def touch(self, ids: Sequence[str], when: datetime) -> None:
        """Count one access for each cube and stamp the access time."""
        if not ids:
            return
        with self.tx() as conn:
            conn.execute(
                sa.update(cubes)
                .where(cubes.c.id.in_(list(ids)))
                .values(access_count=cubes.c.access_count + 1, last_access=to_micros(when))
            )

    def stats(self, prefixes: Sequence[str] | None) -> list[tuple[str, str, str, int]]:
        """(kind, level, status, count) rows for the cubes under the given namespaces."""
        flt = CubeFilter(prefixes=prefixes, statuses=("active", "archived", "expired", "deleted"))
        with self.read() as c:
            stmt = (
                sa.select(cubes.c.kind, cubes.c.level, cubes.c.status, sa.func.count())
                .where(self.where(flt))
                .group_by(cubes.c.kind, cubes.c.level, cubes.c.status)
                .order_by(cubes.c.kind, cubes.c.level, cubes.c.status)
            )
            return [(k, lv, s, int(n)) for k, lv, s, n in c.execute(stmt)]

    # ---- lexical index -----------------------------------------------------------------------

    def _lexical_insert(self, conn: Connection, rows: Sequence[tuple[int, str, str]]) -> None:
        if self.dialect == "sqlite":
            conn.exec_driver_sql("INSERT INTO cubes_fts(rowid, content, context) VALUES (?, ?, ?)", list(rows))
        else:
            conn.execute(
                sa.text(
                    "INSERT INTO cubes_fts (rid, tsv, ctx) VALUES "
                    "(:rid, to_tsvector('english', :t), to_tsvector('english', :c))"
                ),
                [{"rid": rid, "t": text, "c": context} for rid, text, context in rows],
            )

    def _lexical_delete(self, conn: Connection, rid: int) -> None:
        if self.dialect == "sqlite":
            conn.exec_driver_sql("DELETE FROM cubes_fts WHERE rowid = ?", (rid,))
        else:
            conn.execute(sa.text("DELETE FROM cubes_fts WHERE rid = :rid"), {"rid": rid})

    def lexical(
        self, query: str, flt: CubeFilter, limit: int, *, context_weight: float = 0.0
    ) -> list[tuple[str, float]]:
        """BM25-ranked (id, score) pairs, best first; higher score is better.

        `context_weight` > 0 also matches a page by the text it follows in its conversation (the
        `context` column), weighted against its own text (weight 1); 0 searches its own text only.
        """
        terms = query_terms(query)
        if not terms:
            return []
        fts = sa.table("cubes_fts", sa.column("rowid"), sa.column("rid"), sa.column("tsv"), sa.column("ctx"))
        if self.dialect == "sqlite":
            return self._lexical_sqlite(self._informative_terms(terms), flt, limit, context_weight)
        else:
            tsq = sa.func.to_tsquery("english", " | ".join(terms))
            score = sa.func.ts_rank_cd(fts.c.tsv, tsq)
            matched = fts.c.tsv.op("@@")(tsq)
            if context_weight > 0:
                ctx = sa.func.coalesce(fts.c.ctx, sa.func.to_tsvector("english", ""))
                score = score + context_weight * sa.func.ts_rank_cd(ctx, tsq)
                matched = sa.or_(matched, ctx.op("@@")(tsq))
            stmt = (
                sa.select(cubes.c.id, score.label("s"))
                .select_from(fts.join(cubes, cubes.c.rid == fts.c.rid))
                .where(matched)
                .where(self.where(flt))
                .order_by(score.desc(), cubes.c.id)
                .limit(limit)
            )
        with self.read() as c:
            return [(cid, float(s)) for cid, s in c.execute(stmt)]

    def _lexical_sqlite(
        self, terms: list[str], flt: CubeFilter, limit: int, context_weight: float
    ) -> list[tuple[str, float]]:
        # any term may match (OR); BM25 rewards matching more of them. bm25() is lower-is-better.
        match, weights = _fts_query(terms, context_weight)
        with self.read() as c:
            # first the best matches of the whole index, filtered afterwards: scoring without a join is
            # several times faster, and for the usual broad filter most of them pass
            fetch = 4 * limit
            top = c.exec_driver_sql(
                "SELECT rowid, bm25(cubes_fts, ?, ?) AS s FROM cubes_fts WHERE cubes_fts MATCH ? ORDER BY s LIMIT ?",
                (*weights, match, fetch),
            ).all()
            rid_to_id: dict[int, str] = {}
            for start in range(0, len(top), 900):
                chunk = [rid for rid, _ in top[start : start + 900]]
                stmt = sa.select(cubes.c.rid, cubes.c.id).where(cubes.c.rid.in_(chunk)).where(self.where(flt))
                rid_to_id.update((int(r), i) for r, i in c.execute(stmt))
            kept = sorted(((rid_to_id[r], -float(s)) for r, s in top if r in rid_to_id), key=lambda h: (-h[1], h[0]))
            if len(kept) >= limit or len(top) < fetch:
                return kept[:limit]
            # a selective filter: score only the cubes it admits
            fts = sa.table("cubes_fts", sa.column("rowid"))
            score = sa.func.bm25(sa.literal_column("cubes_fts"), *weights)
            stmt = (
                sa.select(cubes.c.id, score.label("s"))
                .select_from(fts.join(cubes, cubes.c.rid == fts.c.rowid))
                .where(sa.literal_column("cubes_fts").op("MATCH")(match))
                .where(self.where(flt))
                .order_by(score, cubes.c.id)
                .limit(limit)
            )
            return [(cid, -float(s)) for cid, s in c.execute(stmt)]

    def lexical_local(
        self, query: str, flt: CubeFilter, limit: int, *, context_weight: float = 0.0
    ) -> list[tuple[str, float]]:
        """`lexical`, re-scored with term statistics counted in the filter's namespaces, not the whole index.

        BM25's idf says how rare a word is; in a home shared by many users a word rare in one person's
        memory can be common overall (a friend's name, a hobby) and the other way round. The best
        `limit` hits are re-scored term by term: FTS5's per-term BM25 divided by the global idf and
        multiplied by the idf among the namespaces' own rows. SQLite only (PostgreSQL's ts_rank has
        no idf); elsewhere, and without namespaces, the hits are returned as `lexical` ranks them.
        """
        hits = self.lexical(query, flt, limit, context_weight=context_weight)
        if self.dialect != "sqlite" or not hits or not flt.prefixes:
            return hits
        terms = self._informative_terms(query_terms(query))
        fts = sa.literal_column("cubes_fts")
        fts_rows = sa.table("cubes_fts", sa.column("rowid"))
        docsize = sa.table("cubes_fts_docsize", sa.column("id"))
        in_namespaces = sa.or_(*(prefix_clause(cubes.c.ns, p) for p in flt.prefixes))
        with self.read() as c:
            rids = self._rids(c, [i for i, _ in hits])
            marks = ",".join("?" for _ in rids)
            total = c.exec_driver_sql("SELECT count(*) FROM cubes_fts_docsize").scalar_one()
            local_total = c.execute(
                sa.select(sa.func.count())
                .select_from(docsize.join(cubes, cubes.c.rid == docsize.c.id))
                .where(in_namespaces)
            ).scalar_one()
            scores = dict.fromkeys(rids.values(), 0.0)
            for term in terms:
                match, weights = _fts_query([term], context_weight)
                everywhere = c.exec_driver_sql(
                    "SELECT count(*) FROM cubes_fts WHERE cubes_fts MATCH ?", (match,)
                ).scalar_one()
                if not everywhere:
                    continue
                local = c.execute(
                    sa.select(sa.func.count())
                    .select_from(fts_rows.join(cubes, cubes.c.rid == fts_rows.c.rowid))
                    .where(fts.op("MATCH")(match))
                    .where(in_namespaces)
                ).scalar_one()
                factor = _fts_idf(local_total, local) / _fts_idf(total, everywhere) if local else 0.0
                rows = c.exec_driver_sql(
                    "SELECT rowid, bm25(cubes_fts, ?, ?) FROM cubes_fts"
                    f" WHERE cubes_fts MATCH ? AND rowid IN ({marks})",
                    (*weights, match, *rids.values()),
                )
                for rid, score in rows:
                    scores[int(rid)] -= float(score) * factor  # bm25() is lower-is-better
        rescored = [(cube_id, scores[rid]) for cube_id, rid in rids.items()]
        return sorted(rescored, key=lambda h: (-h[1], h[0]))

    def _informative_terms(self, terms: list[str]) -> list[str]:
        """Drop the terms found in more than MAX_TERM_SHARE (or MAX_TERM_DOCS) of the cubes.

        When every term is that common, the rarest one alone is kept: scoring all of them would read
        a large part of the index for hits that share only common words with the query.
        """
        num_docs, df = self._term_stats(terms)
        if num_docs < MIN_DOCS_TO_PRUNE:
            return terms
        most = min(MAX_TERM_SHARE * num_docs, MAX_TERM_DOCS)
        kept = [t for t in terms if df[t] <= most]
        return kept or [min(terms, key=lambda t: df[t])]

    def _term_stats(self, terms: list[str]) -> tuple[int, dict[str, int]]:
        """The number of indexed cubes and each term's document count, reused for TERM_STATS_TTL_S.

        The index holds stems ("parties" is indexed as "parti"), so a term is counted by its stems; a
        term the tokenizer splits ("e_mail") counts as its rarest part, an upper bound on the phrase's.
        """
        # one query at a time reads or refreshes the shared counts (threads may recall concurrently)
        with self.read() as c, self._stats_lock:
            now = time.monotonic()
            small = self._num_docs is not None and self._num_docs < TERM_STATS_CACHE_MIN_DOCS
            if small or now - self._stats_at > TERM_STATS_TTL_S:
                self._stats_at, self._num_docs, self._df = now, None, {}
            stems = self._stems_of(c, terms)
            missing = list(dict.fromkeys(st for t in terms for st in stems[t] if st not in self._df))
            if missing:
                marks = ",".join("?" for _ in missing)
                found = dict(
                    c.exec_driver_sql(
                        f"SELECT term, doc FROM cubes_fts_vocab WHERE term IN ({marks})", tuple(missing)
                    ).all()
                )
                self._df.update({st: int(found.get(st, 0)) for st in missing})
            if self._num_docs is None:
                self._num_docs = int(c.exec_driver_sql("SELECT count(*) FROM cubes_fts_docsize").scalar_one())
            return self._num_docs, {t: min((self._df[st] for st in stems[t]), default=0) for t in terms}

    def _stems_of(self, c: Connection, terms: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Each term's tokens as the lexical index stores them, from a scratch FTS5 table with its tokenizer."""
        missing = [t for t in dict.fromkeys(terms) if t not in self._stems]
        if missing:
            c.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.memos_stem USING fts5(t, tokenize='{LEXICAL_TOKENIZER}')"
            )
            c.exec_driver_sql(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memos_stem_vocab USING fts5vocab(temp, memos_stem, 'instance')"
            )
            c.exec_driver_sql("DELETE FROM temp.memos_stem")
            c.exec_driver_sql("INSERT INTO temp.memos_stem(rowid, t) VALUES (?, ?)", list(enumerate(missing)))
            found: dict[int, list[str]] = {}
            for doc, term in c.exec_driver_sql("SELECT doc, term FROM temp.memos_stem_vocab ORDER BY doc, offset"):
                found.setdefault(int(doc), []).append(str(term))
            if len(self._stems) + len(missing) > MAX_CACHED_STEMS:
                self._stems.clear()
            self._stems.update((t, tuple(found.get(i, ()))) for i, t in enumerate(missing))
        return {t: self._stems[t] for t in terms}

    def optimize_lexical(self, pages: int = 2000) -> None:
        """Merge some of the lexical index's segments (fewer segments: faster BM25 queries).

        Bounded work (FTS5 'merge' of about `pages` pages), so running it on every tick stays cheap
        however large the index grows; repeated ticks converge to a fully merged index.
        """
        if self.dialect == "sqlite":
            with self.tx() as conn:
                conn.exec_driver_sql("INSERT INTO cubes_fts(cubes_fts, rank) VALUES ('merge', ?)", (pages,))

    # ---- vector outbox -----------------------------------------------------------------------

    def queue_vector_sync(self, conn: Connection, ids: Sequence[str], when: datetime) -> None:
        """Record, inside the caller's transaction, that these cubes' vectors must be synced."""
        if not ids:
            return
        unique = list(dict.fromkeys(ids))
        existing = set(
            conn.execute(sa.select(vector_outbox.c.cube_id).where(vector_outbox.c.cube_id.in_(unique))).scalars()
        )
        if existing:
            conn.execute(
                sa.update(vector_outbox)
                .where(vector_outbox.c.cube_id.in_(list(existing)))
                .values(generation=vector_outbox.c.generation + 1)
            )
        fresh = [{"cube_id": i, "queued_at": to_micros(when), "generation": 0} for i in unique if i not in existing]
        if fresh:
            conn.execute(sa.insert(vector_outbox), fresh)

    def pending_vector_sync(self, limit: int = 1000) -> list[str]:
        """Cube ids queued for vector sync, oldest first."""
        with self.read() as c:
            stmt = sa.select(vector_outbox.c.cube_id).order_by(vector_outbox.c.queued_at).limit(limit)
            return list(c.execute(stmt).scalars())

    def count_pending_vector_sync(self) -> int:
        """How many cubes wait for their vector."""
        with self.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(vector_outbox)).scalar_one())

    def vector_sync_generations(self, ids: Sequence[str]) -> dict[str, int]:
        """The outbox generation of each queued id (ids not queued are absent)."""
        out: dict[str, int] = {}
        with self.read() as c:
            for start in range(0, len(ids), 900):
                chunk = list(ids[start : start + 900])
                stmt = sa.select(vector_outbox.c.cube_id, vector_outbox.c.generation).where(
                    vector_outbox.c.cube_id.in_(chunk)
                )
                out.update((i, int(g)) for i, g in c.execute(stmt))
        return out

    def clear_vector_sync(self, generations: Mapping[str, int]) -> None:
        """Drop outbox entries the index now matches, unless re-queued since their generation was read.

        A change committed by another process between the sync's catalog read and this call bumps
        the generation, so its entry stays queued and the next sync picks it up.
        """
        if generations:
            with self.tx() as conn:
                conn.execute(
                    sa.delete(vector_outbox).where(
                        vector_outbox.c.cube_id == sa.bindparam("cid"),
                        vector_outbox.c.generation == sa.bindparam("gen"),
                    ),
                    # in id order: two processes clearing overlapping sets lock rows in the same order (no deadlock)
                    [{"cid": i, "gen": g} for i, g in sorted(generations.items())],
                )

    def indexable_ids(self) -> list[str]:
        """Ids of every cube that should have a vector (searchable plaintext with content)."""
        with self.read() as c:
            stmt = sa.select(cubes.c.id).where(
                cubes.c.status.in_(SEARCHABLE), cubes.c.kind == "plaintext", cubes.c.content.is_not(None)
            )
            return list(c.execute(stmt).scalars())

    # ---- audit -------------------------------------------------------------------------------

    def audit(
        self,
        conn: Connection,
        *,
        at: datetime,
        actor: str,
        action: str,
        cube_id: str | None = None,
        ns: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log inside the caller's transaction."""
        conn.execute(
            sa.insert(audit).values(
                at=to_micros(at),
                actor=actor,
                action=action,
                cube_id=cube_id,
                ns=ns,
                detail=json.dumps(dict(detail or {}), sort_keys=True, default=str),
            )
        )

    def audit_many(self, conn: Connection, *, at: datetime, actor: str, action: str, cubes_: Sequence[MemCube]) -> None:
        """One audit entry per cube, in one batched statement."""
        if cubes_:
            at_us = to_micros(at)
            conn.execute(
                sa.insert(audit),
                [
                    {
                        "at": at_us,
                        "actor": actor,
                        "action": action,
                        "cube_id": c.id,
                        "ns": ns_path(c.namespace),
                        "detail": "{}",
                    }
                    for c in cubes_
                ],
            )

    def audit_log(
        self,
        *,
        cube_id: str | None = None,
        actor_or_prefixes: tuple[str, Sequence[str]] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit entries, newest first: of one cube, or by an actor or under namespace prefixes."""
        stmt = sa.select(audit).order_by(audit.c.seq.desc()).limit(limit)
        if cube_id is not None:
            stmt = stmt.where(audit.c.cube_id == cube_id)
        if actor_or_prefixes is not None:
            actor, prefixes = actor_or_prefixes
            # an actor sees their own entries, except refusals under namespaces they cannot read (the
            # namespace and cube id of a refused attempt must not tell them what exists there)
            own = sa.and_(audit.c.actor == actor, audit.c.action != "denied")
            stmt = stmt.where(sa.or_(own, *(prefix_clause(audit.c.ns, p) for p in prefixes)))
        with self.read() as c:
            return [
                {**dict(row), "at": from_micros(row["at"]), "detail": json.loads(row["detail"])}
                for row in c.execute(stmt).mappings()
            ]

    # ---- users, roots, grants ----------------------------------------------------------------

    def user_exists(self, name: str, conn: Connection | None = None) -> bool:
        """Whether a user is registered."""
        with self._conn(conn) as c:
            return c.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None

    def add_user(self, conn: Connection, name: str, when: datetime) -> None:
        """Register a user."""
        conn.execute(sa.insert(users).values(name=name, created_at=to_micros(when)))

    def list_users(self) -> list[tuple[str, datetime]]:
        """Every user with its creation time, by name."""
        with self.read() as c:
            rows = c.execute(sa.select(users.c.name, users.c.created_at).order_by(users.c.name))
            return [(n, from_micros(t)) for n, t in rows]  # type: ignore[misc]

    def root_owner(self, root: str, conn: Connection | None = None) -> str | None:
        """The owner of a namespace root, or None when unclaimed."""
        with self._conn(conn) as c:
            return c.execute(sa.select(roots.c.owner).where(roots.c.root == root)).scalar_one_or_none()

    def roots_owned_by(self, user: str) -> list[str]:
        """The namespace roots a user owns."""
        with self.read() as c:
            return list(c.execute(sa.select(roots.c.root).where(roots.c.owner == user)).scalars())

    def claim_root(self, conn: Connection, root: str, owner: str, when: datetime) -> None:
        """Record the owner of a namespace root."""
        conn.execute(sa.insert(roots).values(root=root, owner=owner, created_at=to_micros(when)))

    def grants_for(self, grantee: str, conn: Connection | None = None) -> list[tuple[str, str]]:
        """(namespace path, right) pairs granted to a user."""
        with self._conn(conn) as c:
            stmt = sa.select(grants.c.ns, grants.c.right).where(grants.c.grantee == grantee)
            return [(ns, r) for ns, r in c.execute(stmt)]

    def grants_on(self, prefix: str) -> list[dict[str, Any]]:
        """Every grant at or below a namespace path."""
        with self.read() as c:
            stmt = sa.select(grants).where(prefix_clause(grants.c.ns, prefix)).order_by(grants.c.ns, grants.c.grantee)
            return [{**dict(r), "created_at": from_micros(r["created_at"])} for r in c.execute(stmt).mappings()]

    def set_grant(self, conn: Connection, ns: str, grantee: str, right: str, by: str, when: datetime) -> None:
        """Create or replace a user's right on a namespace path."""
        conn.execute(sa.delete(grants).where(grants.c.ns == ns, grants.c.grantee == grantee))
        conn.execute(
            sa.insert(grants).values(ns=ns, grantee=grantee, right=right, granted_by=by, created_at=to_micros(when))
        )

    def delete_grant(self, conn: Connection, ns: str, grantee: str) -> int:
        """Remove a user's grant on a namespace path; return how many were removed."""
        return conn.execute(sa.delete(grants).where(grants.c.ns == ns, grants.c.grantee == grantee)).rowcount

    def namespaces(self, prefixes: Sequence[str] | None) -> list[tuple[str, int]]:
        """(namespace path, number of cubes not hard-deleted) under the given prefixes."""
        flt = CubeFilter(prefixes=prefixes, statuses=("active", "archived", "expired", "deleted"))
        with self.read() as c:
            stmt = (
                sa.select(cubes.c.ns, sa.func.count()).where(self.where(flt)).group_by(cubes.c.ns).order_by(cubes.c.ns)
            )
            return [(ns, int(n)) for ns, n in c.execute(stmt)]

    @contextmanager
    def _conn(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.read() as c:
                yield c


def _line(error: BaseException | None) -> str:
    """A driver's error message on one line."""
    return " ".join(str(error).split()) if error is not None else "unknown error"


def _shown(url: str) -> str:
    """A catalog URL with its password replaced by ***, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url if "@" not in url else "(a catalog URL that could not be parsed)"


def _fts_query(terms: Sequence[str], context_weight: float) -> tuple[str, tuple[float, float]]:
    """An FTS5 MATCH for any of the terms, and bm25()'s column weights (content 1, context as given).

    Without context weight only the content column may match: a page found through its context
    alone would score 0.
    """
    match = " OR ".join(f'"{t}"' for t in terms)
    if context_weight <= 0:
        match = f"content : ({match})"
    return match, (1.0, max(context_weight, 0.0))


def _fts_idf(num_docs: int, num_with_term: int) -> float:
    """FTS5's BM25 idf: log((N - n + 0.5) / (n + 0.5)), floored at 1e-6 as FTS5 does."""
    return max(math.log((num_docs - num_with_term + 0.5) / (num_with_term + 0.5)), 1e-6)


#: the longest external id the catalog column holds (PostgreSQL enforces it; SQLite would not)
MAX_EXTERNAL_ID = 256


def _check_storable(cube: MemCube) -> None:
    """UserError for values no catalog may hold alike: NUL characters (PostgreSQL text refuses them), long ids."""
    h = cube.header
    external = h.provenance.external_id
    if external is not None and len(external) > MAX_EXTERNAL_ID:
        raise UserError(
            f"the external id is {len(external)} characters, over the limit of {MAX_EXTERNAL_ID}: use a shorter one"
        )
    fields = {"text": cube.content, "external id": external, "namespace": ns_path(cube.namespace)}
    fields.update({f"tag {t!r}": t for t in h.tags})
    fields.update({f"label {k!r}": f"{k}{v}" for k, v in h.labels.items()})
    for what, value in fields.items():
        if value and "\x00" in value:
            raise UserError(f"the {what} contains a NUL character (\\x00), which cannot be stored: remove it")


def _to_row(cube: MemCube) -> dict[str, Any]:
    _check_storable(cube)
    h = cube.header
    return {
        "id": cube.id,
        "ns": ns_path(cube.namespace),
        "kind": cube.kind.value,
        "level": cube.level.value,
        "status": h.lifecycle.status.value,
        "content": cube.content,
        "blob": cube.blob,
        "sources": json.dumps(cube.sources),
        "version": h.version,
        "previous": h.previous,
        "provenance": h.provenance.model_dump_json(),
        "external_id": h.provenance.external_id,
        "created_at": to_micros(h.created_at),
        "updated_at": to_micros(h.updated_at),
        "event_time": to_micros(h.event_time),
        "expires_at": to_micros(h.lifecycle.expires_at),
        "access_count": h.usage.access_count,
        "last_access": to_micros(h.usage.last_access),
        "heat": h.usage.heat,
        "acl": h.acl.model_dump_json(),
        "tags": json.dumps(h.tags),
        "labels": json.dumps(h.labels, sort_keys=True),
        "tokens": h.tokens,
        "embedder": h.embedder,
    }


def _from_row(row: Mapping[str, Any]) -> MemCube:
    header = Header(
        version=row["version"],
        previous=row["previous"],
        provenance=Provenance.model_validate_json(row["provenance"]),
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        event_time=from_micros(row["event_time"]),
        usage=Usage(access_count=row["access_count"], last_access=from_micros(row["last_access"]), heat=row["heat"]),
        lifecycle=Lifecycle(status=row["status"], expires_at=from_micros(row["expires_at"])),
        acl=ACL.model_validate_json(row["acl"]),
        tags=json.loads(row["tags"]),
        labels=json.loads(row["labels"]),
        tokens=row["tokens"],
        embedder=row["embedder"],
    )
    return MemCube(
        id=row["id"],
        namespace=tuple(row["ns"].split("/")),
        kind=row["kind"],
        level=row["level"],
        content=row["content"],
        blob=row["blob"],
        sources=json.loads(row["sources"]),
        header=header,
    )
