"""The system calls end to end on a real home: SQLite catalog, embedded chromadb, hashing embedder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memos import Conflict, Level, ManualClock, MemOS, NotFound, PermissionDenied, Status, UserError
from memos.storage.catalog import CubeFilter

NS = ("alice", "chat")
ALL = ("active", "archived", "expired", "deleted")


def test_issue_example_end_to_end(mos: MemOS, clock: ManualClock) -> None:
    alice = mos.as_user("alice")
    cube = alice.write(
        NS,
        "I moved to Lisbon in May 2023.",
        level="short",
        event_time=datetime(2023, 5, 8, 13, 56),
        provenance={"external_id": "D1:3"},
        tags=["move"],
    )
    alice.write(NS, "My sister Ana plays the cello in an orchestra.")
    alice.write(NS, "We adopted a grey cat called Miso.")
    hits = alice.recall(NS, "Where does Alice live? She moved to Lisbon", k=10)
    assert hits[0].cube.id == cube.id
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 61)
    assert hits[0].dense_rank == 1 and hits[0].lexical_rank == 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    clock.advance(hours=1)
    updated = alice.update(cube.id, "I moved to Porto in May 2023.")
    assert (updated.header.version, updated.header.previous) == (2, 1)
    assert updated.header.updated_at == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert updated.header.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    history = alice.history(cube.id)
    assert [(c.header.version, c.text) for c in history] == [
        (1, "I moved to Lisbon in May 2023."),
        (2, "I moved to Porto in May 2023."),
    ]
    assert alice.recall(NS, "Porto", k=1)[0].cube.id == cube.id
    assert all(h.cube.id != cube.id for h in alice.recall(NS, "Lisbon", k=10) if h.lexical is not None)

    alice.forget(cube.id)
    assert alice.get(cube.id).status == Status.deleted
    assert cube.id not in {h.cube.id for h in alice.recall(NS, "moved to Porto", k=10)}
    assert len(alice.history(cube.id)) == 2

    alice.forget(cube.id, hard=True)
    with pytest.raises(NotFound):
        alice.get(cube.id)
    assert mos.catalog.versions(cube.id) == []
    assert cube.id not in mos.vectors.all_ids()
    actions = [(e["action"], e["detail"]) for e in mos.catalog.audit_log(cube_id=cube.id)]
    assert actions == [
        ("forget", {"hard": True}),
        ("forget", {"hard": False}),
        ("update", {"version": 2}),
        ("write", {}),
    ]


def test_header_fields_are_filled(mos: MemOS, clock: ManualClock) -> None:
    alice = mos.as_user("alice")
    cube = alice.write(
        NS,
        "hello world",
        event_time="2023-05-08T13:56:00",
        provenance={"external_id": "D1:3", "session_id": "s1", "source": "message"},
        labels={"type": "episode"},
        ttl=3600,
    )
    h = cube.header
    assert cube.namespace == NS and cube.level == Level.short and cube.kind.value == "plaintext"
    assert h.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert h.provenance.actor == "alice" and h.provenance.external_id == "D1:3"
    assert h.lifecycle.expires_at == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert h.acl.owner == "alice"
    assert h.tokens == 2  # cl100k: "hello", " world"
    assert h.embedder == "hash-v1-256"
    assert h.labels == {"type": "episode"}
    assert alice.get(cube.id) == cube


def test_recall_counts_accesses(mos: MemOS, clock: ManualClock) -> None:
    alice = mos.as_user("alice")
    cube = alice.write(NS, "the blue bicycle is in the garage")
    clock.advance(minutes=5)
    alice.recall(NS, "bicycle")
    alice.recall(NS, "bicycle garage")
    usage = alice.get(cube.id).header.usage
    assert usage.access_count == 2
    assert usage.last_access == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)


def test_recall_filters(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    a = alice.write(NS, "trip to Kyoto in spring", tags=["travel"], event_time="2023-04-01", labels={"type": "fact"})
    b = alice.write(NS, "trip to Oslo in winter", tags=["travel", "cold"], event_time="2023-12-01", level="long")
    c = alice.write(("alice", "work"), "business trip to Berlin", event_time="2023-06-01")
    ids = lambda hits: {h.cube.id for h in hits}  # noqa: E731
    assert ids(alice.recall(("alice",), "trip")) == {a.id, b.id, c.id}
    assert ids(alice.recall(NS, "trip")) == {a.id, b.id}
    assert ids(alice.recall(("alice",), "trip", tags=["travel"])) == {a.id, b.id}
    assert ids(alice.recall(("alice",), "trip", tags=["travel", "cold"])) == {b.id}
    assert ids(alice.recall(("alice",), "trip", level="long")) == {b.id}
    assert ids(alice.recall(("alice",), "trip", level=["short", "long"])) == {a.id, b.id, c.id}
    assert ids(alice.recall(("alice",), "trip", labels={"type": "fact"})) == {a.id}
    assert ids(alice.recall(("alice",), "trip", event_from="2023-05-01", event_to="2023-11-30")) == {c.id}
    assert ids(alice.recall(("alice",), "trip", event_to="2023-05-01")) == {a.id}
    # only plaintext cubes hold searchable text until the activation/parametric tiers land
    assert ids(alice.recall(("alice",), "trip", kind="activation")) == set()
    with pytest.raises(UserError, match="invalid kind"):
        alice.recall(("alice",), "trip", kind="jpeg")


def test_namespace_prefix_does_not_match_siblings(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    alice.write(("alice", "ab"), "apples and pears")
    inside = alice.write(("alice", "a", "x"), "apples and plums")
    assert {h.cube.id for h in alice.recall(("alice", "a"), "apples")} == {inside.id}


def test_expired_cubes_are_never_returned(mos: MemOS, clock: ManualClock) -> None:
    alice = mos.as_user("alice")
    short_lived = alice.write(NS, "the door code is 4812", ttl=60)
    keeper = alice.write(NS, "the door is red")
    assert {h.cube.id for h in alice.recall(NS, "door")} == {short_lived.id, keeper.id}
    clock.advance(seconds=61)
    # expired by time alone, before any tick has run
    assert {h.cube.id for h in alice.recall(NS, "door")} == {keeper.id}
    done = alice.tick()
    assert (done["expired"], done["vector_synced"]) == (1, 1)
    assert alice.get(short_lived.id).status == Status.expired
    assert short_lived.id not in mos.vectors.all_ids()
    done = alice.tick()
    assert (done["expired"], done["vector_synced"]) == (0, 0)


def test_governance(mos: MemOS) -> None:
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    cube = alice.write(NS, "my bank PIN hint is the cat's birthday")
    with pytest.raises(PermissionDenied):
        bob.recall(NS, "PIN")
    with pytest.raises(PermissionDenied):
        bob.get(cube.id)
    with pytest.raises(PermissionDenied):
        bob.forget(cube.id)
    with pytest.raises(PermissionDenied):
        bob.write(NS, "bob was here")
    with pytest.raises(PermissionDenied):
        bob.history(cube.id)
    with pytest.raises(PermissionDenied):
        bob.share(NS, "bob")

    alice.share(NS, "bob", "read")
    assert [h.cube.id for h in bob.recall(NS, "PIN")] == [cube.id]
    # a grant on alice/chat lets bob search from the root, limited to what he may read
    alice.write(("alice", "diary"), "PIN change reminder")
    assert [h.cube.id for h in bob.recall(("alice",), "PIN")] == [cube.id]
    with pytest.raises(PermissionDenied):
        bob.forget(cube.id)

    alice.share(NS, "bob", "write")
    bob.update(cube.id, "the PIN hint changed")
    assert alice.get(cube.id).header.version == 2

    alice.revoke(NS, "bob")
    with pytest.raises(PermissionDenied):
        bob.get(cube.id)
    with pytest.raises(NotFound):
        alice.revoke(NS, "bob")
    with pytest.raises(NotFound):
        alice.share(NS, "nobody")
    assert [(e["action"], e["actor"]) for e in mos.catalog.audit_log() if e["action"] in ("share", "revoke")] == [
        ("revoke", "alice"),
        ("share", "alice"),
        ("share", "alice"),
    ]


def test_team_root_belongs_to_first_writer(mos: MemOS) -> None:
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    alice.write(("team-x", "notes"), "kickoff on Monday")
    with pytest.raises(PermissionDenied):
        bob.write(("team-x", "other"), "sneaky")
    with pytest.raises(UserError, match="already belongs to 'alice'"):
        mos.as_user("team-x")


def test_update_conflicts_and_validation(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    cube = alice.write(NS, "first")
    alice.update(cube.id, "second", expected_version=1)
    with pytest.raises(Conflict, match="version 2, not 1"):
        alice.update(cube.id, "third", expected_version=1)
    with pytest.raises(UserError, match="nothing to update"):
        alice.update(cube.id)
    updated = alice.update(cube.id, tags=["x"], level="mid")
    assert (updated.text, updated.header.tags, updated.level, updated.header.version) == ("second", ["x"], Level.mid, 3)
    alice.forget(cube.id)
    with pytest.raises(Conflict, match="forgotten"):
        alice.update(cube.id, "zombie")
    restored = alice.restore(cube.id)
    assert restored.status == Status.active
    assert [h.cube.id for h in alice.recall(NS, "second")] == [cube.id]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.write(("alice", "chat"), ""), "empty"),
        (lambda s: s.write(("alice", "chat"), "   \n"), "empty"),
        (lambda s: s.write(("alice", "chat"), "x" * 20_001), "over the limit of 20000"),
        (lambda s: s.write(("alice", "c h a t"), "hi"), "invalid namespace segment"),
        (lambda s: s.write((), "hi"), "at least one segment"),
        (lambda s: s.write(("alice", "../etc"), "hi"), "invalid namespace segment"),
        (lambda s: s.write(("alice",), "hi", level="huge"), "invalid level 'huge'"),
        (lambda s: s.write(("alice",), "hi", kind="activation"), "only plaintext"),
        (lambda s: s.write(("alice",), "hi", event_time="yesterday"), "not an ISO-8601"),
        (lambda s: s.write(("alice",), "hi", provenance={"color": "red"}), "bad provenance field color"),
        (lambda s: s.write(("alice",), "hi", tags="move"), "tags must be a list"),
        (lambda s: s.write(("alice",), "hi", labels={"bad key": "x"}), "invalid label name"),
        (lambda s: s.write(("alice",), "hi", ttl=-5), "positive"),
        (lambda s: s.get("not-an-id"), "is not a cube id"),
        (lambda s: s.get("01890a5d-ac96-774b-bcce-b302099a8057"), "no cube with id"),
        (lambda s: s.forget("01890a5d-ac96-774b-bcce-b302099a8057"), "no cube with id"),
        (lambda s: s.recall(("alice",), "q", k=0), "k must be an integer"),
        (lambda s: s.recall(("alice",), ""), "query is empty"),
        (lambda s: s.write_many(("alice",), [{"txt": "typo"}]), "unknown write fields"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(mos: MemOS, call, message: str) -> None:  # type: ignore[no-untyped-def]
    alice = mos.as_user("alice")
    alice.write(("alice", "chat"), "existing memory")
    before = mos.catalog.count(CubeFilter(statuses=ALL))
    with pytest.raises(UserError, match=message):
        call(alice)
    assert mos.catalog.count(CubeFilter(statuses=ALL)) == before
    assert mos.vectors.count() == before


def test_write_many_is_all_or_nothing(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    with pytest.raises(UserError, match="empty"):
        alice.write_many(NS, [{"text": "fine"}, {"text": ""}])
    assert mos.catalog.count(CubeFilter(statuses=ALL)) == 0
    written = alice.write_many(NS, [{"text": f"note number {i}"} for i in range(5)])
    assert [c.text for c in alice.list(NS)] == [f"note number {i}" for i in range(5)]
    assert sorted(c.id for c in written) == [c.id for c in written]  # ids sort in write order


def test_reopen_keeps_everything(home, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        cube = mos.as_user("alice").write(NS, "the spare key is under the plant")
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        assert [h.cube.id for h in mos.as_user("alice").recall(NS, "spare key")] == [cube.id]
        assert mos.users()[0][0] == "alice"


def test_embedder_mismatch_is_refused_then_reindex_fixes(home, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        cube = mos.as_user("alice").write(NS, "orchids need little water")
    with pytest.raises(UserError, match=r"built with embedder 'hash-v1-256'.*memos reindex"):
        MemOS.open(home, embedder="hash:64", clock=clock)
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        assert mos.vectors.count() == 1
    from memos.config import Settings
    from memos.kernel import MemOS as Kernel

    mos = Kernel(Settings.load(home, embedder="hash:64"), clock=clock, rebuild_vectors=True)
    assert mos.vectors.embedder_id == "hash-v1-64" and mos.vectors.count() == 1
    assert [h.cube.id for h in mos.as_user("alice").recall(NS, "orchids")] == [cube.id]


def test_catalog_is_source_of_truth_on_open(home, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        alice = mos.as_user("alice")
        kept = [alice.write(NS, f"memory about topic {i}").id for i in range(3)]
        # the index loses two vectors and gains one the catalog never had
        mos.vectors.delete(kept[:2])
        import numpy as np

        mos.vectors.upsert(["01890a5d-ac96-774b-bcce-b302099a8057"], np.ones((1, 256), np.float32) / 16)
    with MemOS.open(home, embedder="hash", clock=clock) as mos:
        assert mos.vectors.all_ids() == set(kept)
        assert mos.as_user("alice").recall(NS, "topic 0")[0].dense is not None


def test_stats_and_list(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    a = alice.write(NS, "one")
    alice.write(("alice", "work"), "two", level="long")
    alice.forget(a.id)
    stats = alice.stats()
    assert stats.counts == {("plaintext", "long", "active"): 1, ("plaintext", "short", "deleted"): 1}
    assert stats.namespaces == [("alice/chat", 1), ("alice/work", 1)]
    assert (stats.num_vectors, stats.num_pending_vector_sync, stats.total) == (1, 0, 2)
    assert mos.as_user("bob").stats().counts == {}


def test_session_audit_shows_own_actions_and_readable_namespaces(mos: MemOS) -> None:
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    for i in range(30):
        bob.write(("bob",), f"bob's note {i}")
    shared = alice.write(NS, "shared note")
    alice.write(("alice", "private"), "private note")
    alice.share(NS, "bob")
    entries = bob.audit(limit=5)
    # newest first; alice's write under alice/chat is visible to bob, her private one is not
    assert [(e["actor"], e["action"], e["ns"]) for e in entries] == [
        ("alice", "share", "alice/chat"),
        ("alice", "write", "alice/chat"),
        ("bob", "write", "bob"),
        ("bob", "write", "bob"),
        ("bob", "write", "bob"),
    ]
    assert entries[1]["cube_id"] == shared.id
