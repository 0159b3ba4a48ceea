"""The built-in `heuristic` policy on a real home: filler and near-duplicates are skipped, the rest stored."""

from __future__ import annotations

import pytest

from memos import MemOS
from memos.cube import Level
from memos.ingest import PolicySummary, ingest_with_policy
from memos.policies.heuristic import HeuristicPolicy, jaccard, words
from memos.policy import MemoryOp, Observation, OpKind
from memos.registry import get_registry

TURN = {"session_id": "s1", "turn_id": "t2", "external_id": "t2"}


def turn(index: int, speaker: str, text: str) -> Observation:
    return Observation(f"{speaker}: {text}", index, speaker, {"session_id": "s1", "external_id": f"t{index}"})


def test_it_is_registered_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic")

    policy = get_registry().policy("heuristic")

    assert type(policy) is HeuristicPolicy
    assert (policy.name, policy.min_words, policy.max_jaccard) == ("heuristic", 3, 0.9)


def test_a_turn_becomes_one_short_term_insert(mos: MemOS) -> None:
    observation = Observation("Maya: I adopted a greyhound.", 2, "Maya", {**TURN, "date": "2023-05-08T13:56:00+00:00"})

    ops = HeuristicPolicy().observe(mos.as_user("alice"), ("alice", "chat"), observation)

    assert ops == [
        MemoryOp(
            OpKind.insert,
            text="Maya: I adopted a greyhound.",
            level=Level.short,
            labels={"policy": "heuristic"},
            provenance={**TURN, "speaker": "Maya"},
            event_time="2023-05-08T13:56:00+00:00",
        )
    ]


def test_filler_and_near_duplicates_are_skipped(mos: MemOS) -> None:
    session = mos.as_user("alice")
    session.write("alice/chat", "Ravi plays the cello every Tuesday.", level="long")
    observations = [
        turn(0, "Maya", "ok thanks!"),
        turn(1, "Maya", "Maya adopted a greyhound called Biscuit."),
        # the same words: a near-duplicate of what this run just stored
        turn(2, "Maya", "maya adopted a greyhound called biscuit!!"),
        turn(3, "Maya", "hi there"),
        # one word differs: Jaccard 5/7, below 0.9, so it is stored
        turn(4, "Maya", "Maya adopted a greyhound named Biscuit."),
        Observation("The office moves to Leeds in May.", 5),
        # stored before this run: found by recall
        Observation("Ravi plays the cello every Tuesday", 6),
    ]

    summary = ingest_with_policy(session, "alice/chat", observations, HeuristicPolicy())

    assert summary == PolicySummary(
        policy="heuristic", num_chunks=7, num_ops=3, num_applied=3, num_failed=0, applied_by_kind={"insert": 3}
    )
    stored = sorted((c.text, c.level.value) for c in session.list("alice/chat") if c.header.labels.get("policy"))
    assert stored == [
        ("Maya: Maya adopted a greyhound called Biscuit.", "short"),
        ("Maya: Maya adopted a greyhound named Biscuit.", "short"),
        ("The office moves to Leeds in May.", "long"),
    ]
    # a second run over the same input adds nothing: everything is now in memory
    again = ingest_with_policy(session, "alice/chat", observations, HeuristicPolicy())
    assert (again.num_chunks, again.num_ops) == (7, 0)


def test_jaccard_of_word_sets() -> None:
    assert words("Maya: a greyhound, a DOG!") == frozenset({"maya", "a", "greyhound", "dog"})
    assert jaccard(words("a b c"), words("b c d")) == 0.5
    assert jaccard(frozenset(), frozenset()) == 1.0
