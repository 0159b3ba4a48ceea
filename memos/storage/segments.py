"""The `segments` table (the paging state of mid-term segments) and the cube queries paging needs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memos.cube import MemCube
from memos.storage.catalog import Catalog, CubeFilter, _from_row, prefix_clause
from memos.storage.schema import cube_labels, cubes, from_micros, segments, to_micros

#: the label a page carries once it belongs to a segment (its value is the segment's id)
SEGMENT_LABEL = "segment"
#: the `type` label values of the cubes paging makes
SEGMENT_TYPE = "segment"
PROFILE_TYPE = "profile"
USER_KNOWLEDGE = "user_knowledge"
ASSISTANT_KNOWLEDGE = "assistant_knowledge"
KNOWLEDGE_TYPES = (USER_KNOWLEDGE, ASSISTANT_KNOWLEDGE)


@dataclass
class SegmentState:
    """One row of the `segments` table: the counters heat is computed from."""

    id: str
    ns: str
    #: N_visit: retrieval hits since the last promotion
    visits: int
    #: L_interaction: pages merged in since the last promotion
    interactions: int
    last_visit: datetime
    #: heat when the row was last written (the decay term keeps falling after that)
    heat: float
    created_at: datetime
    updated_at: datetime
    keywords: list[str] = field(default_factory=list)
    #: page ids already analysed by a promotion
    analyzed: list[str] = field(default_factory=list)
    paged_out: bool = False


def _at(micros: int) -> datetime:
    when = from_micros(micros)
    assert when is not None
    return when


def _state(row: Mapping[str, Any]) -> SegmentState:
    return SegmentState(
        id=str(row["id"]),
        ns=str(row["ns"]),
        visits=int(row["visits"]),
        interactions=int(row["interactions"]),
        last_visit=_at(row["last_visit"]),
        heat=float(row["heat"]),
        created_at=_at(row["created_at"]),
        updated_at=_at(row["updated_at"]),
        keywords=json.loads(row["keywords"]),
        analyzed=json.loads(row["analyzed"]),
        paged_out=bool(row["paged_out"]),
    )


def _row(state: SegmentState) -> dict[str, Any]:
    return {
        "id": state.id,
        "ns": state.ns,
        "visits": state.visits,
        "interactions": state.interactions,
        "last_visit": to_micros(state.last_visit),
        "heat": state.heat,
        "keywords": json.dumps(state.keywords),
        "analyzed": json.dumps(state.analyzed),
        "paged_out": 1 if state.paged_out else 0,
        "created_at": to_micros(state.created_at),
        "updated_at": to_micros(state.updated_at),
    }


#: oldest first: the FIFO order of pages and the tie-break of every "oldest" rule
_OLDEST_FIRST = (cubes.c.created_at, cubes.c.rid)


class SegmentStore:
    """All SQL on the `segments` table, and the exact-namespace cube queries the catalog lacks."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @contextmanager
    def _conn(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.catalog.read() as c:
                yield c

    # ---- the segments table ------------------------------------------------------------------

    def insert(self, conn: Connection, state: SegmentState) -> None:
        """Add a segment's row inside the caller's transaction."""
        conn.execute(sa.insert(segments).values(**_row(state)))

    def save(self, conn: Connection, state: SegmentState) -> None:
        """Overwrite a segment's row inside the caller's transaction."""
        values = _row(state)
        del values["id"]
        conn.execute(sa.update(segments).where(segments.c.id == state.id).values(**values))

    def get(
        self, ids: Sequence[str], conn: Connection | None = None, *, for_update: bool = False
    ) -> dict[str, SegmentState]:
        """The rows of these segments, by id (ids that are not segments are absent).

        for_update locks the rows until the caller's transaction ends, taken in id order so that two
        transactions locking overlapping sets cannot deadlock (PostgreSQL; SQLite has one writer anyway).
        """
        out: dict[str, SegmentState] = {}
        unique = sorted(set(ids)) if for_update else list(dict.fromkeys(ids))
        with self._conn(conn) as c:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                stmt = sa.select(segments).where(segments.c.id.in_(chunk))
                if for_update:
                    stmt = stmt.order_by(segments.c.id).with_for_update()
                for row in c.execute(stmt).mappings():
                    out[row["id"]] = _state(row)
        return out

    def in_namespace(
        self, ns: str, *, paged_out: bool | None = False, conn: Connection | None = None
    ) -> list[SegmentState]:
        """The segments of exactly this namespace (active ones by default), oldest first."""
        stmt = sa.select(segments).where(segments.c.ns == ns)
        if paged_out is not None:
            stmt = stmt.where(segments.c.paged_out == (1 if paged_out else 0))
        stmt = stmt.order_by(segments.c.created_at, segments.c.id)
        with self._conn(conn) as c:
            return [_state(row) for row in c.execute(stmt).mappings()]

    def under(self, prefixes: Sequence[str] | None, *, paged_out: bool | None = None) -> list[SegmentState]:
        """The segments at or below these namespace paths (None: everywhere), oldest first."""
        stmt = sa.select(segments)
        if prefixes is not None:
            stmt = stmt.where(sa.or_(sa.false(), *(prefix_clause(segments.c.ns, p) for p in prefixes)))
        if paged_out is not None:
            stmt = stmt.where(segments.c.paged_out == (1 if paged_out else 0))
        stmt = stmt.order_by(segments.c.created_at, segments.c.id)
        with self.catalog.read() as c:
            return [_state(row) for row in c.execute(stmt).mappings()]

    def namespaces(self) -> list[str]:
        """Namespace paths that hold at least one active (not paged-out) segment."""
        stmt = sa.select(segments.c.ns).where(segments.c.paged_out == 0).distinct().order_by(segments.c.ns)
        with self.catalog.read() as c:
            return list(c.execute(stmt).scalars())

    # ---- cubes -------------------------------------------------------------------------------

    def overflow_namespaces(self, capacity: int) -> list[str]:
        """Namespace paths holding more than `capacity` active short-term plaintext pages."""
        stmt = (
            sa.select(cubes.c.ns)
            .where(cubes.c.level == "short", cubes.c.status == "active", cubes.c.kind == "plaintext")
            .group_by(cubes.c.ns)
            .having(sa.func.count() > capacity)
            .order_by(cubes.c.ns)
        )
        with self.catalog.read() as c:
            return list(c.execute(stmt).scalars())

    def overflow_pages(self, ns: str, capacity: int, conn: Connection | None = None) -> list[MemCube]:
        """The short-term pages of a namespace beyond its newest `capacity` ones, oldest first."""
        flt = CubeFilter(levels=["short"], kinds=["plaintext"])
        stmt = (
            sa.select(cubes)
            .where(self.catalog.where(flt), cubes.c.ns == ns)
            .order_by(*(col.desc() for col in _OLDEST_FIRST))
            .offset(capacity)
        )
        with self._conn(conn) as c:
            newest_first = [_from_row(row) for row in c.execute(stmt).mappings()]
        return newest_first[::-1]

    def cubes_in(
        self,
        ns: str,
        *,
        levels: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        statuses: Sequence[str] = ("active",),
        conn: Connection | None = None,
    ) -> list[MemCube]:
        """Plaintext cubes of exactly this namespace (not below it), oldest first."""
        flt = CubeFilter(levels=levels, kinds=["plaintext"], statuses=statuses, labels=dict(labels or {}))
        stmt = sa.select(cubes).where(self.catalog.where(flt), cubes.c.ns == ns).order_by(*_OLDEST_FIRST)
        with self._conn(conn) as c:
            return [_from_row(row) for row in c.execute(stmt).mappings()]

    def segment_of(self, page_ids: Sequence[str]) -> dict[str, str]:
        """page id -> the id of the segment it belongs to, for the pages that belong to one."""
        out: dict[str, str] = {}
        unique = list(dict.fromkeys(page_ids))
        with self.catalog.read() as c:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                stmt = sa.select(cube_labels.c.cube_id, cube_labels.c.value).where(
                    cube_labels.c.key == SEGMENT_LABEL, cube_labels.c.cube_id.in_(chunk)
                )
                out.update((cid, value) for cid, value in c.execute(stmt))
        return out

    def set_cube_heat(self, conn: Connection, heats: Mapping[str, float]) -> None:
        """Mirror segments' heat into their cubes' header.usage.heat (not a content change: no new version)."""
        if heats:
            conn.execute(
                sa.update(cubes).where(cubes.c.id == sa.bindparam("cid")).values(heat=sa.bindparam("h")),
                # in id order: the row locks are taken in the same order by every transaction
                [{"cid": cid, "h": heats[cid]} for cid in sorted(heats)],
            )

    def paging_counts(self, prefixes: Sequence[str] | None) -> dict[str, int]:
        """Segments active / paged out, pages short / in segments / paged out, long-term cubes by type."""
        where: list[sa.ColumnElement[bool]] = [cubes.c.kind == "plaintext"]
        if prefixes is not None:
            where.append(sa.or_(sa.false(), *(prefix_clause(cubes.c.ns, p) for p in prefixes)))
        has_segment = sa.exists().where(cube_labels.c.cube_id == cubes.c.id, cube_labels.c.key == SEGMENT_LABEL)
        type_label = (
            sa.select(cube_labels.c.value)
            .where(cube_labels.c.cube_id == cubes.c.id, cube_labels.c.key == "type")
            .scalar_subquery()
        )
        out: dict[str, int] = {}
        segment_rows = sa.select(segments.c.paged_out, sa.func.count()).group_by(segments.c.paged_out)
        if prefixes is not None:
            segment_rows = segment_rows.where(sa.or_(sa.false(), *(prefix_clause(segments.c.ns, p) for p in prefixes)))
        with self.catalog.read() as c:
            by_paging = {int(paged_out): int(n) for paged_out, n in c.execute(segment_rows)}
            out["segments"] = by_paging.get(0, 0)
            out["segments_paged_out"] = by_paging.get(1, 0)
            short = sa.select(sa.func.count()).where(*where, cubes.c.level == "short", cubes.c.status == "active")
            out["short_pages"] = int(c.execute(short).scalar_one())
            in_segments = sa.select(cubes.c.status, sa.func.count()).where(*where, has_segment).group_by(cubes.c.status)
            by_status = {status: int(n) for status, n in c.execute(in_segments)}
            out["mid_pages"] = by_status.get("active", 0)
            out["paged_out_pages"] = by_status.get("archived", 0)
            long_rows = (
                sa.select(type_label.label("t"), cubes.c.status, sa.func.count())
                .where(*where, cubes.c.level == "long")
                .group_by("t", cubes.c.status)
            )
            by_type = {(t, status): int(n) for t, status, n in c.execute(long_rows)}
        out["profiles"] = by_type.get((PROFILE_TYPE, "active"), 0)
        for kind in KNOWLEDGE_TYPES:
            out[kind] = by_type.get((kind, "active"), 0)
            out[f"{kind}_archived"] = by_type.get((kind, "archived"), 0)
        return out
