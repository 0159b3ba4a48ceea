"""Session.context end to end: working sets from every level, budgets, heat, page-in, determinism."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos import ManualClock, MemOS
from memos.cube import Level, Status
from memos.errors import PermissionDenied, UserError
from memos.kernel import WriteRequest

NS = ("alice", "chat")

TURNS = [
    ("s1", "Alice", "I adopted a grey kitten called Miso last weekend"),
    ("s1", "Bob", "Miso is a lovely name, how is the kitten settling in?"),
    ("s1", "Alice", "She sleeps on my keyboard all day"),
    ("s2", "Bob", "I started training for the Berlin marathon in September"),
    ("s2", "Alice", "How many kilometres do you run each week?"),
    ("s2", "Bob", "About forty kilometres, mostly along the river"),
    ("s3", "Alice", "My sister is visiting from Lisbon next month"),
    ("s3", "Bob", "You should take her to the botanical garden"),
    ("s3", "Alice", "Good idea, she loves orchids"),
]
DATES = {"s1": "2023-05-08T13:56:00+00:00", "s2": "2023-06-02T10:00:00+00:00", "s3": "2023-07-15T18:30:00+00:00"}


def _write(mos: MemOS) -> list[str]:
    requests = [
        WriteRequest(
            f"{speaker}: {text}",
            event_time=DATES[session],
            provenance={"session_id": session, "speaker": speaker, "external_id": f"D{n}"},
            labels={"type": "episode"},
        )
        for n, (session, speaker, text) in enumerate(TURNS, start=1)
    ]
    return [c.id for c in mos.as_user("alice").write_many(NS, requests)]


@pytest.fixture
def paged(home: Path, clock: ManualClock):
    mos = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, paging={"stm_capacity": 3})
    ids = _write(mos)
    mos.as_user("alice").tick()
    yield mos, ids
    mos.close()


def test_pages_are_linked_to_the_turn_before_them_in_their_session(mos: MemOS) -> None:
    ids = _write(mos)
    cubes = [mos.as_user("alice").get(i) for i in ids]
    assert cubes[0].header.provenance.preceded_by is None
    assert cubes[1].header.provenance.preceded_by == ids[0]
    assert cubes[3].header.provenance.preceded_by is None  # first turn of session s2
    assert cubes[4].header.provenance.preceded_by == ids[3]
    # a later write continues the session it names
    more = mos.as_user("alice").write(NS, "Alice: and she purrs", provenance={"session_id": "s1"})
    assert more.header.provenance.preceded_by == ids[2]


def test_a_reply_is_found_by_the_words_of_the_question_it_answers(mos: MemOS) -> None:
    ids = _write(mos)
    working = mos.as_user("alice").context(NS, "kilometres per week", budget_tokens=200)
    texts = [item.cube.text for item in working.ranked[:2]]
    assert mos.as_user("alice").get(ids[5]).text in texts  # "About forty kilometres..." answers ids[4]


def test_context_draws_from_every_level_and_renders_dates(paged) -> None:
    mos, ids = paged
    levels = {mos.as_user("alice").get(i).level for i in ids}
    assert levels == {Level.mid, Level.short}
    working = mos.as_user("alice").context(NS, "What is the kitten called?", budget_tokens=1500)
    assert working.items, "nothing chosen"
    assert working.ranked[0].carries[0] == ids[0] or ids[0] in {p for it in working.ranked[:2] for p in it.carries}
    text = working.render()
    assert "[8 May 2023]" in text
    assert working.tokens == mos.tokenizer.count(text) <= 1500
    first = next(i for i in working.ranked if ids[0] in i.carries)
    assert set(first.why) >= {"dense", "lexical", "relevance", "group", "heat", "recency"}


def test_budget_is_never_exceeded_and_tiny_budgets_give_an_empty_set(paged) -> None:
    mos, _ = paged
    session = mos.as_user("alice")
    for budget in (1, 5, 20, 40, 80, 300):
        working = session.context(NS, "kitten marathon sister", budget_tokens=budget)
        assert working.tokens <= budget
        assert mos.tokenizer.count(working.render()) == working.tokens
    assert session.context(NS, "kitten", budget_tokens=1).items == []


def test_each_use_counts_access_and_segment_visits(paged) -> None:
    mos, ids = paged
    session = mos.as_user("alice")
    before = session.get(ids[0]).header.usage.access_count
    working = session.context(NS, "grey kitten Miso", budget_tokens=1500)
    used = {item.cube.id for item in working.items}
    assert ids[0] in used
    assert session.get(ids[0]).header.usage.access_count == before + 1
    segment = session.get(ids[0]).header.labels["segment"]
    visits = {info.id: info.visits for info in mos.pager.hottest([("/".join(NS))], 10)}
    assert visits[segment] >= 1


def test_a_paged_out_page_is_found_and_paged_back_in(home: Path, clock: ManualClock) -> None:
    mos = MemOS.open(
        home,
        embedder="hash",
        clock=clock,
        auto_paging=False,
        paging={"stm_capacity": 1, "max_segments": 1, "theta": 5.0},
    )
    try:
        ids = _write(mos)
        session = mos.as_user("alice")
        session.tick()
        archived = [i for i in ids if session.get(i).status == Status.archived]
        assert archived, "nothing was paged out"
        target = session.get(archived[0])
        words = " ".join(target.text.split(":", 1)[1].split()[:6])
        working = session.context(NS, words, budget_tokens=1500)
        assert target.id in {p for item in working.items for p in item.carries}
        assert working.paged_in
        assert session.get(target.id).status == Status.active
    finally:
        mos.close()


def test_context_is_deterministic_under_an_injected_clock(tmp_path: Path) -> None:
    results = []
    for run in range(2):
        clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
        mos = MemOS.open(
            tmp_path / f"h{run}", embedder="hash", clock=clock, auto_paging=False, paging={"stm_capacity": 3}
        )
        try:
            _write(mos)
            mos.as_user("alice").tick()
            working = mos.as_user("alice").context(NS, "what did Bob say about running", budget_tokens=120)
            results.append(([i.cube.text for i in working.items], [round(i.score, 9) for i in working.ranked]))
        finally:
            mos.close()
    assert results[0] == results[1]


def test_the_named_speaker_comes_first(mos: MemOS) -> None:
    _write(mos)
    working = mos.as_user("alice").context(NS, "What does Bob like?", budget_tokens=1500)
    assert working.ranked[0].cube.header.provenance.speaker == "Bob"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_tokens": 0}, "token budget"),
        ({"budget_tokens": "many"}, "token budget"),
        ({"budget_tokens": True}, "token budget"),
        ({"pool": 0}, "k must be"),
    ],
)
def test_bad_arguments_are_user_errors(mos: MemOS, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        mos.as_user("alice").context(NS, "kitten", **kwargs)


def test_an_empty_query_and_a_foreign_namespace_are_refused(mos: MemOS) -> None:
    _write(mos)
    with pytest.raises(UserError):
        mos.as_user("alice").context(NS, "   ")
    with pytest.raises(PermissionDenied):
        mos.as_user("mallory").context(NS, "kitten")


def test_writes_page_in_the_background_without_waiting(home: Path, clock: ManualClock) -> None:
    mos = MemOS.open(home, embedder="hash", clock=clock, paging={"stm_capacity": 2})
    try:
        ids = _write(mos)
        assert mos.pager.wait(timeout=30)
        session = mos.as_user("alice")
        assert sum(session.get(i).level == Level.short for i in ids) == 2
    finally:
        mos.close()


def test_tick_and_writes_in_parallel_lose_nothing(home: Path, clock: ManualClock) -> None:
    mos = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, paging={"stm_capacity": 2})
    try:
        session = mos.as_user("alice")
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for n in range(30):
                    session.write(
                        NS, f"Alice: note number {n} about topic {n % 4}", provenance={"session_id": f"w{n // 5}"}
                    )
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        while thread.is_alive():
            session.tick()
        thread.join()
        session.tick()
        assert not errors
        pages = [
            c for c in session.list(NS, statuses=("active", "archived")) if c.header.labels.get("type") != "segment"
        ]
        texts = [c.text for c in pages if c.level != Level.long]
        assert sorted(texts) == sorted(f"Alice: note number {n} about topic {n % 4}" for n in range(30))
    finally:
        mos.close()


def test_the_profile_is_packed_once(home: Path, clock: ManualClock) -> None:
    mos = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, paging={"stm_capacity": 3, "tau": 2})
    _write(mos)
    mos.as_user("alice").tick()
    assert mos.as_user("alice").stats().paging["profiles"] == 1
    working = mos.as_user("alice").context(NS, "Alice profile kitten marathon", budget_tokens=20000)
    profiles = [i for i in working.items if i.section == "profile"]
    assert len(profiles) == 1
    assert working.render().count("## User profile") == 1
    mos.close()


def test_a_cube_whose_vector_is_not_indexed_yet_is_still_searchable(mos: MemOS) -> None:
    ids = _write(mos)
    mos.vectors.delete([ids[0]])  # as if its vector step had not run yet
    working = mos.as_user("alice").context(NS, "grey kitten Miso", budget_tokens=1500)
    assert ids[0] in {p for item in working.ranked for p in item.carries}
    hits = mos.as_user("alice").recall(NS, "grey kitten Miso")
    assert ids[0] in {h.cube.id for h in hits}
