"""Conformance: every system call, end to end, on both backend pairs (SQLite + embedded chromadb, PostgreSQL +
a Chroma server), with the same expected results.

Where results legitimately differ: lexical scores (SQLite FTS5 BM25 vs PostgreSQL ts_rank_cd) are on other
scales, so hits' `lexical` values are never compared, and recall / working-set orders are compared as sets
whenever more than one hit matches the query's words (the fused rank of a lexical match may then differ);
dense ranking (same vectors, cosine) and everything that is not a score are compared exactly.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from memos import ManualClock, MemOS
from memos.errors import Conflict, NotFound, PermissionDenied, UserError
from memos.storage.catalog import CubeFilter

if TYPE_CHECKING:
    from conftest import Backend, ChromaServer, Postgres

NS = ("alice", "notes")
FACTS = [
    ("I moved to Lisbon in May 2023.", ["move"], {"topic": "home"}, datetime(2023, 5, 8, tzinfo=UTC)),
    ("My cat Miso likes sardines.", ["pet"], {"topic": "pets"}, datetime(2023, 6, 1, tzinfo=UTC)),
    ("I play the cello on Sundays.", ["music"], {"topic": "hobby"}, datetime(2023, 7, 2, tzinfo=UTC)),
    ("My sister lives in Porto.", ["family"], {"topic": "family"}, datetime(2023, 8, 9, tzinfo=UTC)),
    ("I started learning Portuguese.", ["move", "language"], {"topic": "home"}, datetime(2023, 9, 3, tzinfo=UTC)),
]


def _write_facts(mos: MemOS) -> dict[str, str]:
    alice = mos.as_user("alice")
    cubes = alice.write_many(
        NS,
        [
            {"text": t, "tags": tags, "labels": labels, "event_time": when, "provenance": {"external_id": f"F{i}"}}
            for i, (t, tags, labels, when) in enumerate(FACTS)
        ],
    )
    return {c.text: c.id for c in cubes}


def _texts(hits: list[Any]) -> list[str]:
    return [h.cube.text for h in hits]


def test_write_get_list_history(open_home: Callable[..., MemOS], backend: Backend) -> None:
    """write/write_many store every header field; get, list (three orders) and history read them back."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    single = alice.write(NS, "A lone note.", level="mid", ttl=3600, provenance={"external_id": "X1"})
    got = alice.get(ids["My cat Miso likes sardines."])
    assert got.header.tags == ["pet"]
    assert got.header.labels == {"topic": "pets"}
    assert got.header.event_time == datetime(2023, 6, 1, tzinfo=UTC)
    assert got.header.provenance.external_id == "F1"
    assert got.header.acl.owner == "alice"
    assert got.header.tokens > 0
    lone = alice.get(single.id)
    assert lone.level.value == "mid"
    assert lone.header.lifecycle.expires_at == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert lone.model_dump() == single.model_dump()
    assert [c.text for c in alice.list(NS)] == [f[0] for f in FACTS] + ["A lone note."]
    assert [c.text for c in alice.list(NS, level="mid")] == ["A lone note."]
    assert [c.text for c in alice.list(NS, limit=2)] == [f[0] for f in FACTS[:2]]
    assert [h.header.version for h in alice.history(single.id)] == [1]
    assert mos.catalog.existing_external_ids("alice/notes", ["F0", "F3", "nope"]) == {"F0", "F3"}


def test_update_versions_and_conflicts(open_home: Callable[..., MemOS], clock: ManualClock, backend: Backend) -> None:
    """update makes version 2, keeps version 1 in history, replaces tags/labels; a stale version is refused."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    cid = ids["I moved to Lisbon in May 2023."]
    clock.advance(minutes=5)
    new = alice.update(cid, "I moved to Faro in May 2023.", tags=["move", "south"], labels={"topic": "moves"})
    assert new.header.version == 2 and new.header.previous == 1
    history = alice.history(cid)
    assert [(v.header.version, v.text) for v in history] == [
        (1, "I moved to Lisbon in May 2023."),
        (2, "I moved to Faro in May 2023."),
    ]
    assert alice.get(cid).header.tags == ["move", "south"]
    assert alice.get(cid).header.updated_at == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    with pytest.raises(Conflict):
        alice.update(cid, "stale", expected_version=1)
    assert [h.cube.text for h in alice.recall(NS, "Faro", k=1)] == ["I moved to Faro in May 2023."]
    assert alice.recall(NS, "moves", k=5, labels={"topic": "home"})[0].cube.id == ids["I started learning Portuguese."]
    assert [h.cube.id for h in alice.recall(NS, "Faro south", k=5, tags=["south"])] == [cid]


def test_forget_soft_hard_restore(open_home: Callable[..., MemOS], backend: Backend) -> None:
    """Soft forget hides a cube (restorable, history kept); hard forget purges catalog, index and history."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    cat, cello = ids["My cat Miso likes sardines."], ids["I play the cello on Sundays."]
    alice.forget(cat)
    assert alice.get(cat).status.value == "deleted"
    assert cat not in {h.cube.id for h in alice.recall(NS, "cat Miso sardines", k=10)}
    assert cat not in {c.id for c in alice.list(NS)}
    assert [c.id for c in alice.list(NS, statuses=["deleted"])] == [cat]
    restored = alice.restore(cat)
    assert restored.status.value == "active"
    assert alice.recall(NS, "Miso sardines", k=1)[0].cube.id == cat
    alice.forget(cello, hard=True)
    with pytest.raises(NotFound):
        alice.get(cello)
    assert mos.catalog.versions(cello) == []
    assert cello not in mos.vectors.existing([cello])
    assert cello not in {h.cube.id for h in alice.recall(NS, "cello Sundays", k=10)}
    assert mos.vectors.count() == 4
    assert mos.catalog.count_pending_vector_sync() == 0
    actions = [(e["action"], e["cube_id"]) for e in alice.audit(limit=4)]
    assert actions[:3] == [("forget", cello), ("restore", cat), ("forget", cat)]


def test_recall_filters(open_home: Callable[..., MemOS], clock: ManualClock, backend: Backend) -> None:
    """recall by namespace prefix, level, tags, labels and event-time range; expired cubes never come back."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    alice.write(("alice", "other"), "Lisbon trams are yellow.", level="long")
    alice.write(NS, "A note about Lisbon that expires.", ttl=60)
    everything = alice.recall("alice", "Lisbon", k=10)
    # several hits match the word: their fused order may differ between lexical backends, so compare sets
    assert set(_texts(everything)) == {
        *(f[0] for f in FACTS),
        "Lisbon trams are yellow.",
        "A note about Lisbon that expires.",
    }
    assert _texts(alice.recall(NS, "Lisbon", k=10, level="long")) == []
    assert _texts(alice.recall("alice", "Lisbon", k=10, level="long")) == ["Lisbon trams are yellow."]
    assert {h.cube.id for h in alice.recall(NS, "move", k=10, tags=["move"])} == {
        ids["I moved to Lisbon in May 2023."],
        ids["I started learning Portuguese."],
    }
    assert [h.cube.id for h in alice.recall(NS, "x", k=10, tags=["move", "language"])] == [
        ids["I started learning Portuguese."]
    ]
    assert [h.cube.id for h in alice.recall(NS, "anything", k=10, labels={"topic": "pets"})] == [
        ids["My cat Miso likes sardines."]
    ]
    window = alice.recall(NS, "life", k=10, event_from="2023-06-01", event_to=datetime(2023, 8, 9, tzinfo=UTC))
    assert {h.cube.text for h in window} == {FACTS[1][0], FACTS[2][0], FACTS[3][0]}
    top = alice.recall(NS, "sardines", k=1)[0]
    assert top.cube.id == ids["My cat Miso likes sardines."]
    assert top.lexical is not None and top.lexical > 0 and top.dense is not None
    clock.advance(minutes=2)
    assert "A note about Lisbon that expires." not in _texts(alice.recall(NS, "Lisbon", k=10))
    # recall counts a use of each hit
    assert alice.get(ids["My cat Miso likes sardines."]).header.usage.access_count >= 2
    assert [c.text for c in alice.list(NS, order="used", limit=1)] == ["My cat Miso likes sardines."]


def test_stats_audit_and_tick_expiry(open_home: Callable[..., MemOS], clock: ManualClock, backend: Backend) -> None:
    """stats counts per kind/level/status and namespaces; tick expires due cubes; audit lists every change."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    short_lived = alice.write(NS, "Remember the dentist at three.", ttl=30)
    alice.forget(ids["My sister lives in Porto."])
    clock.advance(minutes=1)
    done = alice.tick()
    assert done["expired"] == 1
    assert alice.get(short_lived.id).status.value == "expired"
    stats = alice.stats()
    assert stats.counts == {
        ("plaintext", "short", "active"): 4,
        ("plaintext", "short", "deleted"): 1,
        ("plaintext", "short", "expired"): 1,
    }
    assert stats.namespaces == [("alice/notes", 6)]
    assert stats.num_vectors == 4
    assert stats.num_pending_vector_sync == 0
    log = alice.audit(limit=100)
    assert [e["action"] for e in log] == ["expire", "forget"] + ["write"] * 6
    assert all(e["actor"] == "alice" and e["ns"] == "alice/notes" for e in log)
    assert log[0]["at"] == datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    assert [e["action"] for e in alice.audit(short_lived.id)] == ["expire", "write"]


def test_share_revoke(open_home: Callable[..., MemOS], backend: Backend) -> None:
    """share lets another user read (or write) a namespace; revoke takes it back; grants lists them."""
    mos = open_home()
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    _write_facts(mos)
    with pytest.raises(PermissionDenied):
        bob.recall(NS, "Lisbon", k=3)
    alice.share(NS, "bob", "read")
    assert [(g["ns"], g["grantee"], g["right"]) for g in alice.grants(NS)] == [("alice/notes", "bob", "read")]
    assert set(_texts(bob.recall(NS, "Lisbon", k=10))) >= {FACTS[0][0]}
    with pytest.raises(PermissionDenied):
        bob.write(NS, "Bob was here.")
    alice.share(NS, "bob", "write")
    note = bob.write(NS, "Bob was here.")
    assert note.header.acl.owner == "alice"
    assert [(g["grantee"], g["right"]) for g in alice.grants(NS)] == [("bob", "write")]
    alice.revoke(NS, "bob")
    assert alice.grants(NS) == []
    with pytest.raises(PermissionDenied):
        bob.get(note.id)
    assert [u for u, _ in mos.users()] == ["alice", "bob"]
    assert alice.stats("alice/notes").counts == {("plaintext", "short", "active"): 6}


def test_export_import(open_home: Callable[..., MemOS], tmp_path: Path, backend: Backend) -> None:
    """export writes a namespace with its history; import restores it under another namespace, all or nothing."""
    mos = open_home()
    alice = mos.as_user("alice")
    ids = _write_facts(mos)
    alice.update(ids["My cat Miso likes sardines."], "My cat Miso likes tuna.")
    archive = tmp_path / "notes.tar.gz"
    summary = alice.export(NS, archive)
    assert tarfile.is_tarfile(archive) and summary
    result = alice.import_(archive, into=("alice", "copy"))
    assert result
    copied = alice.list(("alice", "copy"))
    assert sorted(c.text for c in copied) == sorted(
        [f[0] for f in FACTS if "Miso" not in f[0]] + ["My cat Miso likes tuna."]
    )
    tuna = next(c for c in copied if "tuna" in c.text)
    assert [v.text for v in alice.history(tuna.id)] == ["My cat Miso likes sardines.", "My cat Miso likes tuna."]
    assert alice.recall(("alice", "copy"), "tuna", k=1)[0].cube.id == tuna.id
    assert mos.vectors.count() == 10
    # an archive that is not one is refused and nothing is written
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(UserError):
        alice.import_(bad, into=("alice", "broken"))
    assert alice.list(("alice", "broken")) == []


def test_tick_paging_small_settings(open_home: Callable[..., MemOS], clock: ManualClock, backend: Backend) -> None:
    """With a 2-page short-term memory and 1 segment, tick pages turns out to mid-term, and context still finds them."""
    mos = open_home(paging={"stm_capacity": 2, "max_segments": 1, "tau": 100.0})
    alice = mos.as_user("alice")
    turns = [
        "We talked about the trip to the Azores volcano.",
        "The Azores hike starts at the crater lake.",
        "Then we discussed my new job at the bakery.",
        "The bakery opens at six in the morning.",
        "Finally we chose a name for the puppy: Pepper.",
        "Pepper the puppy sleeps in a basket.",
    ]
    for i, text in enumerate(turns):
        clock.advance(minutes=1)
        alice.write(NS, text, provenance={"session_id": f"s{i // 2}", "speaker": "alice"})
    done = alice.tick()
    assert done["moved"] == 4
    stats = alice.stats()
    assert stats.paging["short_pages"] == 2
    assert stats.paging["mid_pages"] + stats.paging["paged_out_pages"] == 4
    assert stats.paging["segments"] >= 1
    assert stats.num_pending_vector_sync == 0
    ws = alice.context(NS, "When does the bakery open?", budget_tokens=300)
    assert ws.tokens <= 300
    assert "The bakery opens at six in the morning." in ws.render()
    again = alice.tick()
    assert again["moved"] == 0


def _scenario(mos: MemOS, clock: ManualClock, tmp: Path) -> dict[str, Any]:
    """Every system call once; the results with ids replaced by texts and lexical scores left out."""
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    ids = _write_facts(mos)
    label = {v: k for k, v in ids.items()}
    out: dict[str, Any] = {}
    clock.advance(seconds=10)
    alice.update(ids["My sister lives in Porto."], "My sister lives in Braga.", tags=["family", "north"])
    alice.forget(ids["I play the cello on Sundays."])
    alice.forget(ids["My cat Miso likes sardines."], hard=True)
    alice.restore(ids["I play the cello on Sundays."])
    alice.share(NS, "bob", "read")
    out["bob_reads"] = sorted(_texts(bob.recall(NS, "sister Braga", k=10)))
    alice.revoke(NS, "bob")
    out["dense_only"] = [(h.cube.text, round(h.dense or 0.0, 5)) for h in alice.recall(NS, "zzqx", k=3)]
    out["unique_word_top"] = _texts(alice.recall(NS, "cello", k=1))
    out["filters"] = sorted(_texts(alice.recall(NS, "move", k=10, tags=["move"], event_to="2023-06-30")))
    out["list"] = [(c.text, c.status.value, c.header.version, c.header.tags) for c in alice.list(NS)]
    out["history"] = [[v.text for v in alice.history(i)] for i in ids.values() if i in label and _exists(alice, i)]
    stats = alice.stats()
    out["stats"] = (stats.counts, stats.namespaces, stats.num_vectors, stats.num_pending_vector_sync, stats.paging)
    out["audit"] = [(e["actor"], e["action"], label.get(e["cube_id"], e["cube_id"]), e["ns"]) for e in alice.audit()]
    alice.export(NS, tmp / "a.tar.gz")
    alice.import_(tmp / "a.tar.gz", into=("alice", "copy"))
    out["copy"] = sorted(c.text for c in alice.list(("alice", "copy")))
    out["tick"] = alice.tick()
    ws = alice.context(NS, "Where does my sister live?", budget_tokens=200)
    out["context"] = sorted(item.cube.text for item in ws.items)
    return out


def _exists(session: Any, cube_id: str) -> bool:
    try:
        session.get(cube_id)
    except NotFound:
        return False
    return True


def test_same_transcript_on_both_pairs(postgres: Postgres, chroma_server: ChromaServer, tmp_path: Path) -> None:
    """The same scenario on both pairs gives the same transcript (lexical scores left out, ties compared as sets)."""
    transcripts = []
    database = postgres.create_database()
    try:
        for i, overrides in enumerate(
            [{}, {"catalog_url": postgres.url(database), "vector_url": chroma_server.url(f"conformance_{database}")}]
        ):
            clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
            work = tmp_path / f"pair{i}"
            work.mkdir()
            mos = MemOS.open(work / "home", clock=clock, embedder="hash", auto_paging=False, **overrides)
            try:
                transcripts.append(_scenario(mos, clock, work))
            finally:
                mos.close()
    finally:
        postgres.drop_database(database)
    sqlite_run, postgres_run = transcripts
    for key in sqlite_run:
        assert postgres_run[key] == sqlite_run[key], key


def test_unstorable_values_refused_alike(open_home: Callable[..., MemOS], backend: Backend) -> None:
    """NUL characters and over-long external ids are refused with UserError on both pairs; nothing is written."""
    mos = open_home()
    alice = mos.as_user("alice")
    with pytest.raises(UserError, match="NUL"):
        alice.write(NS, "nul\x00byte")
    with pytest.raises(UserError, match="NUL"):
        alice.write_many(NS, [{"text": "fine"}, {"text": "tagged", "tags": ["a\x00b"]}])
    with pytest.raises(UserError, match="external id"):
        alice.write(NS, "long id", provenance={"external_id": "e" * 257})
    kept = alice.write(NS, "ok", provenance={"external_id": "e" * 256})
    with pytest.raises(UserError, match="NUL"):
        alice.update(kept.id, "now with \x00")
    assert [(c.text, c.header.version) for c in alice.list(NS)] == [("ok", 1)]
    assert [e["action"] for e in alice.audit()] == ["write"]
    assert mos.vectors.count() == 1


def test_reopen_and_conversation_context(open_home: Callable[..., MemOS], backend: Backend) -> None:
    """A home reopened (migrations already applied) keeps everything; a reply is found by its question's words."""
    mos = open_home()
    alice = mos.as_user("alice")
    question = alice.write(NS, "Which instrument do you play?", provenance={"session_id": "s1", "speaker": "bob"})
    answer = alice.write(NS, "Mostly the cello, since school.", provenance={"session_id": "s1", "speaker": "alice"})
    assert answer.header.provenance.preceded_by == question.id
    mos.close()
    again = open_home()
    alice = again.as_user("alice")
    assert [c.id for c in alice.list(NS)] == [question.id, answer.id]
    hits = alice.recall(NS, "instrument", k=2)
    assert {h.cube.id for h in hits} == {question.id, answer.id}
    # the answer is found by the words of the question it follows (the lexical index's context column);
    # the scales differ between FTS5 and tsvector, so only the set and the signs are compared
    lexical = again.catalog.lexical("instrument", CubeFilter(prefixes=["alice/notes"]), 5, context_weight=1.0)
    assert {cid for cid, _ in lexical} == {question.id, answer.id}
    assert all(score > 0 for _, score in lexical)
    own_text_only = again.catalog.lexical("instrument", CubeFilter(prefixes=["alice/notes"]), 5)
    assert [cid for cid, _ in own_text_only] == [question.id]
    assert again.catalog.count_pending_vector_sync() == 0
