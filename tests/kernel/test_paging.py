"""Paging end to end on a real home: short -> mid -> long-term, heat, promotion, page-out and page-in."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memos import ManualClock, MemCube, MemOS, Status, UserError
from memos.config import Settings
from memos.cube import ACL, Header, Provenance
from memos.errors import BackendError
from memos.ids import new_id
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM, ScriptedLLM
from memos.paging import PRESETS, Pager, PagingConfig, heat
from memos.summaries import (
    extractive_profile,
    extractive_theme,
    match_score,
    parse_knowledge,
    parse_theme,
    parse_verdict,
)

NS = ("alice", "chat")
PATH = "alice/chat"
PAPER = PRESETS["paper"]
START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def mos(home: Path, clock: ManualClock) -> Iterator[MemOS]:
    """A home whose paging runs only when a test asks (auto_paging off)."""
    m = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False)
    yield m
    m.close()


def config(**overrides: Any) -> PagingConfig:
    """The paper preset with some constants replaced."""
    return PAPER.with_overrides(overrides)


def write(
    mos: MemOS,
    texts: Sequence[str],
    *,
    session: str | None = "s1",
    speakers: Sequence[str] = ("alice",),
    ns: tuple[str, ...] = NS,
    event_time: datetime | None = None,
) -> list[MemCube]:
    """Write one page per text, speakers taking turns."""
    items = [
        {
            "text": text,
            "event_time": event_time,
            "provenance": {"session_id": session, "speaker": speakers[i % len(speakers)]},
        }
        for i, text in enumerate(texts)
    ]
    return mos.as_user("alice").write_many(ns, items)


def ids(cubes: Sequence[MemCube]) -> list[str]:
    """The ids of cubes, in order."""
    return [c.id for c in cubes]


def short_ids(pager: Pager, ns: str = PATH) -> list[str]:
    """The short-term FIFO of a namespace, oldest first."""
    return ids(pager.store.cubes_in(ns, levels=["short"]))


def long_cubes(pager: Pager, kind: str, statuses: Sequence[str] = ("active",)) -> list[MemCube]:
    """Long-term cubes of one type, oldest first."""
    return pager.store.cubes_in(PATH, levels=["long"], labels={"type": kind}, statuses=statuses)


# ---- pure functions ----------------------------------------------------------------------------


def test_heat_formula_exact_values() -> None:
    ref = PRESETS["reference-code"]
    assert heat(2, 3, 0, PAPER) == 6.0
    assert heat(0, 0, 1e7, PAPER) == math.exp(-1)
    assert heat(1, 1, 86_400, ref) == 2 + math.exp(-1)
    assert heat(1, 1, 86_400, PAPER) == 2 + math.exp(-86_400 / 1e7)
    # a clock that went backwards gives a negative elapsed time: clamped to 0, never above gamma
    assert heat(0, 0, -3600, PAPER) == 1.0
    assert heat(3, 1, 0, config(alpha=0.8, beta=0.8, gamma=1e-4)) == pytest.approx(0.8 * 3 + 0.8 + 1e-4, abs=1e-15)


def test_extractive_theme_keywords_and_summary() -> None:
    texts = [
        "I moved to Lisbon in May. It is sunny.",
        "Lisbon has great food and sunny days",
        "My cat Miso likes Lisbon",
    ]
    theme = extractive_theme(texts, config(summary_keywords=3, summary_words=60))
    assert theme.keywords == ["lisbon", "sunny", "cat"]  # 3, 2, then the first of the 1s alphabetically
    assert theme.summary == (
        "Topics: lisbon, sunny, cat. I moved to Lisbon in May. Lisbon has great food and sunny days "
        "My cat Miso likes Lisbon"
    )
    capped = extractive_theme(texts, config(summary_keywords=3, summary_words=12))
    assert capped.summary == "Topics: lisbon, sunny, cat. I moved to Lisbon in May. Lisbon has"


def test_extractive_profile_per_speaker_and_carried_over() -> None:
    def page(text: str, speaker: str) -> MemCube:
        header = Header(
            created_at=START, updated_at=START, acl=ACL(owner="alice"), provenance=Provenance(speaker=speaker)
        )
        return MemCube(id=new_id(), namespace=NS, content=text, header=header)

    cfg = config(profile_keywords=3)
    first = extractive_profile(
        None, [page("I love hiking and hiking boots", "alice"), page("Hiking trails near Lisbon are great", "bot")], cfg
    )
    # the assistant's side is left out; a speaker's own name is not a keyword of them
    assert first == "Profile (extractive): alice: hiking, boots, love"
    second = extractive_profile(first, [page("Boots again, says Alice", "alice"), page("Bob likes chess", "bob")], cfg)
    assert second == "Profile (extractive): alice: boots, hiking, love; bob: chess, likes"


def test_llm_answers_are_parsed_leniently() -> None:
    assert [parse_verdict(t) for t in ("true", " **TRUE**", "Yes.", "false", "No", "maybe true", "", None)] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    theme = parse_theme(
        'Sure!\n```json\n{"theme": "Pets", "keywords": ["Cat", "miso", "cat"], "content": "A cat."}\n```'
    )
    assert theme is not None and (theme.summary, theme.keywords, theme.title) == ("A cat.", ["cat", "miso"], "Pets")
    listed = parse_theme('[{"theme": "T", "keywords": "a, b", "content": "first"}, {"content": "second"}]')
    assert listed is not None and (listed.summary, listed.keywords) == ("first", ["a", "b"])
    assert [parse_theme(t) for t in ("no json here", '{"theme": "x"}', "{broken", None)] == [None] * 4
    answer = "【User Private Data】\n- Alice lives in Lisbon.\n* None\nAssistant knowledge: Recommended a cafe.\n"
    assert parse_knowledge(answer) == (["Alice lives in Lisbon."], ["Recommended a cafe."])
    assert parse_knowledge("User knowledge:\nNone\nAssistant knowledge:\nNone.") == ([], [])
    assert parse_knowledge("I could not find anything.") is None


def test_presets_and_overrides(home: Path) -> None:
    paper, ref = PRESETS["paper"], PRESETS["reference-code"]
    assert (paper.stm_capacity, paper.theta, paper.alpha, paper.beta, paper.gamma) == (7, 0.6, 1, 1, 1)
    assert (paper.mu_seconds, paper.tau, paper.max_segments, paper.eviction) == (1e7, 5, 200, "heat")
    assert (ref.stm_capacity, ref.theta, ref.mu_seconds, ref.tau) == (10, 0.6, 86_400, 5)
    assert (ref.max_segments, ref.eviction, ref.kb_capacity) == (2000, "lfu", 100)
    cfg = PagingConfig.from_settings(Settings.load(home, paging_preset="reference-code", paging={"theta": 0.5}))
    assert (cfg.theta, cfg.stm_capacity, cfg.eviction) == (0.5, 10, "lfu")
    with pytest.raises(UserError, match="unknown paging preset 'memgpt': use one of paper, reference-code"):
        PagingConfig.from_settings(Settings.load(home, paging_preset="memgpt"))
    with pytest.raises(UserError, match=r"unknown paging setting\(s\) thetta: the valid ones are stm_capacity, theta"):
        PagingConfig.from_settings(Settings.load(home, paging={"thetta": 0.5}))
    with pytest.raises(UserError, match="bad paging setting stm_capacity"):
        paper.with_overrides({"stm_capacity": 0})
    with pytest.raises(UserError, match="bad paging setting eviction"):
        paper.with_overrides({"eviction": "random"})


# ---- short -> mid ------------------------------------------------------------------------------


def test_overflow_moves_exactly_the_oldest_pages(mos: MemOS, clock: ManualClock) -> None:
    pager = Pager(mos, config(stm_capacity=3, tau=1000))
    pages = write(mos, [f"Alice bakes sourdough bread, attempt {i}." for i in range(5)])
    below = write(mos, [f"a nested page {i}" for i in range(5)], ns=("alice", "chat", "sub"))
    report = pager.run([PATH])
    assert (report.moved, report.segments_created, report.merged) == (2, 1, 0)
    assert short_ids(pager) == ids(pages[2:])
    # only the exact namespace's FIFO: the one below it is untouched
    assert short_ids(pager, "alice/chat/sub") == ids(below)
    [segment] = pager.store.cubes_in(PATH, levels=["mid"], labels={"type": "segment"})
    assert segment.sources == ids(pages[:2])
    assert segment.header.provenance.source.value == "fusion" and segment.header.acl.owner == "alice"
    moved = mos.catalog.get(ids(pages[:2]))
    assert all(c.level.value == "mid" and c.header.labels["segment"] == segment.id for c in moved.values())
    assert all(c.header.version == 1 for c in moved.values())  # a paging move is not a new version
    assert pager.segment_of(ids(pages)) == {p.id: segment.id for p in pages[:2]}
    first_audit = mos.catalog.audit_log(cube_id=pages[0].id)[0]
    assert (first_audit["actor"], first_audit["action"], first_audit["detail"]) == (
        "memos",
        "page",
        {"segment": segment.id},
    )
    assert mos.catalog.audit_log(cube_id=segment.id)[0]["action"] == "segment"
    assert segment.id in mos.vectors.all_ids()  # the summary was embedded after the commit

    assert pager.run([PATH]).moved == 0  # at capacity: nothing to do
    clock.advance(minutes=1)
    newer = write(mos, ["Alice bakes rye bread.", "Alice bakes spelt bread."])
    assert pager.run().moved == 4  # all namespaces: both FIFOs overflow
    assert short_ids(pager) == [pages[4].id, *ids(newer)]
    assert pager.counts([PATH])["short_pages"] == 3 + 3  # the namespace and the one below it


@pytest.mark.parametrize("margin", [-1e-9, 1e-9], ids=["just-above-theta-merges", "just-below-theta-is-new"])
def test_merge_or_new_segment_around_theta(mos: MemOS, clock: ManualClock, margin: float) -> None:
    setup = Pager(mos, config(stm_capacity=2, tau=1000))
    pages = write(mos, ["Alice cooks pasta with tomato sauce.", "She adds basil to the pasta."], session="s1")
    pages += write(mos, ["The pasta sauce needs garlic.", "Fresh pasta cooks in two minutes."], session="s2")
    setup.run()
    [first] = setup.store.in_namespace(PATH)
    assert mos.catalog.get([first.id])[first.id].sources == ids(pages[:2])

    # the score the chain (pages 2-3, session s2) will get against the existing segment
    chain = [p.text for p in pages[2:]]
    theme = extractive_theme(chain, setup.config)
    score = match_score(
        mos.embedder.embed([theme.summary])[0], theme.keywords, mos.vectors.get([first.id])[first.id], first.keywords
    )
    assert 0.6 < score < 2

    clock.advance(hours=1)
    write(mos, ["Unrelated: the car needs new tyres.", "Tyres are expensive."], session="s3")
    pager = Pager(mos, config(stm_capacity=2, tau=1000, theta=score + margin))
    report = pager.run()
    segments = pager.store.in_namespace(PATH)
    if margin < 0:
        assert (report.merged, report.segments_created, report.moved) == (1, 0, 2)
        [state] = segments
        cube = mos.catalog.get([state.id])[state.id]
        assert cube.sources == ids(pages)
        everything = extractive_theme([p.text for p in pages], pager.config)
        assert (cube.text, state.keywords) == (everything.summary, everything.keywords)
        assert (state.visits, state.interactions, state.last_visit) == (0, 4, clock.now())
        assert state.heat == cube.header.usage.heat == 0 + 4 + 1
        assert [c.header.version for c in mos.catalog.versions(state.id)] == [1, 2]
        assert mos.catalog.audit_log(cube_id=state.id)[0]["action"] == "merge"
    else:
        assert (report.merged, report.segments_created, report.moved) == (0, 1, 2)
        assert [mos.catalog.get([s.id])[s.id].sources for s in segments] == [ids(pages[:2]), ids(pages[2:])]
        assert [s.interactions for s in segments] == [2, 2]


def test_chains_follow_session_ids_or_vectors_without_llm(mos: MemOS) -> None:
    a = write(mos, ["Planning the Kyoto trip in April.", "Booking the Kyoto hotel."], session="trip")
    b = write(mos, ["Booking the Kyoto flights."], session="flights")
    # no session id: continuous with the page before when their vectors are close enough
    c = write(mos, ["Booking the Kyoto train.", "My tax return is due."], session=None)
    write(mos, ["newest page stays"], session=None)
    vectors = mos.vectors.get(ids(b + c))
    near, far = float(vectors[b[0].id] @ vectors[c[0].id]), float(vectors[c[0].id] @ vectors[c[1].id])
    assert far < near
    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10, continuity_threshold=near))
    assert pager.run().segments_created == 3
    sources = [mos.catalog.get([s.id])[s.id].sources for s in pager.store.in_namespace(PATH)]
    assert sources == [ids(a), [b[0].id, c[0].id], [c[1].id]]


# ---- heat ----------------------------------------------------------------------------------------


def test_heat_decays_with_the_clock_and_ignores_a_clock_moved_back(mos: MemOS, clock: ManualClock) -> None:
    pager = Pager(mos, config(stm_capacity=1, tau=1000))
    write(mos, ["Alice plays the cello.", "Alice practises scales.", "newest"])
    pager.run()
    [state] = pager.store.in_namespace(PATH)
    assert pager.heat_of([state.id]) == {state.id: 0 + 2 + 1.0}
    clock.advance(seconds=1e7)
    assert pager.heat_of([state.id]) == {state.id: 2 + math.exp(-1)}
    assert pager.heat_of([state.id], now=START + timedelta(seconds=2e7)) == {state.id: 2 + math.exp(-2)}
    clock.set(START - timedelta(days=3))  # a stale clock: no crash, no heat above gamma from the recency term
    assert pager.heat_of([state.id]) == {state.id: 3.0}
    assert pager.run() == pager.run()  # nothing to do, and nothing raised
    [info] = pager.hottest([PATH], 5)
    assert (info.id, info.heat, info.visits, info.interactions, info.pages, info.paged_out) == (
        state.id,
        3.0,
        0,
        2,
        2,
        False,
    )
    assert info.summary.startswith("Topics: alice")


def test_visit_bumps_only_the_given_segments(mos: MemOS, clock: ManualClock) -> None:
    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10))
    write(mos, ["Alice sails on weekends."], session="a")
    write(mos, ["Alice grows tomatoes."], session="b")
    write(mos, ["newest"], session="c")
    pager.run()
    first, second = pager.store.in_namespace(PATH)
    clock.advance(hours=2)
    pager.visit([first.id, first.id])
    after = pager.store.get([first.id, second.id])
    assert (after[first.id].visits, after[first.id].last_visit, after[first.id].heat) == (1, clock.now(), 1 + 1 + 1.0)
    assert mos.catalog.get([first.id])[first.id].header.usage.heat == 3.0
    assert (after[second.id].visits, after[second.id].last_visit, after[second.id].heat) == (0, START, 2.0)
    assert pager.heat_of([first.id, second.id]) == {
        first.id: 3.0,
        second.id: 1 + math.exp(-7200 / 1e7),
    }


# ---- mid -> long -------------------------------------------------------------------------------


def test_a_new_four_page_segment_promotes_at_once_with_paper_defaults(mos: MemOS, clock: ManualClock) -> None:
    pager = Pager(mos, PAPER)
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    texts = [
        "I moved to Lisbon last spring.",
        "Lisbon is a lovely city to live in.",
        "My sister Ana visits Lisbon often.",
        "Ana is welcome to stay with you.",
    ] + [f"later turn {i}" for i in range(7)]
    pages = write(mos, texts, speakers=("alice", "assistant"), event_time=when)
    report = pager.run()
    assert (report.moved, report.segments_created, report.promoted, report.knowledge_written) == (4, 1, 1, 4)
    [state] = pager.store.in_namespace(PATH)
    # H = 0 visits + 4 interactions + 1 = 5 >= tau; afterwards N = L = 0 and H = gamma
    assert (state.visits, state.interactions, state.heat, state.last_visit) == (0, 0, 1.0, clock.now())
    assert state.analyzed == ids(pages[:4])
    assert mos.catalog.get([state.id])[state.id].header.usage.heat == 1.0
    user = long_cubes(pager, "user_knowledge")
    assistant = long_cubes(pager, "assistant_knowledge")
    assert [c.text for c in user] == [texts[0], texts[2]]
    assert [c.text for c in assistant] == [texts[1], texts[3]]
    assert [c.header.provenance.derived_from for c in user] == [[pages[0].id], [pages[2].id]]
    assert all(c.header.event_time == when and c.header.provenance.source.value == "fusion" for c in user)
    [profile] = long_cubes(pager, "profile")
    assert profile.text == extractive_profile(None, pages[:4], pager.config)
    assert profile.text.startswith("Profile (extractive): alice: lisbon, ")
    assert profile.header.provenance.derived_from == ids(pages[:4])
    actions = {e["action"] for e in mos.catalog.audit_log(limit=1000) if e["actor"] == "memos"}
    assert actions == {"page", "segment", "promote"}

    # hot again through visits, but no unanalysed page: no second promotion
    for _ in range(4):
        pager.visit([state.id])
    assert pager.heat_of([state.id])[state.id] == 5.0
    assert pager.run().promoted == 0
    # new pages merged in are promoted, and only they
    write(mos, ["Ana plays the cello in Lisbon."], speakers=("alice",))
    report = Pager(mos, config(theta=-10)).run()
    assert (report.merged, report.promoted, report.knowledge_written) == (1, 1, 1)
    assert [c.text for c in long_cubes(pager, "user_knowledge")] == [texts[0], texts[2], texts[4]]
    [profile_now] = long_cubes(pager, "profile")
    assert (profile_now.id, profile_now.header.version) == (profile.id, 2)
    assert pager.store.get([state.id])[state.id].analyzed == ids(pages[:5])


def test_knowledge_is_a_fifo_that_archives_beyond_kb_capacity(mos: MemOS) -> None:
    pager = Pager(mos, config(stm_capacity=1, kb_capacity=3, tau=0))
    pages = write(mos, [f"Alice fact number {i} about gardening." for i in range(6)])
    report = pager.run()
    assert (report.promoted, report.knowledge_written, report.archived) == (1, 5, 2)
    assert [c.header.provenance.derived_from for c in long_cubes(pager, "user_knowledge")] == [
        [p.id] for p in pages[2:5]
    ]
    archived = long_cubes(pager, "user_knowledge", statuses=["archived"])
    assert [c.text for c in archived] == [pages[0].text, pages[1].text]
    assert all(mos.catalog.audit_log(cube_id=c.id)[0]["action"] == "archive" for c in archived)
    counts = pager.counts([PATH])
    assert (counts["user_knowledge"], counts["user_knowledge_archived"], counts["profiles"]) == (3, 2, 1)
    # archived, not deleted: still found when archived memories are asked for
    alice = mos.as_user("alice")
    hits = alice.recall(NS, "fact number 0 gardening", level="long", include_archived=True)
    assert archived[0].id in {h.cube.id for h in hits}
    assert archived[0].id not in {h.cube.id for h in alice.recall(NS, "fact number 0 gardening", level="long")}


# ---- page-out and page-in ------------------------------------------------------------------------


def _three_segments(mos: MemOS) -> tuple[list[MemCube], list[MemCube], list[MemCube]]:
    """Sessions of 3, 1 and 2 pages (heat 4, 2, 3 once paged), then one page that stays short."""
    a = write(mos, ["Alice trains for a marathon.", "Long runs on Sunday.", "New running shoes."], session="a")
    b = write(mos, ["The boiler was repaired."], session="b")
    c = write(mos, ["Alice reads Borges.", "Ficciones is her favourite."], session="c")
    write(mos, ["newest page"], session="d")
    return a, b, c


def test_page_out_the_coldest_then_page_in(mos: MemOS) -> None:
    pager = Pager(mos, config(stm_capacity=1, max_segments=2, tau=1000, theta=10))
    a, b, c = _three_segments(mos)
    report = pager.run()
    assert (report.segments_created, report.paged_out) == (3, 1)
    seg = pager.segment_of([a[0].id, b[0].id, c[0].id])
    sa, sb, sc = seg[a[0].id], seg[b[0].id], seg[c[0].id]
    states = pager.store.get([sa, sb, sc])
    assert [states[s].paged_out for s in (sa, sb, sc)] == [False, True, False]  # heat 4, 2, 3
    assert [c.status for c in mos.catalog.get([sb, b[0].id]).values()] == [Status.archived] * 2
    assert mos.catalog.audit_log(cube_id=sb)[0]["action"] == "page_out"
    counts = pager.counts([PATH])
    assert (counts["segments"], counts["segments_paged_out"], counts["mid_pages"], counts["paged_out_pages"]) == (
        2,
        1,
        5,
        1,
    )
    # a paged-out page is still found on demand, never lost
    alice = mos.as_user("alice")
    assert b[0].id in {h.cube.id for h in alice.recall(NS, "boiler repaired", include_archived=True)}
    assert b[0].id not in {h.cube.id for h in alice.recall(NS, "boiler repaired")}
    assert [i.id for i in pager.hottest([PATH], 10)] == [sa, sc]

    assert pager.page_in([b[0].id]) == [sb]
    states = pager.store.get([sa, sb, sc])
    assert (states[sb].paged_out, states[sb].visits, states[sb].heat) == (False, 1, 1 + 1 + 1.0)
    assert {c.status for c in mos.catalog.get([sb, b[0].id]).values()} == {Status.active}
    # over capacity again: the coldest other than the one just paged in goes (c, heat 3, not b)
    assert [states[s].paged_out for s in (sa, sb, sc)] == [False, False, True]
    assert pager.page_in([sa, b[0].id]) == []  # neither is paged out
    assert pager.page_in([sc]) == [sc]
    with pytest.raises(UserError, match="is not a cube id"):
        pager.page_in(["nope"])


@pytest.mark.parametrize(("eviction", "victim"), [("heat", 1), ("lfu", 2)])
def test_eviction_policy_picks_the_victim(mos: MemOS, eviction: str, victim: int) -> None:
    _three_segments(mos)
    Pager(mos, config(stm_capacity=1, tau=1000, theta=10)).run()
    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10, max_segments=2, eviction=eviction))
    segments = [s.id for s in pager.store.in_namespace(PATH)]
    pager.visit([segments[0]])
    pager.visit([segments[1]])
    # heat: a 1+3+1 = 5, b 1+1+1 = 3, c 0+2+1 = 3 -> heat evicts b (the older of the two coldest);
    # visits: a 1, b 1, c 0 -> LFU evicts c
    assert pager.run().paged_out == 1
    assert [s.id for s in pager.store.in_namespace(PATH, paged_out=True)] == [segments[victim]]


def test_lfu_ties_go_to_the_oldest(mos: MemOS) -> None:
    _three_segments(mos)
    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10, max_segments=1, eviction="lfu"))
    assert pager.run().paged_out == 2
    segments = pager.store.in_namespace(PATH, paged_out=None)
    assert [s.paged_out for s in segments] == [True, True, False]


# ---- with an LLM ---------------------------------------------------------------------------------


def _task(messages: list[Message]) -> str:
    return messages[0].content.split(".")[0].removeprefix("TASK: ")


def test_llm_continuity_splits_chains_and_its_json_theme_is_used(mos: MemOS) -> None:
    def answer(messages: list[Message], _tools: list[ToolSchema]) -> str:
        task, prompt = _task(messages), messages[-1].content
        if task == "continuity":
            return "**True**" if "turn 1" in prompt.split("Later turn")[1] else "not sure"
        first = prompt.split("- alice: ")[1].splitlines()[0]
        return f'```json\n{{"theme": "T", "keywords": ["Topic", "{first[-1]}"], "content": "About {first}"}}\n```'

    llm = FunctionLLM(answer)
    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10), llm=llm)
    pages = write(mos, ["turn 0", "turn 1", "turn 2", "turn 3"])
    assert pager.run().segments_created == 2
    assert [_task(c.messages) for c in llm.calls] == ["continuity", "continuity", "theme", "theme"]
    states = pager.store.in_namespace(PATH)
    cubes = mos.catalog.get([s.id for s in states])
    assert [cubes[s.id].sources for s in states] == [ids(pages[:2]), [pages[2].id]]
    assert [cubes[s.id].text for s in states] == ["About turn 0", "About turn 2"]
    assert [s.keywords for s in states] == [["topic", "0"], ["topic", "2"]]


def test_llm_garbage_or_failure_falls_back_to_extractive(mos: MemOS) -> None:
    def answer(messages: list[Message], _tools: list[ToolSchema]) -> str:
        if _task(messages) == "continuity":
            raise BackendError("the model server is down")
        return "I'd rather not summarise that."

    pager = Pager(mos, config(stm_capacity=1, tau=1000, theta=10), llm=FunctionLLM(answer))
    first = write(mos, ["Alice collects vinyl records.", "Mostly jazz records."], session="music")
    second = write(mos, ["The roof leaks again.", "newest"], session="house")
    pager.run()
    states = pager.store.in_namespace(PATH)
    cubes = mos.catalog.get([s.id for s in states])
    # the continuity call failed: session ids decided; the theme was garbage: extractive summaries
    assert [cubes[s.id].sources for s in states] == [ids(first), [second[0].id]]
    expected = extractive_theme([p.text for p in first], pager.config)
    assert (cubes[states[0].id].text, states[0].keywords) == (expected.summary, expected.keywords)


def test_llm_promotion_writes_profile_and_knowledge(mos: MemOS) -> None:
    llm = ScriptedLLM(
        [
            "true",
            "true",
            "true",
            '{"theme": "Lisbon", "keywords": ["lisbon"], "content": "Alice lives in Lisbon."}',
            "Alice: lives in Lisbon (evidence: said so); likes the city (High).",
            "【User Private Data】\n- Alice lives in Lisbon.\n- None\n【Assistant Knowledge】\n- None",
        ]
    )
    pager = Pager(mos, PAPER, llm=llm)
    pages = write(mos, [f"Lisbon chat {i}" for i in range(11)], speakers=("alice", "assistant"))
    report = pager.run()
    assert (report.promoted, report.knowledge_written) == (1, 1)
    assert not llm.replies  # every scripted answer was used, in order
    [profile] = long_cubes(pager, "profile")
    assert profile.text == "Alice: lives in Lisbon (evidence: said so); likes the city (High)."
    [fact] = long_cubes(pager, "user_knowledge")
    assert (fact.text, fact.header.provenance.derived_from) == ("Alice lives in Lisbon.", ids(pages[:4]))
    assert long_cubes(pager, "assistant_knowledge") == []

    # hot again through visits plus a merged page; a too-short profile answer keeps the current profile
    [state] = pager.store.in_namespace(PATH)
    for _ in range(3):
        pager.visit([state.id])
    llm.enqueue(
        '{"content": "More Lisbon.", "keywords": ["lisbon"]}',
        '{"content": "Alice lives in Lisbon, and more.", "keywords": ["lisbon", "more"]}',
        "ok",
        "User knowledge:\nLisbon again.",
    )
    write(mos, ["Lisbon chat 11"])
    report = pager.run()
    assert (report.merged, report.promoted, report.knowledge_written) == (1, 1, 1)
    assert not llm.replies
    assert mos.catalog.get([state.id])[state.id].text == "Alice lives in Lisbon, and more."
    assert long_cubes(pager, "profile")[0].header.version == 1
    facts = long_cubes(pager, "user_knowledge")
    assert [(c.text, c.header.provenance.derived_from) for c in facts] == [
        ("Alice lives in Lisbon.", ids(pages[:4])),
        ("Lisbon again.", [pages[4].id]),
    ]


# ---- background and concurrency ------------------------------------------------------------------


def test_background_schedule_wait_and_close(mos: MemOS) -> None:
    pager = Pager(mos, config(stm_capacity=2, tau=1000))
    pages = write(mos, [f"Alice walks the dog, day {i}." for i in range(5)])
    pager.schedule(NS)
    assert pager.wait(timeout=30)
    assert short_ids(pager) == ids(pages[3:])
    more = write(mos, ["Alice feeds the cat.", "Alice waters the plants."])
    pager.schedule(PATH)
    pager.close()  # finishes what is queued, then stops
    assert short_ids(pager) == ids(more)
    last = write(mos, ["Alice sleeps."])
    pager.schedule(PATH)  # closed: ignored, and wait does not hang
    assert pager.wait(timeout=1)
    assert short_ids(pager) == ids(more + last)
    with pytest.raises(UserError, match="invalid namespace segment"):
        pager.schedule("alice/bad name")


def test_pager_defaults_come_from_the_home_settings(home: Path, clock: ManualClock) -> None:
    with MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, paging={"stm_capacity": 2}) as m:
        pager = Pager(m)
        assert (pager.config.stm_capacity, pager.config.theta) == (2, 0.6)


def test_concurrent_runs_and_writes_keep_every_page_exactly_once(home: Path, clock: ManualClock) -> None:
    # tick runs the home's own pager; this one shares its constants through the settings
    paging = {"stm_capacity": 3, "tau": 6, "theta": 1.2, "max_segments": 2, "kb_capacity": 10}
    mos = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, paging=paging)
    pager = Pager(mos)
    alice = mos.as_user("alice")
    written: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    topics = ["cooking pasta", "training for a marathon", "reading novels", "fixing the bike"]

    def writer() -> None:
        try:
            for i in range(36):
                session = f"s{(i // 3) % 4}"
                [cube] = write(mos, [f"Turn {i} about {topics[(i // 3) % 4]}."], session=session)
                written.append(cube.id)
                pager.schedule(NS)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def ticker() -> None:
        try:
            while not done.is_set():
                alice.tick()
                pager.run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=ticker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert pager.wait(timeout=30)
    pager.run()
    pager.close()
    assert errors == []
    assert len(written) == len(set(written)) == 36
    pages = mos.catalog.get(written)
    assert set(pages) == set(written)
    assert short_ids(pager) == written[-3:]
    in_segments: list[str] = []
    for state in pager.store.in_namespace(PATH, paged_out=None):
        sources = mos.catalog.get([state.id])[state.id].sources
        in_segments += sources
        assert all(pages[p].header.labels["segment"] == state.id and pages[p].level.value == "mid" for p in sources)
    assert sorted(in_segments) == sorted(written[:-3])  # every moved page in exactly one segment
    assert all(pages[p].status in (Status.active, Status.archived) for p in written)
    counts = pager.counts([PATH])
    assert (counts["segments"], counts["short_pages"]) == (2, 3)
    assert counts["segments_paged_out"] > 0 and 0 < counts["user_knowledge"] <= 10  # pages out and promotes too
    mos.close()
