"""The catalog and vector index as building blocks: migrations, WAL, BM25, filters, where clauses."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from memos import MemOS
from memos.retrieval import fuse
from memos.storage import catalog as catalog_module
from memos.storage.catalog import MIN_DOCS_TO_PRUNE, Catalog, CubeFilter, query_terms
from memos.storage.schema import MIGRATIONS, from_micros, migrate, to_micros


def test_migrations_are_named_ordered_and_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    catalog = Catalog(url)
    with catalog.read() as conn:
        names = list(conn.execute(sa.text("SELECT name FROM schema_migrations ORDER BY name")).scalars())
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    assert (
        names
        == [name for name, _ in MIGRATIONS]
        == [
            "0001_core_tables",
            "0002_lexical_index",
            "0003_vector_outbox",
            "0004_drop_status_index",
            "0005_lexical_vocabulary",
            "0006_filter_index",
            "0007_outbox_generation",
            "0008_segments",
            "0009_lexical_context",
            "0010_namespace_order_index",
        ]
    )
    assert mode == "wal"
    with catalog.tx() as conn:
        assert migrate(conn) == []
    catalog.close()
    assert Catalog(url).dialect == "sqlite"


def test_micros_round_trip_is_exact() -> None:
    when = datetime(2023, 5, 8, 13, 56, 7, 123456, tzinfo=UTC)
    assert to_micros(when) == 1_683_554_167_123_456
    assert from_micros(to_micros(when)) == when
    assert to_micros(datetime(2023, 5, 8)) == to_micros(datetime(2023, 5, 8, tzinfo=UTC))


def test_query_terms_drop_stopwords_and_repeats() -> None:
    assert query_terms("Where does Alice live? Alice's cat!") == ["alice", "live", "s", "cat"]
    assert query_terms("the and of") == []


def test_bm25_prefers_rarer_and_more_matches(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    both = alice.write(("alice",), "Lisbon tram rides every morning")
    one = alice.write(("alice",), "the tram was late")
    alice.write(("alice",), "nothing relevant here")
    ranked = mos.catalog.lexical("Lisbon tram", CubeFilter(prefixes=["alice"]), 10)
    assert [cid for cid, _ in ranked] == [both.id, one.id]
    assert ranked[0][1] > ranked[1][1] > 0
    # porter stemming: "rides" matches "ride"
    assert [cid for cid, _ in mos.catalog.lexical("ride", CubeFilter(prefixes=["alice"]), 10)] == [both.id]


def _party_home(mos: MemOS) -> tuple[set[str], set[str]]:
    """1,200 cubes: 300 about a party (as "party" or "parties"), 6 about Lisbon, all mentioning a day."""
    assert MIN_DOCS_TO_PRUNE <= 1200
    alice = mos.as_user("alice")
    texts = [f"the {'parties' if n % 2 else 'party'} on day {n}" for n in range(300)]
    texts += [f"a walk on day {n}" for n in range(894)]
    texts += [f"Lisbon trip on day {n}" for n in range(5)] + ["Lisbon parties on day 1"]
    cubes = alice.write_many(("alice",), [{"text": t} for t in texts])
    lisbon = {c.id for c in cubes if "Lisbon" in c.text}
    party = {c.id for c in cubes if "part" in c.text}
    return lisbon, party


def test_common_words_are_counted_by_their_stem_and_left_out(mos: MemOS) -> None:
    lisbon, _ = _party_home(mos)
    # "parties" is indexed as "parti", in 301 of 1,200 cubes (> 10 %): it is left out, so only Lisbon
    # cubes are scored; counting the unstemmed word (found nowhere as such) kept it in
    hits = mos.catalog.lexical("parties in Lisbon", CubeFilter(prefixes=["alice"]), 50)
    assert {cid for cid, _ in hits} == lisbon


def test_when_every_word_is_common_the_rarest_is_kept(mos: MemOS) -> None:
    _, party = _party_home(mos)
    # "day" is in every cube, "parties" in a quarter: the query scores the party cubes only
    hits = mos.catalog.lexical("parties day", CubeFilter(prefixes=["alice"]), 400)
    assert {cid for cid, _ in hits} == party


def test_small_collections_keep_every_word(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    cubes = alice.write_many(("alice",), [{"text": f"the party on day {n}"} for n in range(50)] + [{"text": "Lisbon"}])
    hits = mos.catalog.lexical("parties in Lisbon", CubeFilter(prefixes=["alice"]), 100)
    assert {cid for cid, _ in hits} == {c.id for c in cubes}


def test_query_words_are_stemmed_by_the_index_tokenizer(mos: MemOS) -> None:
    with mos.catalog.read() as conn:
        stems = mos.catalog._stems_of(conn, ["parties", "running", "lisbon", "e_mail", "caf\u00e9"])
    assert stems == {
        "parties": ("parti",),
        "running": ("run",),
        "lisbon": ("lisbon",),
        "e_mail": ("e", "mail"),
        "caf\u00e9": ("cafe",),  # unicode61 folds diacritics
    }


def test_rrf_fusion_exact() -> None:
    fused = fuse([["a", "b", "c"], ["c", "a"]])
    assert fused == [("a", 1 / 61 + 1 / 62), ("c", 1 / 63 + 1 / 61), ("b", 1 / 62)]
    assert fuse([["x"], ["y"]]) == [("x", 1 / 61), ("y", 1 / 61)]  # ties break by id


def test_failed_transaction_leaves_nothing(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    alice.write(("alice",), "kept")
    before = mos.catalog.count(CubeFilter())
    try:
        with mos.catalog.tx() as conn:
            conn.execute(sa.text("DELETE FROM cubes"))
            raise RuntimeError("crash mid-write")
    except RuntimeError:
        pass
    assert mos.catalog.count(CubeFilter()) == before == 1


def test_outbox_clear_keeps_an_entry_requeued_meanwhile(mos: MemOS) -> None:
    cube = mos.as_user("alice").write(("alice",), "the boat leaves at noon")
    when = datetime(2024, 1, 1, tzinfo=UTC)
    with mos.catalog.tx() as conn:
        mos.catalog.queue_vector_sync(conn, [cube.id], when)
    seen = mos.catalog.vector_sync_generations([cube.id])
    assert seen == {cube.id: 0}
    # another process commits a change to the same cube while this sync is embedding
    with mos.catalog.tx() as conn:
        mos.catalog.queue_vector_sync(conn, [cube.id], when)
    mos.catalog.clear_vector_sync(seen)
    assert mos.catalog.pending_vector_sync() == [cube.id]
    mos.sync_vectors([cube.id])
    assert mos.catalog.pending_vector_sync() == []
    assert mos.catalog.count_pending_vector_sync() == 0


def test_lexical_queries_from_many_threads_agree(mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads sharing the catalog's cached term counts (reset on every query here) rank as one thread does."""
    _party_home(mos)
    monkeypatch.setattr(catalog_module, "TERM_STATS_TTL_S", 0.0)
    queries = ["parties in Lisbon", "parties day", "a walk in Lisbon", "trip day 3"] * 10
    flt = CubeFilter(prefixes=["alice"])
    expected = {q: mos.catalog.lexical(q, flt, 20) for q in set(queries)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: (q, mos.catalog.lexical(q, flt, 20)), queries))
    assert all(hits == expected[q] for q, hits in results)
