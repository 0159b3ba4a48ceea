"""The scheduler's rules on hand-built cubes: scoring parts, de-duplication, packing and prompt order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memos.cube import ACL, Header, Level, MemCube, Provenance
from memos.ids import new_id
from memos.scheduler import (
    SchedulerConfig,
    Scorer,
    WorkingItem,
    format_date,
    is_temporal,
    pack,
    prompt_order,
    render_items,
    render_line,
)
from memos.tokens import get_tokenizer

NOW = datetime(2024, 6, 1, tzinfo=UTC)
TOKENIZER = get_tokenizer("cl100k_base")


def cube(
    text: str,
    *,
    level: Level = Level.mid,
    speaker: str | None = None,
    session: str | None = None,
    preceded_by: str | None = None,
    event_time: datetime | None = None,
    labels: dict[str, str] | None = None,
    derived_from: list[str] | None = None,
    created: datetime = NOW - timedelta(days=10),
) -> MemCube:
    return MemCube(
        id=new_id(),
        namespace=("alice", "chat"),
        level=level,
        content=text,
        header=Header(
            provenance=Provenance(
                speaker=speaker, session_id=session, preceded_by=preceded_by, derived_from=derived_from or []
            ),
            created_at=created,
            updated_at=created,
            event_time=event_time,
            acl=ACL(owner="alice"),
            labels=labels or {},
        ),
    )


def rank(cubes: list[MemCube], dense: dict[str, float], lexical: dict[str, float] | None = None, **cfg: float):
    config = SchedulerConfig(**{"heat": 0.0, "recency": 0.0, "session": 0.0, **cfg})
    by_id = {c.id: c for c in cubes}
    return Scorer(config, NOW).rank("what did Bob say", by_id, dense, lexical or {}, {}, {})


def test_temporal_questions_are_recognised() -> None:
    assert is_temporal("When did Caroline go to the support group?")
    assert is_temporal("what year did they move")
    assert is_temporal("How long ago was the trip?")
    assert not is_temporal("What did Caroline research?")
    assert not is_temporal("Whenever possible, summarise")


def test_relevance_is_the_sum_of_z_scored_dense_and_lexical() -> None:
    a, b, c = cube("a"), cube("b"), cube("c")
    items = rank([a, b, c], {a.id: 0.9, b.id: 0.5, c.id: 0.1}, {a.id: 2.0}, group=0.0, neighbour=0.0, mmr=0.0)
    by_id = {i.cube.id: i for i in items}
    z_dense = np.array([0.9, 0.5, 0.1])
    z_dense = (z_dense - z_dense.mean()) / z_dense.std()
    z_lex = np.array([2.0, 0.0, 0.0])
    z_lex = (z_lex - z_lex.mean()) / z_lex.std()
    for n, item in enumerate([a, b, c]):
        assert by_id[item.id].why["relevance"] == pytest.approx(z_dense[n] + z_lex[n])
    assert [i.cube.id for i in items] == [a.id, b.id, c.id]


def test_a_strong_group_lifts_its_weaker_members() -> None:
    # two pages of one session match well; a lone page matches a little better than the third session page
    s1, s2, s3 = (cube(t, session="s1", level=Level.short) for t in ("x1", "x2", "x3"))
    lone = cube("lone", session="s2", level=Level.short)
    dense = {s1.id: 0.9, s2.id: 0.85, s3.id: 0.3, lone.id: 0.35}
    without = rank([s1, s2, s3, lone], dense, group=0.0, neighbour=0.0, mmr=0.0)
    with_group = rank([s1, s2, s3, lone], dense, neighbour=0.0, mmr=0.0)
    assert [i.cube.id for i in without].index(lone.id) < [i.cube.id for i in without].index(s3.id)
    assert [i.cube.id for i in with_group].index(s3.id) < [i.cube.id for i in with_group].index(lone.id)


def test_a_neighbour_of_a_strong_page_is_lifted() -> None:
    question = cube("Bob: where did you go?", session="s", level=Level.short)
    answer = cube("Alice: to Paris", session="s", preceded_by=question.id, level=Level.short)
    other = cube("Alice: something else", session="t", level=Level.short)
    dense = {question.id: 0.9, answer.id: 0.2, other.id: 0.25}
    plain = rank([question, answer, other], dense, group=0.0, neighbour=0.0, mmr=0.0)
    lifted = rank([question, answer, other], dense, group=0.0, mmr=0.0)
    assert [i.cube.id for i in plain][1:] == [other.id, answer.id]
    assert [i.cube.id for i in lifted][1:] == [answer.id, other.id]
    assert lifted[1].why["neighbour"] > lifted[2].why["neighbour"]


def test_the_speaker_named_in_the_query_gets_the_bonus() -> None:
    bob, alice = cube("x", speaker="Bob"), cube("y", speaker="Alice")
    items = rank([bob, alice], {bob.id: 0.5, alice.id: 0.5}, group=0.0, neighbour=0.0, mmr=0.0, speaker=0.6)
    assert items[0].cube.id == bob.id
    assert items[0].why["speaker"] == 0.6 and items[1].why["speaker"] == 0.0


def test_when_questions_favour_cubes_with_an_event_time() -> None:
    dated = cube("dated", event_time=NOW - timedelta(days=3))
    undated = cube("undated")
    cubes = {c.id: c for c in (dated, undated)}
    dense = {dated.id: 0.5, undated.id: 0.5}
    cfg = SchedulerConfig(heat=0.0, recency=0.0, group=0.0, session=0.0, neighbour=0.0, mmr=0.0)
    when = Scorer(cfg, NOW).rank("when did it happen", cubes, dense, {}, {}, {})
    what = Scorer(cfg, NOW).rank("what happened", cubes, dense, {}, {}, {})
    assert when[0].cube.id == dated.id and when[0].why["temporal"] == 0.3
    assert all(i.why["temporal"] == 0.0 for i in what)


def test_heat_and_recency_bonuses_follow_their_formulas() -> None:
    hot = cube("hot", labels={"segment": "seg-1"}, event_time=NOW - timedelta(days=30))
    cfg = SchedulerConfig(heat=0.2, heat_tau=5.0, recency=0.1, recency_days=30.0)
    [item] = Scorer(cfg, NOW).rank("q", {hot.id: hot}, {hot.id: 0.5}, {}, {}, {"seg-1": 5.0})
    assert item.why["heat"] == pytest.approx(0.2 * 5.0 / 10.0)
    assert item.why["recency"] == pytest.approx(0.1 * np.exp(-1.0))
    assert item.heat == 5.0 and item.segment == "seg-1"


def test_a_stale_clock_gives_full_recency_not_more() -> None:
    future = cube("from the future", event_time=NOW + timedelta(days=5))
    [item] = Scorer(SchedulerConfig(recency=0.1), NOW).rank("q", {future.id: future}, {future.id: 0.1}, {}, {}, {})
    assert item.why["recency"] == pytest.approx(0.1)


def test_knowledge_copied_from_a_page_is_a_duplicate_of_it() -> None:
    page = cube("Alice: I adopted a cat")
    knowledge = cube("Alice: I adopted a cat", level=Level.long, derived_from=[page.id])
    other = cube("Alice: I like tea")
    vectors = {page.id: np.array([1.0, 0.0]), knowledge.id: np.array([1.0, 0.0]), other.id: np.array([0.0, 1.0])}
    cubes = {c.id: c for c in (page, knowledge, other)}
    items = Scorer(SchedulerConfig(), NOW).rank(
        "cat", cubes, {page.id: 0.9, knowledge.id: 0.9, other.id: 0.1}, {}, vectors, {}
    )
    assert len(items) == 2
    assert {i.cube.id for i in items} & {page.id, knowledge.id}
    assert other.id in {i.cube.id for i in items}


def test_mmr_prefers_a_different_item_over_a_near_copy() -> None:
    a, near, far = cube("a"), cube("a'"), cube("b")
    vectors = {a.id: np.array([1.0, 0.0]), near.id: np.array([0.9, np.sqrt(1 - 0.81)]), far.id: np.array([0.0, 1.0])}
    cubes = {c.id: c for c in (a, near, far)}
    dense = {a.id: 0.9, near.id: 0.85, far.id: 0.8}
    cfg = SchedulerConfig(group=0.0, session=0.0, neighbour=0.0, heat=0.0, recency=0.0, mmr=2.0)
    items = Scorer(cfg, NOW).rank("q", cubes, dense, {}, vectors, {})
    assert [i.cube.id for i in items] == [a.id, far.id, near.id]
    assert items[2].why["redundancy"] == pytest.approx(0.9)


def test_lines_carry_the_event_date() -> None:
    dated = cube("Alice: we moved", event_time=datetime(2023, 5, 8, 13, 56, tzinfo=UTC))
    assert render_line(dated) == "[8 May 2023] Alice: we moved"
    assert format_date(None) == ""
    profile = cube("Profile (extractive): Alice: cats", level=Level.long, labels={"type": "profile"})
    assert render_line(profile) == "Profile (extractive): Alice: cats"


def _item(c: MemCube, score: float) -> WorkingItem:
    from memos.scheduler import section_of

    return WorkingItem(cube=c, score=score, why={}, section=section_of(c), carries=[c.id])


def test_prompt_order_is_profile_knowledge_memories_by_date_then_recent() -> None:
    old = cube("old memory", event_time=datetime(2023, 1, 1, tzinfo=UTC))
    new = cube("new memory", event_time=datetime(2023, 6, 1, tzinfo=UTC))
    recent = cube("just said", level=Level.short, created=NOW)
    fact = cube("a fact", level=Level.long)
    profile = cube("the profile", level=Level.long, labels={"type": "profile"})
    ordered = prompt_order([_item(recent, 9), _item(new, 8), _item(old, 1), _item(fact, 5), _item(profile, 0)])
    assert [i.cube.text for i in ordered] == ["the profile", "a fact", "old memory", "new memory", "just said"]
    text = render_items(ordered)
    assert text.index("## User profile") < text.index("## Long-term knowledge") < text.index("## Relevant memories")
    assert text.rstrip().endswith("just said")


def test_packing_takes_the_best_that_fit_and_skips_what_does_not() -> None:
    big = _item(cube("word " * 400), 10.0)
    small = [_item(cube(f"fact number {n}"), 5.0 - n) for n in range(5)]
    packed, tokens = pack([big, *small], 80, TOKENIZER)
    assert big not in packed
    assert len(packed) == 5
    assert tokens == TOKENIZER.count(render_items(packed)) <= 80


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=120).filter(str.strip), min_size=0, max_size=25),
    budget=st.integers(min_value=1, max_value=400),
)
def test_packing_never_exceeds_the_budget(texts: list[str], budget: int) -> None:
    items = [_item(cube(t), float(-n)) for n, t in enumerate(texts)]
    packed, tokens = pack(items, budget, TOKENIZER)
    assert tokens <= budget
    assert TOKENIZER.count(render_items(packed)) == tokens


def test_a_weak_group_never_pulls_a_page_below_its_own_relevance() -> None:
    # `best` sits in a session whose other pages are poor matches; `rival` has a strong session
    best = cube("best", session="weak", level=Level.short)
    poor = [cube(f"poor {n}", session="weak", level=Level.short) for n in range(3)]
    rival = cube("rival", session="strong", level=Level.short)
    mates = [cube(f"mate {n}", session="strong", level=Level.short) for n in range(2)]
    dense = {best.id: 0.9, rival.id: 0.8, **{c.id: 0.0 for c in poor}, **{c.id: 0.8 for c in mates}}
    everyone = [best, *poor, rival, *mates]
    floored = rank(everyone, dense, neighbour=0.0, mmr=0.0, session=0.0, group=1.0)
    sunk = rank(everyone, dense, neighbour=0.0, mmr=0.0, session=0.0, group=1.0, group_floor=None)
    floored_best = next(i for i in floored if i.cube.id == best.id)
    sunk_best = next(i for i in sunk if i.cube.id == best.id)
    assert floored_best.why["group"] == 0.0
    assert sunk_best.why["group"] < 0.0
    assert floored_best.score > sunk_best.score
