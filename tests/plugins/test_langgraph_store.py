"""MemosStore, memos as LangGraph's long-term store: the same random operations as LangGraph's InMemoryStore,
semantic search through recall, TTL on the kernel's clock, namespace errors, abatch, a compiled graph."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from importlib import metadata
from typing import Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from memos import ManualClock, MemOS, PermissionDenied, Session, Status, UserError
from memos.plugins.langgraph_plugin import make_store, memos_register_agents
from memos.plugins.langgraph_store import (
    NEVER,
    MemosStore,
    StoreNamespaceError,
    decode_segment,
    encode_label,
)
from memos.registry import Registry

# ---- the reference: LangGraph's InMemoryStore ------------------------------------------------------


class Reference(InMemoryStore):
    """InMemoryStore, less one quirk: it keeps a namespace once a get or delete touched it, even empty.

    LangGraph's SQL stores and MemosStore hold a namespace while it holds items, so the reference drops
    empty namespaces before listing them and around each batch's puts; everything else is InMemoryStore's.
    """

    def _prune(self) -> None:
        for namespace in [ns for ns, items in self._data.items() if not items]:
            del self._data[namespace]

    def _handle_list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        self._prune()
        return super()._handle_list_namespaces(op)

    def _apply_put_ops(self, put_ops: dict[tuple[tuple[str, ...], str], PutOp]) -> None:
        self._prune()
        super()._apply_put_ops(put_ops)
        self._prune()


#: labels: plain ones, and ones memos segments refuse (space, non-ASCII, leading '_' or '@')
LABELS = ["users", "docs", "v1", "a b", "ünï", "x-y", "_p", "@at"]
KEYS = ["k0", "k1", "k2", "k 3", "ключ", ""]
TAGS = ["red", "blue", "green"]
WORDS = ["lisbon", "porto", "dog", "pixel", "coffee", "morning", "tea", "garden", "river", "book"]


def random_namespace(rng: random.Random) -> tuple[str, ...]:
    """One to three labels."""
    return tuple(rng.choice(LABELS) for _ in range(rng.randint(1, 3)))


def random_value(rng: random.Random) -> dict[str, Any]:
    """A JSON value; 'n' is always there, so numeric filters never compare a missing field."""
    value: dict[str, Any] = {"n": rng.randint(0, 9), "tag": rng.choice(TAGS), "text": " ".join(rng.sample(WORDS, 3))}
    if rng.random() < 0.4:
        value["meta"] = {"x": rng.randint(0, 2), "deep": {"y": rng.choice(TAGS)}}
    if rng.random() < 0.3:
        value["list"] = [rng.randint(0, 2) for _ in range(rng.randint(0, 2))]
    return value


def random_filter(rng: random.Random) -> dict[str, Any] | None:
    """None, an exact match (flat, nested or a list), or comparison operators."""
    return rng.choice(
        [
            None,
            None,
            {"tag": rng.choice(TAGS)},
            {"n": {"$gt": rng.randint(0, 9)}},
            {"n": {"$gte": rng.randint(0, 5), "$lt": rng.randint(4, 10)}},
            {"n": {"$lte": rng.randint(0, 9)}, "tag": {"$ne": rng.choice(TAGS)}},
            {"tag": {"$eq": rng.choice(TAGS)}},
            {"meta": {"x": rng.randint(0, 2)}},
            {"meta": {"deep": {"y": rng.choice(TAGS)}}},
            {"list": [rng.randint(0, 2)]},
        ]
    )


def random_pattern(rng: random.Random, known: list[tuple[str, ...]]) -> tuple[str, ...]:
    """A prefix or suffix pattern: from a stored namespace or made up, some labels replaced by '*'."""
    base = rng.choice(known) if known and rng.random() < 0.7 else random_namespace(rng)
    size = rng.randint(1, len(base))
    part = base[:size] if rng.random() < 0.5 else base[-size:]
    return tuple("*" if rng.random() < 0.25 else label for label in part)


def random_op(rng: random.Random, known: list[tuple[str, ...]]) -> Any:
    """One store operation as an op object (for batches)."""
    namespace = rng.choice(known) if known and rng.random() < 0.7 else random_namespace(rng)
    roll = rng.random()
    if roll < 0.35:
        return PutOp(namespace, rng.choice(KEYS), random_value(rng), index=rng.choice([None, False, ["text"]]))
    if roll < 0.45:
        return PutOp(namespace, rng.choice(KEYS), None)
    if roll < 0.6:
        return GetOp(namespace, rng.choice(KEYS))
    if roll < 0.85:
        prefix = namespace[: rng.randint(0, len(namespace))]
        return SearchOp(prefix, random_filter(rng), rng.choice([10, 1, 2, 3, 5]), rng.choice([0, 0, 1, 2]))
    conditions = []
    if rng.random() < 0.5:
        conditions.append(MatchCondition("prefix", random_pattern(rng, known)))
    if rng.random() < 0.4:
        conditions.append(MatchCondition("suffix", random_pattern(rng, known)))
    return ListNamespacesOp(
        tuple(conditions), rng.choice([None, None, 1, 2, 3]), rng.choice([100, 2, 4]), rng.choice([0, 0, 1])
    )


def run_op(store: Any, op: Any) -> Any:
    """Run an op through the store's public methods (the way graphs call them)."""
    if isinstance(op, PutOp):
        if op.value is None:
            return store.delete(op.namespace, op.key)
        return store.put(op.namespace, op.key, op.value, index=op.index)
    if isinstance(op, GetOp):
        return store.get(op.namespace, op.key)
    if isinstance(op, SearchOp):
        return store.search(op.namespace_prefix, filter=op.filter, limit=op.limit, offset=op.offset)
    prefix = next((c.path for c in op.match_conditions if c.match_type == "prefix"), None)
    suffix = next((c.path for c in op.match_conditions if c.match_type == "suffix"), None)
    return store.list_namespaces(prefix=prefix, suffix=suffix, max_depth=op.max_depth, limit=op.limit, offset=op.offset)


def plain(result: Any) -> Any:
    """A result without timestamps and scores: (namespace, key, value) per item, tuples per namespace."""
    if isinstance(result, Item):
        return (result.namespace, result.key, result.value)
    if isinstance(result, list):
        return [plain(r) if isinstance(r, Item) else tuple(r) for r in result]
    return result


@pytest.fixture
def alice(mos: MemOS) -> Session:
    """Alice's session on the test home."""
    return mos.as_user("alice")


SEQUENCES = 24
OPS_PER_SEQUENCE = 30


def test_random_operations_match_in_memory_store(mos: MemOS, alice: Session, clock: ManualClock) -> None:
    """Dozens of seeded sequences of puts, updates, deletes, gets, filtered searches, listings and mixed
    batches give the same values, keys and namespaces, in the same order, as LangGraph's InMemoryStore."""
    checked = 0
    for seed in range(SEQUENCES):
        rng = random.Random(seed)
        store = MemosStore(alice, root=("alice", f"seq{seed}"))
        reference = Reference()
        known: list[tuple[str, ...]] = []
        for step in range(OPS_PER_SEQUENCE):
            clock.advance(seconds=rng.choice([0, 1]))
            if rng.random() < 0.15:
                ops = [random_op(rng, known) for _ in range(rng.randint(2, 6))]
                got, want = store.batch(ops), reference.batch(ops)
                assert [plain(r) for r in got] == [plain(r) for r in want], f"seed {seed} step {step}: {ops}"
            else:
                op = random_op(rng, known)
                got, want = run_op(store, op), run_op(reference, op)
                assert plain(got) == plain(want), f"seed {seed} step {step}: {op}"
                if isinstance(op, PutOp) and op.value is not None and op.namespace not in known:
                    known.append(op.namespace)
            checked += 1
        # the whole state, listed both ways, agrees at the end of every sequence
        everything = SearchOp((), None, 1000, 0)
        assert plain(store.batch([everything])[0]) == plain(reference.batch([everything])[0]), f"seed {seed}"
        assert store.list_namespaces(limit=1000) == reference.list_namespaces(limit=1000), f"seed {seed}"
    assert checked == SEQUENCES * OPS_PER_SEQUENCE


def test_a_batch_reads_the_state_before_its_puts(alice: Session) -> None:
    """Reads in a batch see the state before its puts; puts to one key collapse to the last, as InMemoryStore."""
    store, reference = MemosStore(alice), Reference()
    ops = [
        PutOp(("docs",), "a", {"n": 1}),
        GetOp(("docs",), "a"),
        SearchOp(("docs",)),
        PutOp(("docs",), "b", {"n": 2}),
        PutOp(("docs",), "a", {"n": 3}),
        ListNamespacesOp(),
    ]
    assert store.batch(ops) == [None, None, [], None, None, []] == reference.batch(ops)
    after = [GetOp(("docs",), "a"), SearchOp(("docs",)), ListNamespacesOp()]
    got, want = store.batch(after), reference.batch(after)
    assert [plain(r) for r in got] == [plain(r) for r in want]
    assert plain(got[1]) == [(("docs",), "a", {"n": 3}), (("docs",), "b", {"n": 2})]


# ---- items are cubes -------------------------------------------------------------------------------


def test_items_are_cubes_with_versions_and_audit(alice: Session, clock: ManualClock) -> None:
    """A put writes a long-term cube (key as external id, value in labels); an update is a new version;
    a delete forgets the cube; the audit log has all three."""
    store = MemosStore(alice, index={"fields": ["text"]})
    store.put(("notes", "trip"), "day1", {"text": "We walked along the river in Porto", "mood": "happy"})
    cube = store.cube(("notes", "trip"), "day1")
    assert cube is not None
    assert cube.namespace == ("alice", "langgraph", "notes", "trip")
    assert cube.text == "We walked along the river in Porto"
    assert cube.level.value == "long" and cube.header.tags == ["langgraph"]
    assert cube.header.provenance.external_id == "day1" and cube.header.provenance.actor == "alice"
    clock.advance(minutes=5)
    store.put(("notes", "trip"), "day1", {"text": "We took the tram up the hill", "mood": "tired"})
    item = store.get(("notes", "trip"), "day1")
    assert item is not None and item.value == {"text": "We took the tram up the hill", "mood": "tired"}
    assert item.created_at == cube.header.created_at
    assert item.updated_at == cube.header.created_at + timedelta(minutes=5)
    history = alice.history(cube.id)
    assert [c.header.version for c in history] == [1, 2]
    assert [c.text for c in history] == ["We walked along the river in Porto", "We took the tram up the hill"]
    store.delete(("notes", "trip"), "day1")
    assert store.get(("notes", "trip"), "day1") is None and store.cube(("notes", "trip"), "day1") is None
    assert alice.get(cube.id).status == Status.deleted
    assert [e["action"] for e in alice.audit(cube.id)] == ["forget", "update", "write"]


def test_large_values_and_hard_delete(alice: Session) -> None:
    """A value longer than one label round-trips exactly; hard_delete purges the cube."""
    store = MemosStore(alice, hard_delete=True)
    value = {"text": "ü" * 700, "items": [{"i": i, "s": "x" * i} for i in range(40)], "none": None, "f": 1.5}
    store.put(("big",), "v", value)
    cube = store.cube(("big",), "v")
    assert cube is not None and sum(k.startswith("lg.value.") for k in cube.header.labels) > 3
    assert store.get(("big",), "v").value == value
    store.delete(("big",), "v")
    assert alice.list(("alice",), statuses=["active", "deleted"]) == []


def test_namespace_labels_round_trip() -> None:
    """Labels memos segments refuse are stored base32-encoded; decoding gives them back."""
    assert encode_label("users") == "users" and encode_label("a-b_c@d") == "a-b_c@d"
    for label in ["a b", "ünï", "_p", "@at", "-x", "x/y", "🙂" * 9]:
        segment = encode_label(label)
        assert segment is not None and segment.startswith("u.") and decode_segment(segment) == label
    assert encode_label("é" * 20) is None  # 40 UTF-8 bytes: too long for one segment
    assert decode_segment("v1.2") is None  # a '.' that is not our encoding: not a store namespace


@given(st.text(min_size=1, max_size=38).filter(lambda s: "." not in s and "\x00" not in s))
def test_any_short_label_round_trips(label: str) -> None:
    """Every LangGraph label of up to 38 characters that fits in 38 UTF-8 bytes (or is plain) maps back to itself."""
    segment = encode_label(label)
    if segment is None:
        assert len(label.encode()) > 38
    else:
        assert decode_segment(segment) == label


# ---- semantic search -------------------------------------------------------------------------------

FACTS = {
    "home": "Alice moved to Lisbon in May and lives near the river",
    "dog": "Alice adopted a greyhound called Pixel",
    "work": "Alice works as a nurse at the city hospital",
    "drink": "Alice drinks green tea every morning",
}


def test_query_search_ranks_through_recall(alice: Session) -> None:
    """A query ranks items by the kernel's recall: the matching fact first, scores descending; filters,
    offset and limit apply; index=False items are stored and listed but only fill a page, unscored."""
    store = MemosStore(alice, index={"fields": ["text"]})
    for key, text in FACTS.items():
        store.put(("facts",), key, {"text": text, "kind": "pet" if key == "dog" else "life"})
    store.put(("facts",), "secret", {"text": "Alice hid the greyhound treats"}, index=False)
    store.put(("other",), "dog", {"text": "Bob has a greyhound too"})
    hits = store.search(("facts",), query="What is the name of the greyhound?", limit=3)
    assert [h.key for h in hits][:1] == ["dog"]
    scores = [h.score for h in hits]
    assert all(s is not None and s > 0 for s in scores) and scores == sorted(scores, reverse=True)
    assert all(h.namespace == ("facts",) for h in hits)
    assert [h.key for h in store.search(("facts",), query="green tea", limit=1)] == ["drink"]
    life = store.search(("facts",), query="greyhound", filter={"kind": "life"}, limit=10)
    assert sorted(h.key for h in life) == ["drink", "home", "work"]
    assert [h.key for h in store.search(("facts",), query="greyhound", filter={"kind": "pet"})] == ["dog"]
    ranked = [h.key for h in store.search(("facts",), query="where does Alice live", limit=10)]
    assert ranked[0] == "home" and ranked[-1] == "secret" and len(ranked) == 5
    page = store.search(("facts",), query="where does Alice live", limit=2, offset=1)
    assert [h.key for h in page] == ranked[1:3]
    tail = store.search(("facts",), query="where does Alice live", limit=3, offset=3)
    assert [(h.key, h.score) for h in tail][-1] == ("secret", None)
    assert "secret" in [h.key for h in store.search(("facts",), limit=10)]
    both = store.search((), query="greyhound", limit=10)
    assert {h.namespace for h in both} == {("facts",), ("other",)}


def test_index_fields_choose_the_text(alice: Session) -> None:
    """The index config's fields (or a put's own `index`) are the cube's text; the default is the whole value."""
    store = MemosStore(alice, index={"fields": ["title", "tags[*]"]})
    store.put(("docs",), "a", {"title": "Packing list", "tags": ["travel", "summer"], "body": "socks"})
    store.put(("docs",), "b", {"title": "Recipe", "body": "soup"}, index=["body"])
    store.put(("docs",), "c", {"body": "no title here"})
    assert store.cube(("docs",), "a").text == "Packing list\ntravel\nsummer"
    assert store.cube(("docs",), "b").text == "soup"
    c = store.cube(("docs",), "c")
    assert c.header.labels["lg.indexed"] == "0"  # no text at the fields: stored, unranked
    whole = MemosStore(alice, root=("alice", "whole"))
    whole.put(("docs",), "a", {"title": "Packing list"})
    assert whole.cube(("docs",), "a").text == '{"title": "Packing list"}'


# ---- TTL -------------------------------------------------------------------------------------------


def test_ttl_expires_items_on_the_kernel_clock(mos: MemOS, alice: Session, clock: ManualClock) -> None:
    """An item's TTL is its cube's expires_at; reads refresh it; expired items are never returned."""
    store = MemosStore(alice, ttl={"default_ttl": 10, "refresh_on_read": True})
    assert store.supports_ttl
    store.put(("s",), "a", {"v": 1})
    store.put(("s",), "b", {"v": 2}, ttl=None)
    store.put(("s",), "c", {"v": 3}, ttl=1)
    a = store.cube(("s",), "a")
    assert a.header.lifecycle.expires_at == clock.now() + timedelta(minutes=10)
    assert store.cube(("s",), "b").header.lifecycle.expires_at is None
    clock.advance(minutes=2)
    assert store.get(("s",), "c") is None  # one minute: gone
    assert store.get(("s",), "a").value == {"v": 1}  # read at minute 2: now expires at minute 12
    assert store.cube(("s",), "a").header.lifecycle.expires_at == clock.now() + timedelta(minutes=10)
    clock.advance(minutes=9)
    assert [i.key for i in store.search(("s",), refresh_ttl=False)] == ["a", "b"]  # minute 11, no refresh
    clock.advance(minutes=2)
    assert [i.key for i in store.search(("s",))] == ["b"]
    assert store.list_namespaces() == [("s",)]
    assert store.get(("s",), "a") is None
    assert alice.tick()["expired"] == 2  # the kernel marks them expired; the store never showed them
    assert alice.get(a.id).status == Status.expired
    store.put(("s",), "a", {"v": 4}, ttl=5)  # a new item: the expired one is not revived
    assert store.get(("s",), "a").value == {"v": 4} and store.cube(("s",), "a").id != a.id


def test_removing_a_ttl_and_sweeping(alice: Session, clock: ManualClock) -> None:
    """Putting an item again without a TTL makes it permanent; sweep_ttl forgets what ran out."""
    store = MemosStore(alice)
    store.put(("s",), "keep", {"v": 1}, ttl=1)
    store.put(("s",), "keep", {"v": 2})
    assert store.cube(("s",), "keep").header.lifecycle.expires_at == NEVER
    store.put(("s",), "drop", {"v": 3}, ttl=1)
    clock.advance(days=365)
    assert store.get(("s",), "keep").value == {"v": 2}
    assert store.sweep_ttl() == 1
    assert [c.header.labels["lg.key"] for c in alice.list(("alice",), statuses=["deleted"])] == ["drop"]


def test_ttl_sweeper_thread(alice: Session, clock: ManualClock) -> None:
    """start_ttl_sweeper sweeps on an interval in a thread until stopped."""
    store = MemosStore(alice, ttl={"sweep_interval_minutes": 0.001})
    store.put(("s",), "a", {"v": 1}, ttl=1)
    clock.advance(minutes=2)
    future = store.start_ttl_sweeper()
    try:
        deadline = time.monotonic() + 5
        while alice.list(("alice",), statuses=["deleted"]) == [] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assert store.stop_ttl_sweeper(timeout=5)
    assert future.done() and len(alice.list(("alice",), statuses=["deleted"])) == 1


# ---- errors ----------------------------------------------------------------------------------------


def test_bad_namespaces_are_refused(alice: Session) -> None:
    """LangGraph's rules and memos' limits both raise StoreNamespaceError (a UserError and an InvalidNamespaceError)."""
    store = MemosStore(alice)
    with pytest.raises(InvalidNamespaceError):
        store.put(("a.b",), "k", {"v": 1})  # LangGraph's own check, before the batch
    bad = [
        (("a.b",), "'.'"),
        (("",), "empty label"),
        ((), "cannot be empty"),
        (("langgraph", "x"), "'langgraph'"),
        (("x" * 65,), "too long"),
        (("é" * 20,), "too long"),
        (("a", "b", "c", "d", "e", "f", "g"), "this store holds 6"),
        (("a", 3), "must be a string"),
    ]
    for namespace, why in bad:
        with pytest.raises(StoreNamespaceError, match=why) as err:
            store.batch([PutOp(namespace, "k", {"v": 1})])
        assert isinstance(err.value, UserError) and isinstance(err.value, InvalidNamespaceError)
        assert "\n" not in str(err.value)
    # a namespace that can never hold items is simply empty to reads
    assert store.get(("x" * 65,), "k") is None and store.search(("a", "b", "c", "d", "e", "f", "g")) == []
    assert store.list_namespaces() == []


def test_bad_input_is_refused_and_nothing_is_written(alice: Session) -> None:
    """Bad keys, values, filters, counts and configs raise one-line UserErrors; a refused batch writes nothing."""
    store = MemosStore(alice)
    cases: list[tuple[Any, str]] = [
        ([PutOp(("d",), "k" * 257, {"v": 1})], "at most 256"),
        ([PutOp(("d",), "k", {"v": object()})], "not JSON"),
        ([PutOp(("d",), "k", {"v": float("nan")})], "not JSON"),
        ([PutOp(("d",), "k", ["not", "a", "dict"])], "must be a mapping"),
        ([PutOp(("d",), "k", {"v": 1}, index="text")], "list of field paths"),
        ([PutOp(("d",), "k", {"v": 1}, ttl=-1)], "positive number of minutes"),
        ([PutOp(("d",), "k", {"v": "x" * 30_000})], "over the limit"),
        ([SearchOp(("d",), {"n": {"$near": 1}})], "unknown filter operator"),
        ([SearchOp(("d",), None, -1)], "limit must be a non-negative"),
        ([ListNamespacesOp(None, None, 10, -2)], "offset must be a non-negative"),
        ([ListNamespacesOp((MatchCondition("middle", ("a",)),))], "unknown match type"),
        (["get me"], "unknown store operation"),
    ]
    for ops, why in cases:
        with pytest.raises(UserError, match=why) as err:
            store.batch([PutOp(("d",), "good", {"v": 1}), *ops])
        assert "\n" not in str(err.value)
    assert store.get(("d",), "good") is None and alice.list(("alice",)) == []
    for options, why in [
        ({"index": {"embed": "openai:text-embedding-3-small", "dims": 1536}}, "home's embedder"),
        ({"index": {"dims": 3}}, "differ from the home's embedder"),
        ({"index": {"fields": "text"}}, "list of paths"),
        ({"ttl": {"default_ttl": 0}}, "positive number"),
        ({"ttl": {"omit_expired": False}}, "never returns expired"),
        ({"root": ("a", "b", "c", "d", "e", "f", "g", "h")}, "at most 7"),
        ({"root": ("bad root",)}, "invalid namespace segment"),
    ]:
        with pytest.raises(UserError, match=why):
            MemosStore(alice, **options)
    with pytest.raises(UserError, match="needs a memos Session"):
        MemosStore("alice")  # type: ignore[arg-type]


def test_acl_applies_to_other_users(mos: MemOS, alice: Session) -> None:
    """Another user reads Alice's store once she shares it (refreshing nothing) and may not write to it."""
    MemosStore(alice, ttl={"default_ttl": 60}).put(("prefs",), "theme", {"v": "dark"})
    bob = mos.as_user("bob")
    shared = MemosStore(bob, root=("alice", "langgraph"))
    with pytest.raises(PermissionDenied):
        shared.get(("prefs",), "theme")
    alice.share(("alice", "langgraph"), "bob", "read")
    assert shared.get(("prefs",), "theme").value == {"v": "dark"}  # its TTL refresh is skipped: bob only reads
    with pytest.raises(PermissionDenied):
        shared.put(("prefs",), "theme", {"v": "light"})
    assert MemosStore(alice).get(("prefs",), "theme").value == {"v": "dark"}


# ---- async, graphs, plugin -------------------------------------------------------------------------


def test_abatch_and_async_methods(alice: Session) -> None:
    """abatch gives what batch gives; aput/aget/asearch/alist_namespaces/adelete work."""
    store = MemosStore(alice)

    async def scenario() -> list[Any]:
        await store.aput(("a", "b"), "k", {"text": "hello there"})
        await store.aput(("a", "c"), "k", {"text": "general kenobi"})
        got = await store.aget(("a", "b"), "k")
        found = await store.asearch(("a",), query="kenobi")
        names = await store.alist_namespaces(prefix=("a",), max_depth=2)
        mixed = await store.abatch([GetOp(("a", "c"), "k"), ListNamespacesOp(), PutOp(("a", "c"), "k", None)])
        await store.adelete(("a", "b"), "k")
        return [got, found, names, mixed, await store.asearch(("a",))]

    got, found, names, mixed, rest = asyncio.run(scenario())
    assert got.value == {"text": "hello there"}
    assert found[0].key == "k" and found[0].namespace == ("a", "c")
    assert names == [("a", "b"), ("a", "c")]
    assert [plain(r) for r in mixed] == [(("a", "c"), "k", {"text": "general kenobi"}), [("a", "b"), ("a", "c")], None]
    assert rest == []


class _State(TypedDict, total=False):
    user: str
    text: str
    recalled: list[str]


def test_a_compiled_graph_uses_the_store(alice: Session) -> None:
    """graph.compile(store=MemosStore(...)): nodes write through runtime.store and read through get_store();
    what they wrote is a memos cube with versions and audit entries."""

    def remember(state: _State, runtime: Runtime) -> dict[str, Any]:
        key = state["text"].split()[0].lower()
        runtime.store.put(("memories", state["user"]), key, {"text": state["text"]})
        return {}

    def recall(state: _State) -> dict[str, Any]:
        hits = get_store().search(("memories", state["user"]), query=state["text"], limit=2)
        return {"recalled": [h.value["text"] for h in hits]}

    builder = StateGraph(_State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    store = MemosStore(alice)
    graph = builder.compile(store=store)
    graph.invoke({"user": "alice", "text": "Coffee every morning at eight"})
    graph.invoke({"user": "alice", "text": "Coffee is now decaf after noon"})
    out = graph.invoke({"user": "alice", "text": "Lisbon is home since May"})
    assert out["recalled"][0] == "Lisbon is home since May"
    cube = store.cube(("memories", "alice"), "coffee")
    assert cube is not None and cube.namespace == ("alice", "langgraph", "memories", "alice")
    assert [c.text for c in alice.history(cube.id)] == [
        '{"text": "Coffee every morning at eight"}',
        '{"text": "Coffee is now decaf after noon"}',
    ]
    assert [e["action"] for e in alice.audit(cube.id)] == ["update", "write"]
    assert {h.cube.id for h in alice.recall(("alice", "langgraph"), "decaf coffee", k=1)} == {cube.id}


def test_registered_as_a_plugin(alice: Session) -> None:
    """The entry point registers the store factory as 'langgraph-store', through the real plugin registry."""
    registered: dict[str, Any] = {}
    memos_register_agents(lambda name, obj: registered.__setitem__(name, obj))
    assert registered == {"langgraph-store": make_store}
    entry = metadata.EntryPoint(name="langgraph-store", value="memos.plugins.langgraph_plugin", group="memos.plugins")
    registry = Registry(entry_points=[entry])
    store = registry.create("agents", "langgraph-store", alice, root=("alice", "graphs"))
    assert isinstance(store, MemosStore) and store.root == ("alice", "graphs")
    assert [p.status.value for p in registry.plugins] == ["loaded"]


def test_items_survive_reopening(mos: MemOS, alice: Session, home: Any, clock: ManualClock) -> None:
    """The store is durable: a new MemOS on the home sees the items, in the same order."""
    store = MemosStore(alice)
    for i in range(3):
        store.put(("n", str(i % 2)), f"k{i}", {"i": i})
    before = plain(store.search(()))
    mos.close()
    with MemOS.open(home, embedder="hash", clock=clock, auto_paging=False) as again:
        assert plain(MemosStore(again.as_user("alice")).search(())) == before
