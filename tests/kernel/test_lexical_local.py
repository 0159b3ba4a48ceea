"""BM25 re-scored with the term statistics of the caller's namespaces instead of the whole home."""

from __future__ import annotations

import pytest

from memos import MemOS
from memos.storage.catalog import SEARCHABLE, CubeFilter


def test_a_word_common_elsewhere_is_rare_here(mos: MemOS) -> None:
    alice, bob = mos.as_user("alice"), mos.as_user("bob")
    split = alice.write(("alice", "food"), "banana split")
    tart = alice.write(("alice", "food"), "cherry tart")
    for filler in ("walk in the park", "rainy tuesday", "train to work", "new phone"):
        alice.write(("alice", "food"), filler)
    # in bob's memory bananas are everywhere: overall, "banana" says little
    bob.write_many(("bob", "farm"), [{"text": f"banana crate number {n}"} for n in range(30)])

    flt = CubeFilter(prefixes=["alice/food"], statuses=SEARCHABLE)
    overall = dict(mos.catalog.lexical("banana cherry", flt, 10))
    local = dict(mos.catalog.lexical_local("banana cherry", flt, 10))
    assert set(overall) == set(local) == {split.id, tart.id}
    # with the whole home's statistics the cherry tart wins clearly; within alice's food the two words
    # are equally rare, and the two equally long texts score the same
    assert overall[tart.id] > 2 * overall[split.id]
    assert local[split.id] == pytest.approx(local[tart.id], rel=1e-9)


def test_without_namespaces_the_ranking_is_unchanged(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    alice.write_many(("alice", "notes"), [{"text": t} for t in ("red apple", "green apple pie", "blue sky")])
    flt = CubeFilter(statuses=SEARCHABLE)
    assert mos.catalog.lexical_local("apple pie", flt, 5) == mos.catalog.lexical("apple pie", flt, 5)
