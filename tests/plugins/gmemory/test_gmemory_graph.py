"""The query graph on hand-built embeddings: linking, k-hop expansion, hop retrieval; clustering; triggers."""

from __future__ import annotations

import numpy as np
import pytest

from memos.errors import UserError
from memos.plugins.gmemory.cluster import finch_partitions, first_neighbour_partition, first_neighbours
from memos.plugins.gmemory.graph import QueryGraph
from memos.plugins.gmemory.memory import triggers
from memos.plugins.gmemory.tasks import TaskRecord, TaskStore


def unit(*parts: float) -> np.ndarray:
    """A 6-d vector from its leading coordinates, L2-normalised."""
    v = np.zeros(6, dtype=np.float32)
    v[: len(parts)] = parts
    return v / np.linalg.norm(v)


#: t1 = e0; t2 and t5 lean towards t1 (cosine 0.707, linked); t3 leans towards t2 (0.88, linked) but
#: not t1 (0.29); t4 is the distractor: close to the query (0.857) but under 0.7 to every task
VECTORS = {
    "t1": unit(1),
    "t2": unit(1, 1),
    "t3": unit(0.3, 1),
    "t4": unit(1, 0, 1.1),
    "t5": unit(1, 0, 0, 1),
}
QUERY = unit(1, 0, 0.3)


def build(success: dict[str, bool] | None = None) -> TaskStore:
    """The toy store, records added in id order."""
    store = TaskStore(6)
    for rid, vec in VECTORS.items():
        ok = True if success is None else success[rid]
        store.add(TaskRecord(id=rid, task=f"task {rid}", description=f"task {rid}", trajectory="", success=ok), vec)
    return store


def ids(scored: list[tuple[TaskRecord, float]]) -> list[str]:
    return [r.id for r, _ in scored]


def test_each_task_links_to_its_near_predecessors() -> None:
    store = build()
    assert store.graph.neighbours("t1") == ["t2", "t5"]
    assert store.graph.neighbours("t2") == ["t1", "t3"]
    assert store.graph.neighbours("t3") == ["t2"]
    assert store.graph.neighbours("t4") == []
    assert store.graph.neighbours("t5") == ["t1"]
    weights = {(a, b): round(w, 4) for a, b, w in store.graph.edges()}
    assert weights == {("t1", "t2"): 0.7071, ("t1", "t5"): 0.7071, ("t2", "t3"): 0.8805}


def test_link_k_and_threshold_are_parameters() -> None:
    store = TaskStore(6, link_k=1, link_threshold=0.5)
    for rid, vec in VECTORS.items():
        store.add(TaskRecord(id=rid, task=rid, description=rid, trajectory="", success=True), vec)
    # each task links to its single nearest predecessor, if at cosine >= 0.5
    assert {(a, b) for a, b, _ in store.graph.edges()} == {("t1", "t2"), ("t2", "t3"), ("t1", "t4"), ("t1", "t5")}
    with pytest.raises(UserError, match="link_k"):
        TaskStore(6, link_k=-1)


def test_k_hop_expansion() -> None:
    graph = build().graph
    assert graph.expand(["t1"], 0) == ["t1"]
    assert graph.expand(["t1"], 1) == ["t1", "t2", "t5"]
    assert graph.expand(["t1"], 2) == ["t1", "t2", "t5", "t3"]
    assert graph.expand(["t3"], 2) == ["t3", "t2", "t1"]
    assert graph.expand(["t4"], 3) == ["t4"]
    assert graph.expand(["t4", "t3", "nope"], 1) == ["t4", "t3", "t2"]


def test_hop_retrieval_finds_linked_tasks_plain_search_misses() -> None:
    store = build()
    sims = {rid: round(float(QUERY @ vec), 4) for rid, vec in VECTORS.items()}
    assert sims == {"t1": 0.9578, "t2": 0.6773, "t3": 0.2752, "t4": 0.8569, "t5": 0.6773}
    assert ids(store.nearest(QUERY, 3)) == ["t1", "t4", "t2"]
    # 3 wanted: 1 seed (t1) and its neighbours t2, t5; the distractor t4 is not linked to anything
    found = store.hop_retrieve(QUERY, {None: 3}, hop=1)
    assert ids(found[None]) == ["t1", "t2", "t5"]
    assert [round(s, 4) for _, s in found[None]] == [0.9578, 0.6773, 0.6773]
    # two hops reach t3 too, but it ranks under the cut; 4 wanted means 2 seeds, so t4 is a seed
    assert ids(store.hop_retrieve(QUERY, {None: 3}, hop=2)[None]) == ["t1", "t2", "t5"]
    assert ids(store.hop_retrieve(QUERY, {None: 5}, hop=2)[None]) == ["t1", "t4", "t2", "t5", "t3"]
    # no hops: one seed, topped up by similarity, which is plain search
    assert ids(store.hop_retrieve(QUERY, {None: 3}, hop=0)[None]) == ["t1", "t4", "t2"]


def test_hop_retrieval_splits_by_label_tops_up_and_filters() -> None:
    store = build({"t1": True, "t2": False, "t3": True, "t4": True, "t5": True})
    found = store.hop_retrieve(QUERY, {True: 2, False: 1}, hop=1)
    # 1 seed (3 // 2): t1; its neighbours: t2 (failure), t5 (success)
    assert ids(found[True]) == ["t1", "t5"]
    assert ids(found[False]) == ["t2"]
    # 4 successes wanted: seeds t1, t4 (4 // 2 = 2 -> t1, t4 nearest), hop set {t1, t4, t2, t5} has 3
    # successes, so the nearest successes top it up (t3)
    assert ids(store.hop_retrieve(QUERY, {True: 4}, hop=1)[True]) == ["t1", "t4", "t5", "t3"]
    # a threshold drops what is under it, after the cut-off order is known
    assert ids(store.hop_retrieve(QUERY, {None: 3}, hop=1, threshold=0.7)[None]) == ["t1"]
    assert store.hop_retrieve(QUERY, {True: 0, False: 0}) == {True: [], False: []}
    assert TaskStore(6).hop_retrieve(QUERY, {None: 3}) == {None: []}


def test_nearest_is_deterministic_on_ties() -> None:
    store = TaskStore(6)
    for rid in ("a", "b", "c"):
        store.add(TaskRecord(id=rid, task=rid, description=rid, trajectory="", success=rid != "b"), unit(1))
    assert [(r.id, round(s, 4)) for r, s in store.nearest(unit(1), 3)] == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    assert ids(store.nearest(unit(1), 5, success=True, exclude=["a"])) == ["c"]
    with pytest.raises(UserError, match="already holds"):
        store.add(TaskRecord(id="a", task="a", description="a", trajectory="", success=True), unit(1))
    with pytest.raises(UserError, match="6 values"):
        store.add(TaskRecord(id="z", task="z", description="z", trajectory="", success=True), np.ones(3))


def test_store_round_trip_is_exact() -> None:
    store = build({"t1": True, "t2": False, "t3": True, "t4": True, "t5": False})
    again = TaskStore.from_dict(store.to_dict())
    assert again.to_dict() == store.to_dict()
    assert np.array_equal(again.matrix, store.matrix)
    assert again.graph == store.graph
    assert ids(again.hop_retrieve(QUERY, {None: 3})[None]) == ["t1", "t2", "t5"]
    assert QueryGraph.from_dict(store.graph.to_dict()) == store.graph


def test_first_neighbour_clustering() -> None:
    points = np.stack([unit(1), unit(1, 0.1), unit(0, 0, 1), unit(0, 0, 1, 0.2), unit(0, 0, 1, 0.5)])
    assert first_neighbours(points).tolist() == [1, 0, 3, 2, 3]
    assert first_neighbour_partition(points).tolist() == [0, 0, 1, 1, 1]
    assert [level.tolist() for level in finch_partitions(points)] == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]]
    # ties go to the lower index; one point is one cluster; none is none
    same = np.stack([unit(1), unit(1), unit(1)])
    assert first_neighbours(same).tolist() == [1, 0, 0]
    assert [level.tolist() for level in finch_partitions(points[:1])] == [[0]]
    assert finch_partitions(np.zeros((0, 6))) == []


def test_triggers_finetune_every_five_from_five_and_merge_every_twenty() -> None:
    due = {n: triggers(n) for n in range(1, 41) if triggers(n)}
    assert due == {
        5: ["finetune"],
        10: ["finetune"],
        15: ["finetune"],
        20: ["finetune", "merge"],
        25: ["finetune"],
        30: ["finetune"],
        35: ["finetune"],
        40: ["finetune", "merge"],
    }
    assert [n for n in range(1, 31) if triggers(n, start_at=12, every=4, merge_every=0)] == [12, 16, 20, 24, 28]
    assert triggers(0) == []
