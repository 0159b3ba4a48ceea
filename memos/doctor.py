"""`memos doctor`: check that the catalog, the vector index, the lexical index and the blobs agree, and repair them.

The catalog is the source of truth. Every active or archived plaintext cube with text has one vector,
embedded by the configured embedder, and every searchable cube with text has one lexical row holding
its text; no vector, lexical row or blob exists without a cube that names it; every active derived
cube (activation block, LoRA adapter) has its blob and all of its source cubes; the transactional
outbox is empty. `check` reports what disagrees; `repair` re-embeds and re-indexes from the catalog,
deletes orphans, and archives the derived cubes that cannot be served (their plaintext sources stay,
so `tick` or `consolidate` builds them again), then checks again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memos.cube import Kind, MemCube, Status
from memos.errors import UserError
from memos.log import get_logger
from memos.storage.catalog import SEARCHABLE, CubeFilter
from memos.storage.schema import cubes

if TYPE_CHECKING:
    from memos.kernel import MemOS

log = get_logger("doctor")

#: the actor that repairs are audited under
DOCTOR_ACTOR = "memos-doctor"
#: how many example ids a problem carries
EXAMPLES = 5
#: a stored vector whose cosine with a fresh embedding of its cube's text is below this is wrong
MIN_COSINE = 0.99
#: cubes whose stored vector is compared with a fresh embedding, by default (the rest are checked for presence)
DEFAULT_SAMPLE = 256
#: what each problem kind means, in the order they are reported
KINDS: dict[str, str] = {
    "catalog_corrupt": "the catalog database fails its integrity check (restore it from a backup)",
    "lexical_corrupt": "the lexical index fails its integrity check",
    "outbox_pending": "catalog changes whose vector step has not run",
    "vector_missing": "searchable cubes without a vector",
    "vector_orphan": "vectors without a searchable cube",
    "vector_mismatch": "vectors that are not the configured embedder's embedding of their cube's text",
    "lexical_missing": "searchable cubes without a lexical row",
    "lexical_orphan": "lexical rows without a searchable cube",
    "lexical_stale": "lexical rows whose text is not their cube's text",
    "blob_orphan": "blobs (or leftover temporary files) that no cube names",
    "blob_missing": "active activation/parametric cubes whose blob is missing",
    "source_missing": "active activation/parametric cubes whose source cubes are gone from the catalog",
}
#: problems `repair` cannot fix
UNREPAIRABLE = frozenset({"catalog_corrupt"})
_ALL_STATUSES = tuple(s.value for s in Status)


@dataclass
class Problem:
    """One kind of disagreement: how many items it affects and a few of their ids."""

    kind: str
    count: int
    examples: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        """What this kind of problem means."""
        return KINDS[self.kind]


@dataclass
class Report:
    """What `check` found (and, after `repair`, what was found before and what was done)."""

    problems: list[Problem] = field(default_factory=list)
    #: what was looked at: cubes, indexable cubes, vectors, lexical rows, blobs
    checked: dict[str, int] = field(default_factory=dict)
    #: repair only: the problems found before repairing
    found: list[Problem] = field(default_factory=list)
    #: repair only: action -> number of items it touched
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when everything agrees."""
        return not self.problems

    def problem(self, kind: str) -> Problem | None:
        """The problem of this kind, if any was found."""
        return next((p for p in self.problems if p.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view of the report."""

        def rows(problems: Iterable[Problem]) -> list[dict[str, Any]]:
            return [{**asdict(p), "description": p.description} for p in problems]

        return {
            "ok": self.ok,
            "checked": dict(self.checked),
            "problems": rows(self.problems),
            "found": rows(self.found),
            "actions": dict(self.actions),
        }


@dataclass
class _Findings:
    """The ids behind each problem, as `repair` needs them (a Report keeps only counts and examples)."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)
    #: lexical rows (rowids) to delete and cubes whose row must be (re)written
    lexical_drop: list[int] = field(default_factory=list)
    lexical_write: list[str] = field(default_factory=list)
    #: derived cubes to archive (missing blob or missing sources)
    retire: dict[str, MemCube] = field(default_factory=dict)

    def add(self, kind: str, ids: Sequence[str]) -> None:
        if ids:
            self.ids.setdefault(kind, []).extend(ids)

    def report(self) -> Report:
        problems = [
            Problem(kind, len(self.ids[kind]), sorted(self.ids[kind])[:EXAMPLES]) for kind in KINDS if kind in self.ids
        ]
        return Report(problems=problems, checked=dict(self.checked))


def check(mos: MemOS, *, sample: int | None = DEFAULT_SAMPLE) -> Report:
    """Compare catalog, vector index, lexical index, blobs and outbox; change nothing.

    `sample`: how many indexed cubes have their stored vector compared with a fresh embedding of
    their text (None: all of them; 0: none).
    """
    return _inspect(mos, _sample(sample)).report()


def repair(mos: MemOS, *, sample: int | None = DEFAULT_SAMPLE) -> Report:
    """Fix what `check` finds, from the catalog; return the check made afterwards, with what was found and done."""
    sample = _sample(sample)
    before = _inspect(mos, sample)
    actions: dict[str, int] = {}
    with mos._write_lock:
        if "outbox_pending" in before.ids:
            actions["outbox_replayed"] = mos.recover()
        _repair_vectors(mos, before, actions)
        _repair_lexical(mos, before, actions)
        _repair_derived(mos, before, actions)
        _repair_blobs(mos, before, actions)
        # archiving a derived cube queues its (absent) vector for sync: settle that too
        while pending := mos.catalog.pending_vector_sync(limit=2000):
            mos.sync_vectors(pending)
    after = _inspect(mos, sample).report()
    after.found = before.report().problems
    after.actions = {k: v for k, v in actions.items() if v}
    log.info("doctor repaired the home", found=len(after.found), remaining=len(after.problems), **after.actions)
    return after


def _sample(sample: int | None) -> int | None:
    if sample is not None and (not isinstance(sample, int) or sample < 0):
        raise UserError(f"sample must be a number of cubes (0 or more), not {sample!r}")
    return sample


# ---- inspection -----------------------------------------------------------------------------------


def _inspect(mos: MemOS, sample: int | None) -> _Findings:
    found = _Findings()
    _check_catalog(mos, found)
    found.add("outbox_pending", mos.catalog.pending_vector_sync(limit=1_000_000))
    _check_vectors(mos, found, sample)
    _check_lexical(mos, found)
    _check_derived_and_blobs(mos, found)
    return found


def _check_catalog(mos: MemOS, found: _Findings) -> None:
    catalog = mos.catalog
    with catalog.read() as conn:
        found.checked["cubes"] = int(conn.execute(sa.select(sa.func.count()).select_from(cubes)).scalar_one())
        if catalog.dialect != "sqlite":
            return
        result = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").all()]
    if result != ["ok"]:
        found.add("catalog_corrupt", result[:EXAMPLES])
    try:
        with catalog.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO cubes_fts(cubes_fts) VALUES ('integrity-check')")
    except sa.exc.DatabaseError as exc:
        found.add("lexical_corrupt", [str(exc.orig)])


def _check_vectors(mos: MemOS, found: _Findings, sample: int | None) -> None:
    expected = mos.catalog.indexable_ids()
    present = mos.vectors.all_ids()
    want = set(expected)
    found.checked["indexable_cubes"] = len(expected)
    found.checked["vectors"] = len(present)
    found.add("vector_missing", [i for i in expected if i not in present])
    found.add("vector_orphan", sorted(present - want))
    both = [i for i in expected if i in present]
    if sample is not None and len(both) > sample:
        # an even spread over the catalog's order (oldest to newest), the same one on every run
        step = len(both) / sample if sample else 0
        both = [both[int(n * step)] for n in range(sample)]
    found.checked["vectors_verified"] = len(both)
    found.add("vector_mismatch", _mismatched(mos, both))


def _mismatched(mos: MemOS, ids: Sequence[str]) -> list[str]:
    """The ids whose stored vector is not (close to) a fresh embedding of the cube's current text."""
    out: list[str] = []
    for start in range(0, len(ids), 256):
        chunk = list(ids[start : start + 256])
        current = mos.catalog.get(chunk)
        stored = mos.vectors.get(chunk)
        texts = [current[i].text for i in chunk if i in current and i in stored]
        keys = [i for i in chunk if i in current and i in stored]
        if not keys:
            continue
        fresh = mos.embedder.embed(texts)
        for cube_id, vector in zip(keys, fresh, strict=True):
            have = stored[cube_id]
            if have.shape != vector.shape or _cosine(have, vector) < MIN_COSINE:
                out.append(cube_id)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm else 0.0


def _check_lexical(mos: MemOS, found: _Findings) -> None:
    catalog = mos.catalog
    sqlite = catalog.dialect == "sqlite"
    with catalog.read() as conn:
        want = {
            int(rid): (cube_id, content)
            for rid, cube_id, content in conn.execute(
                sa.select(cubes.c.rid, cubes.c.id, cubes.c.content).where(
                    cubes.c.status.in_(SEARCHABLE), cubes.c.content.is_not(None), cubes.c.content != ""
                )
            )
        }
        if sqlite:
            rows = {int(r): t for r, t in conn.exec_driver_sql("SELECT rowid, content FROM cubes_fts")}
            stale = [rid for rid, text in rows.items() if rid in want and text != want[rid][1]]
        else:
            rows = {int(r): None for (r,) in conn.exec_driver_sql("SELECT rid FROM cubes_fts")}
            # PostgreSQL keeps the words, not the text: a row is stale when they are not the cube's text's words
            stale = [
                int(r)
                for (r,) in conn.exec_driver_sql(
                    "SELECT f.rid FROM cubes_fts f JOIN cubes c ON c.rid = f.rid"
                    " WHERE f.tsv IS DISTINCT FROM to_tsvector('english', c.content)"
                )
                if int(r) in want
            ]
        names = dict(conn.execute(sa.select(cubes.c.rid, cubes.c.id)).all())
    found.checked["lexical_rows"] = len(rows)
    missing = [rid for rid in want if rid not in rows]
    orphan = sorted(rid for rid in rows if rid not in want)
    found.add("lexical_missing", [want[r][0] for r in missing])
    found.add("lexical_orphan", [names.get(r, f"rowid {r}") for r in orphan])
    found.add("lexical_stale", [want[r][0] for r in stale])
    found.lexical_drop = orphan + stale
    found.lexical_write = [want[r][0] for r in missing + stale]


def _check_derived_and_blobs(mos: MemOS, found: _Findings) -> None:
    derived = mos.catalog.select(
        CubeFilter(kinds=[Kind.activation.value, Kind.parametric.value], statuses=_ALL_STATUSES)
    )
    named = {c.blob for c in derived if c.blob}
    present = mos.blobs.refs()
    found.checked["blobs"] = len(present)
    found.checked["derived_cubes"] = len(derived)
    found.add("blob_orphan", [ref for ref in present if ref not in named] + _leftovers(mos))
    active = [c for c in derived if c.status == Status.active]
    missing_blob = [c for c in active if c.blob is not None and not mos.blobs.exists(c.blob)]
    found.add("blob_missing", [c.id for c in missing_blob])
    sources = mos.catalog.get(sorted({s for c in active for s in c.sources}))
    missing_sources = [c for c in active if any(s not in sources for s in c.sources)]
    found.add("source_missing", [c.id for c in missing_sources])
    found.retire = {c.id: c for c in missing_blob + missing_sources}


def _leftovers(mos: MemOS) -> list[str]:
    """Temporary files and folders an interrupted blob write left (names starting with '.')."""
    out: list[str] = []
    for area in ("activation", "parametric"):
        folder = mos.blobs.root / area
        if folder.is_dir():
            out.extend(f"{area}/{p.name}" for p in sorted(folder.glob(".*")))
    return out


# ---- repair ---------------------------------------------------------------------------------------


def _repair_vectors(mos: MemOS, found: _Findings, actions: dict[str, int]) -> None:
    todo = [*found.ids.get("vector_missing", []), *found.ids.get("vector_mismatch", [])]
    for start in range(0, len(todo), 512):
        # the catalog decides: sync_vectors embeds each cube's current text (or drops it if no longer indexable)
        mos.sync_vectors(todo[start : start + 512])
    orphans = found.ids.get("vector_orphan", [])
    for start in range(0, len(orphans), 512):
        mos.sync_vectors(orphans[start : start + 512])
    actions["vectors_embedded"] = len(todo)
    actions["vectors_deleted"] = len(orphans)


def _repair_lexical(mos: MemOS, found: _Findings, actions: dict[str, int]) -> None:
    catalog = mos.catalog
    if "lexical_corrupt" in found.ids and catalog.dialect == "sqlite":
        actions["lexical_rebuilt"] = _rebuild_lexical(mos)
        return
    drop, write = found.lexical_drop, found.lexical_write
    if not drop and not write:
        return
    with catalog.tx() as conn:
        for rid in drop:
            catalog._lexical_delete(conn, rid)
        _write_lexical(mos, conn, write)
    actions["lexical_deleted"] = len(drop) - len(found.ids.get("lexical_stale", []))
    actions["lexical_indexed"] = len(write)


def _write_lexical(mos: MemOS, conn: Connection, ids: Sequence[str]) -> None:
    """(Re)write the lexical rows of these cubes from the catalog, with their conversation context."""
    catalog = mos.catalog
    for start in range(0, len(ids), 500):
        batch = [c for c in catalog.get(list(ids[start : start + 500]), conn).values() if c.content]
        if not batch:
            continue
        rids = catalog._rids(conn, [c.id for c in batch])
        for rid in rids.values():
            catalog._lexical_delete(conn, rid)
        contexts = catalog._contexts(conn, batch)
        catalog._lexical_insert(conn, [(rids[c.id], c.text, contexts.get(c.id, "")) for c in batch])


def _rebuild_lexical(mos: MemOS) -> int:
    """Empty the lexical index and index every searchable cube again, in one transaction."""
    catalog = mos.catalog
    with catalog.tx() as conn:
        conn.exec_driver_sql("DELETE FROM cubes_fts")
        ids = list(
            conn.execute(
                sa.select(cubes.c.id).where(
                    cubes.c.status.in_(SEARCHABLE), cubes.c.content.is_not(None), cubes.c.content != ""
                )
            ).scalars()
        )
        _write_lexical(mos, conn, ids)
    return len(ids)


def _repair_derived(mos: MemOS, found: _Findings, actions: dict[str, int]) -> None:
    retired = 0
    for cube in found.retire.values():
        current = mos.catalog.get([cube.id]).get(cube.id)
        if current is None or current.status != Status.active:
            continue
        if current.kind == Kind.activation:
            reason = "its source cubes are gone" if cube.id in found.ids.get("source_missing", []) else "blob missing"
            mos.activation.retire(DOCTOR_ACTOR, current, reason)
        else:
            mos.adapters.retire(DOCTOR_ACTOR, current)
        retired += 1
    actions["derived_archived"] = retired


def _repair_blobs(mos: MemOS, found: _Findings, actions: dict[str, int]) -> None:
    if "blob_orphan" not in found.ids:
        return
    # read again under the write lock: a block built since the inspection keeps its blob
    named = mos.catalog.select(CubeFilter(kinds=[Kind.activation.value, Kind.parametric.value], statuses=_ALL_STATUSES))
    leftovers = len(_leftovers(mos))
    actions["blobs_deleted"] = len(mos.blobs.sweep(c.blob for c in named if c.blob)) + leftovers
