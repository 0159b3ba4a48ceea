"""Damage to a home's indexes that `memos doctor` must find and repair, made the same way on every backend.

The lexical index differs by engine (FTS5 keeps the text, PostgreSQL a tsvector), so its damage is made
with each engine's own SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from memos import MemOS

#: a lexical row no cube has
GHOST_RID = 999_999
#: what `damage` leaves, as doctor.check counts it
DAMAGE_COUNTS = {
    "outbox_pending": 1,
    "vector_missing": 2,
    "vector_orphan": 1,
    "vector_mismatch": 1,
    "lexical_missing": 1,
    "lexical_orphan": 1,
    "lexical_stale": 1,
}


def damage(mos: MemOS, ids: Sequence[str]) -> None:
    """Break the indexes of ids[5:11]: see each step; needs at least 11 plaintext cubes."""
    # vectors: two lost (5, 6), one stray, one overwritten with another text's embedding (7)
    mos.vectors.delete(list(ids[5:7]))
    mos.vectors.upsert(["00000000-0000-7000-8000-000000000001"], mos.embedder.embed(["a stray vector"]))
    mos.vectors.upsert([ids[7]], mos.embedder.embed(["something else entirely"]))
    # lexical rows: one lost (8), one stale (9), one without a cube
    with mos.catalog.read() as conn:
        rids = mos.catalog._rids(conn, list(ids[8:10]))
    _damage_lexical(mos, rids[ids[8]], rids[ids[9]])
    # an outbox entry left by a change whose vector step never ran (10)
    with mos.catalog.tx() as conn:
        mos.catalog.queue_vector_sync(conn, [ids[10]], mos.clock.now())


def _damage_lexical(mos: MemOS, lost: int, stale: int) -> None:
    with mos.catalog.engine.begin() as conn:
        if mos.catalog.dialect == "sqlite":
            conn.exec_driver_sql("DELETE FROM cubes_fts WHERE rowid = ?", (lost,))
            conn.exec_driver_sql("UPDATE cubes_fts SET content = 'garbled' WHERE rowid = ?", (stale,))
            conn.exec_driver_sql(
                "INSERT INTO cubes_fts(rowid, content, context) VALUES (?, 'ghost words', '')", (GHOST_RID,)
            )
        else:
            conn.execute(sa.text("DELETE FROM cubes_fts WHERE rid = :r"), {"r": lost})
            conn.execute(
                sa.text("UPDATE cubes_fts SET tsv = to_tsvector('english', 'garbled') WHERE rid = :r"), {"r": stale}
            )
            conn.execute(
                sa.text(
                    "INSERT INTO cubes_fts (rid, tsv, ctx) VALUES "
                    "(:r, to_tsvector('english', 'ghost words'), to_tsvector('english', ''))"
                ),
                {"r": GHOST_RID},
            )


def assert_repaired_cubes_found(mos: MemOS, ns: str, ids: Sequence[str]) -> None:
    """After repair, the damaged cubes are found by words (lexical) and by their vectors; the ghost row is not."""
    alice = mos.as_user("alice")
    for i in (5, 7, 8, 9):
        hits = alice.recall(ns, f"word{i}", k=5)
        assert any(h.cube.id == ids[i] and h.lexical_rank is not None for h in hits), i
        assert mos.vectors.existing([ids[i]]) == {ids[i]}
    assert all(h.lexical_rank is None for h in alice.recall(ns, "ghost garbled", k=5))
