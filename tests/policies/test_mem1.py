"""MEM1: tag parsing, the constant-memory loop, the token meter, EM scoring, the stitched mask, the QA env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memos import ManualClock, MemOS
from memos.errors import PermissionDenied, UserError
from memos.llm.base import Completion
from memos.llm.testing import ScriptedLLM
from memos.policies.mem1 import (
    Action,
    Document,
    MEM1Agent,
    MultiObjectiveQA,
    build_masks,
    exact_match,
    format_documents,
    measure,
    measure_steps,
    multi_em,
    normalize_answer,
    parse_observation,
    parse_turn,
    render_observation,
    task_prompt,
)
from memos.policies.mem1.plugin import make_agent, memos_register_agents
from memos.tokens import count_tokens

DOCS = [
    Document("Pets", "Ana adopted a grey kitten called Miso.", "d1"),
    Document("Naps", "The kitten sleeps on the keyboard all afternoon while Ana works.", "d2"),
    Document("Vet", "The kitten saw the vet.", "d3"),
    Document("Marathon", "Ben signed up for the Berlin marathon.", "d4"),
    Document("Toys", "Ana bought the kitten a toy mouse and a small ball.", "d5"),
]
QUESTIONS = ["What is Ana's kitten called?", "Which marathon did Ben sign up for?"]
GOLDS = ["Miso", "the Berlin marathon"]


def qa_env() -> MultiObjectiveQA:
    return MultiObjectiveQA(DOCS, QUESTIONS, GOLDS)


# ---- tags --------------------------------------------------------------------------------------


def test_parse_turn_in_the_released_models_tags() -> None:
    search = parse_turn("<think>Need the kitten's name.</think>\n<search> kitten name </search>")
    assert (search.valid, search.state, search.action, search.content) == (
        True,
        "Need the kitten's name.",
        "search",
        "kitten name",
    )
    answer = parse_turn("<think>Found both.</think><answer>Miso; Berlin marathon</answer>")
    assert (answer.valid, answer.action, answer.answers) == (True, "answer", ["Miso", "Berlin marathon"])


def test_parse_turn_in_the_papers_tags() -> None:
    turn = parse_turn("<IS>kitten: Miso</IS><query>Ben marathon</query>", "paper")
    assert (turn.valid, turn.state, turn.action, turn.content) == (True, "kitten: Miso", "search", "Ben marathon")
    final = parse_turn("<IS>done</IS><answer>Miso; Berlin</answer>", "paper")
    assert final.answers == ["Miso", "Berlin"]
    # the other format's tags mean nothing here
    assert not parse_turn("<think>x</think><search>y</search>", "paper").valid


def test_the_last_of_several_answers_counts() -> None:
    echoed = task_prompt("Question 1: a?\nQuestion 2: b?") + "<think>Found them.</think><answer>Miso; Berlin</answer>"
    turn = parse_turn(echoed)
    assert turn.valid
    assert turn.state == "Found them."
    assert turn.answers == ["Miso", "Berlin"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<search>kitten</search>", "no complete <think> internal state before the action"),
        ("<search>kitten</search><think>late</think>", "no complete <think> internal state before the action"),
        ("<think>state</think><answer>Miso; Berlin", "a <answer> tag is not closed (or closed twice)"),
        ("<think>state<search>kitten</search>", "a <think> tag is not closed (or closed twice)"),
        ("<think>state</think><search>  </search>", "the <search> action is empty"),
        ("<think>state</think> I am not sure.", "no complete <search> or <answer> action in the turn"),
        ("", "no complete <search> or <answer> action in the turn"),
    ],
)
def test_malformed_turns_are_invalid_not_errors(text: str, problem: str) -> None:
    turn = parse_turn(text)
    assert not turn.valid
    assert turn.problem == problem


def test_information_blocks_render_and_parse_back() -> None:
    docs = format_documents(DOCS[:2])
    assert docs == (
        "Doc 1(Title: Pets) Ana adopted a grey kitten called Miso.\n"
        "Doc 2(Title: Naps) The kitten sleeps on the keyboard all afternoon while Ana works.\n"
    )
    block = render_observation(docs, 4)
    assert block == f"<information>\n[HINT]You have 4 turns left.[/HINT]\n{docs}</information>\n"
    parsed = parse_observation("noise " + block)
    assert (parsed.valid, parsed.turns_left) == (True, 4)
    assert [(d.title, d.text) for d in parsed.documents] == [(d.title, d.text) for d in DOCS[:2]]
    last = render_observation(docs, 1, "paper")
    assert last.startswith(
        "<info>\n[HINT]You have 1 turn left. You must answer the question in the next turn.[/HINT]\n"
    )
    assert parse_observation(last, "paper").turns_left == 1
    assert not parse_observation("no block here").valid


# ---- the loop ----------------------------------------------------------------------------------

SCRIPT = [
    "<think>Need the kitten's name.</think><search>grey kitten</search>",
    "<think>Kitten: Miso. Need the marathon.</think><search>Ben marathon</search>",
    "<think>Kitten: Miso. Marathon: Berlin. Check the vet.</think><search>vet</search>",
    "<think>Kitten: Miso. Marathon: Berlin.</think><answer>Miso; Berlin marathon</answer>",
]


def test_each_prompt_holds_the_task_and_the_previous_turn_only() -> None:
    llm = ScriptedLLM(SCRIPT)
    episode = MEM1Agent(llm, qa_env(), max_turns=6).run()
    assert (episode.stop, episode.answers, episode.reward) == ("answer", ["Miso", "Berlin marathon"], 2.0)
    turns = episode.turns
    assert [call.messages[0].content for call in llm.calls] == [t.prompt for t in turns]
    assert turns[0].prompt == episode.task
    for j in range(1, len(turns)):
        previous = turns[j - 1]
        assert turns[j].prompt == episode.task + previous.state + previous.action + previous.observation
    # turn 3 (and turn 4) carry nothing of turn 1: its state, its query, its documents
    first = turns[0]
    assert "Pets" in first.observation and "grey kitten called Miso" in first.observation
    for later in turns[2:]:
        for stale in ("Need the kitten's name.", "grey kitten", "Pets", "[HINT]You have 5 turns left."):
            assert stale not in later.prompt
    assert "Doc 1(Title: Marathon) Ben signed up for the Berlin marathon." not in turns[3].prompt
    assert turns[3].prompt.endswith(
        "<think>Kitten: Miso. Marathon: Berlin. Check the vet.</think>\n<search>vet</search>\n"
        "<information>\n[HINT]You have 3 turns left.[/HINT]\nDoc 1(Title: Vet) The kitten saw the vet.\n"
        "</information>\n"
    )


def test_the_full_context_baseline_keeps_every_turn() -> None:
    episode = MEM1Agent(ScriptedLLM(SCRIPT), qa_env(), context="full").run()
    last = episode.turns[-1].prompt
    assert last == episode.task + "".join(t.state + t.action + t.observation for t in episode.turns[:-1])
    assert "grey kitten called Miso" in last


def test_the_papers_tags_run_end_to_end() -> None:
    llm = ScriptedLLM(
        ["<IS>Need the name.</IS><query>grey kitten</query>", "<IS>Miso.</IS><answer>Miso; Berlin</answer>"]
    )
    episode = MEM1Agent(llm, qa_env(), format="paper").run()
    assert "<IS>\nKeep everything" in episode.task and "<query>QUERY</query>" in episode.task
    assert episode.turns[1].prompt.endswith(
        "<IS>Need the name.</IS>\n<query>grey kitten</query>\n<info>\n[HINT]You have 5 turns left.[/HINT]\n"
        "Doc 1(Title: Pets) Ana adopted a grey kitten called Miso.\n"
        "Doc 2(Title: Vet) The kitten saw the vet.\n"
        "Doc 3(Title: Naps) The kitten sleeps on the keyboard all afternoon while Ana works.\n</info>\n"
    )
    assert (episode.answers, episode.reward) == (["Miso", "Berlin"], 1.0)


def test_invalid_turn_ends_the_episode_without_reward() -> None:
    episode = MEM1Agent(ScriptedLLM(["<think>hm</think>", "never asked"]), qa_env()).run()
    assert (episode.stop, episode.answers, episode.reward, len(episode.turns)) == ("invalid", None, 0.0, 1)
    assert episode.turns[0].parsed.problem == "no complete <search> or <answer> action in the turn"


def test_a_search_on_the_last_turn_gets_no_reply() -> None:
    llm = ScriptedLLM(["<think>a</think><search>kitten</search>", "<think>b</think><search>marathon</search>"])
    episode = MEM1Agent(llm, qa_env(), max_turns=2).run()
    assert episode.stop == "max_turns"
    assert episode.turns[0].observation.startswith("<information>\n[HINT]You have 1 turn left.")
    assert episode.turns[1].observation == ""


def test_a_closing_tag_cut_off_as_a_stop_sequence_is_restored() -> None:
    llm = ScriptedLLM(
        [Completion(text="<think>a</think><search>kitten"), Completion(text="<think>b</think><answer>Miso; x")]
    )
    episode = MEM1Agent(llm, qa_env()).run()
    assert [t.action for t in episode.turns] == ["<search>kitten</search>\n", "<answer>Miso; x</answer>\n"]
    assert llm.calls[0].kwargs["stop"] == ["</search>", "</answer>"]
    assert episode.reward == 1.0


def test_agent_rejects_bad_settings() -> None:
    with pytest.raises(UserError, match="unknown MEM1 format"):
        MEM1Agent(ScriptedLLM(), qa_env(), format="xml")
    with pytest.raises(UserError, match="max_turns"):
        MEM1Agent(ScriptedLLM(), qa_env(), max_turns=0)


# ---- token meter -------------------------------------------------------------------------------


def test_peak_and_dependency_of_a_scripted_episode() -> None:
    episode = MEM1Agent(ScriptedLLM([SCRIPT[0], SCRIPT[1], SCRIPT[3]]), qa_env()).run()
    t0, r0, i0 = episode.steps()[0]
    t1, r1, i1 = episode.steps()[1]
    t2, r2, _ = episode.steps()[2]
    assert (t0, r0) == ("<think>Need the kitten's name.</think>\n", "<search>grey kitten</search>\n")
    assert i0 == (
        "<information>\n[HINT]You have 5 turns left.[/HINT]\n"
        "Doc 1(Title: Pets) Ana adopted a grey kitten called Miso.\n"
        "Doc 2(Title: Vet) The kitten saw the vet.\n"
        "Doc 3(Title: Naps) The kitten sleeps on the keyboard all afternoon while Ana works.\n"
        "</information>\n"
    )
    report = measure(episode)
    # turn j holds t_{j-1} r_{j-1} i_{j-1} and its new t_j r_j (the task prompt is not counted)
    assert report.per_turn == (
        count_tokens(t0 + r0),
        count_tokens(t0 + r0 + i0 + t1 + r1),
        count_tokens(t1 + r1 + i1 + t2 + r2),
    )
    # turn 0 by cl100k: <th|ink|>|Need| the| kitten|'s| name|.</|think|>\n|<|search|>|grey| kitten|</|search|>\n
    assert report.per_turn == (19, 113, 82)
    assert report.peak == 113
    size = count_tokens
    expected = (
        size(t0) * (0 + size(t0) // 2)
        + size(r0) * (size(t0) + size(r0) // 2)
        + size(t1) * (size(t0 + r0 + i0) + size(t1) // 2)
        + size(r1) * (size(t0 + r0 + i0 + t1) + size(r1) // 2)
        + size(t2) * (size(t1 + r1 + i1) + size(t2) // 2)
        + size(r2) * (size(t1 + r1 + i1 + t2) + size(r2) // 2)
    )
    assert report.dependency == expected == 4099
    full = measure_steps(episode.steps(), context="full")
    assert full.per_turn == (19, 113, count_tokens(t0 + r0 + i0 + t1 + r1 + i1 + t2 + r2)) == (19, 113, 173)
    assert full.peak == 173


def test_the_peak_benchmark_plays_every_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from bench import mem1_peak

    section = mem1_peak.run((2, 4), episodes=1)
    assert "| 2 | 3 | 2.0/2 |" in section and "| 4 | 5 | 4.0/4 |" in section
    assert "**Goal: MEM1's peak stays within 1.2× from 2 to 4 objectives:" in section


# ---- scoring -----------------------------------------------------------------------------------


def test_exact_match_after_squad_normalisation() -> None:
    assert normalize_answer("The  Berlin Marathon!") == "berlin marathon"
    assert exact_match("berlin marathon", "the Berlin marathon")
    assert exact_match("NYC", ["New York", "nyc"])
    assert not exact_match("Berlin", "the Berlin marathon")


def test_multi_objective_score_counts_positionally_correct_answers() -> None:
    golds = ["Miso", "the Berlin marathon"]
    assert multi_em("Miso; Berlin marathon", golds) == 2
    assert multi_em("a Miso ;Berlin", golds) == 1
    assert multi_em("Berlin marathon; Miso", golds) == 0
    assert multi_em("Miso", golds) == 1
    assert multi_em("Miso; Berlin marathon; extra", golds) == 2
    assert multi_em("Miso; Berlin marathon; extra", golds, strict=True) == 0


# ---- stitched-trajectory masks -----------------------------------------------------------------


def test_mask_of_two_turns_is_plain_causal() -> None:
    # q=2, t0=1, r0=1, i0=1, t1=1, r1=1: turn 1's prompt held everything before it
    masks = build_masks(2, [(1, 1, 1), (1, 1, 0)])
    assert masks.attention.astype(int).tolist() == np.tril(np.ones((7, 7), dtype=int)).tolist()
    assert masks.loss.astype(int).tolist() == [0, 0, 1, 1, 0, 1, 1]
    assert masks.position_ids.tolist() == list(range(7))


def test_mask_of_three_turns_hides_what_turn_two_never_saw() -> None:
    # tokens: q q | t0 r0 i0 | t1 t1 r1 i1 | t2 r2
    masks = build_masks(2, [(1, 1, 1), (2, 1, 1), (1, 1, 0)])
    expected = [
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # q
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # q
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # t0: q
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # r0: q t0
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # i0: q t0 r0
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # t1: q t0 r0 i0
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # t1 (2nd token): causal within t1
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # r1: q t0 r0 i0 t1
        [1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0],  # i1: q t1 r1 (turn 2's prompt)
        [1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0],  # t2: q t1 r1 i1, not turn 0
        [1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1],  # r2: q t1 r1 i1 t2
    ]
    assert masks.attention.astype(int).tolist() == expected
    assert masks.loss.astype(int).tolist() == [0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    assert masks.position_ids.tolist() == list(range(11))
    assert masks.segments[-3:] == (("t", 2, 9, 10), ("r", 2, 10, 11), ("i", 2, 11, 11))
    with pytest.raises(UserError):
        build_masks(2, [(1, -1, 0)])


# ---- environment -------------------------------------------------------------------------------


def test_qa_env_searches_with_bm25_and_scores_the_answer() -> None:
    env = qa_env()
    assert env.reset() == "Question 1: What is Ana's kitten called?\nQuestion 2: Which marathon did Ben sign up for?"
    observation, done, info = env.step(Action("search", "grey kitten"))
    # both words in Pets; then "kitten" alone, the shortest text first; Naps and Toys tie and keep their order
    assert observation == (
        "Doc 1(Title: Pets) Ana adopted a grey kitten called Miso.\n"
        "Doc 2(Title: Vet) The kitten saw the vet.\n"
        "Doc 3(Title: Naps) The kitten sleeps on the keyboard all afternoon while Ana works.\n"
    )
    assert (done, info) == (False, {"query": "grey kitten", "doc_ids": ["d1", "d3", "d2"]})
    assert env.step(Action("search", "zebra")) == ("", False, {"query": "zebra", "doc_ids": []})
    _, done, info = env.step(Action("answer", "Miso; Boston"))
    assert (done, info["reward"], info["answers"]) == (True, 1, ["Miso", "Boston"])
    with pytest.raises(UserError, match="episode is over"):
        env.step(Action("search", "kitten"))
    env.reset()
    assert env.num_searches == 0


LOCOMO = {
    "sample_id": "tiny-1",
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a grey kitten called Miso."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Lovely! How old is she?"},
        ],
        "session_2_date_time": "10:00 am on 2 June, 2023",
        "session_2": [
            {"speaker": "Ben", "dia_id": "D2:1", "text": "I signed up for the Berlin marathon."},
            {"speaker": "Ana", "dia_id": "D2:2", "text": "How far do you run each week?"},
        ],
    },
    "qa": [
        {"question": "What is Ana's kitten called?", "answer": "Miso", "evidence": ["D1:1"], "category": 4},
        {"question": "Is Ben scared?", "adversarial_answer": "yes", "evidence": [], "category": 5},
        {"question": "Which marathon did Ben sign up for?", "answer": "Berlin", "evidence": ["D2:1"], "category": 1},
        {"question": "When did Ben sign up?", "answer": 2023, "evidence": ["D2:1"], "category": 2},
    ],
}


def test_qa_env_from_a_locomo_file(tmp_path: Path) -> None:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([LOCOMO]))
    env = MultiObjectiveQA.from_locomo(path, objectives=2, start=1)
    assert env.questions == ["Which marathon did Ben sign up for?", "When did Ben sign up?"]
    assert env.answers == ["Berlin", "2023"]
    assert [(d.id, d.title) for d in env.documents[1:3]] == [
        ("D1:2", "D1:2, 8 May 2023"),
        ("D2:1", "D2:1, 2 June 2023"),
    ]
    observation, _, _ = env.step(Action("search", "Berlin marathon"))
    assert observation.splitlines()[0] == "Doc 1(Title: D2:1, 2 June 2023) Ben: I signed up for the Berlin marathon."
    with pytest.raises(UserError, match="3 answerable questions"):
        MultiObjectiveQA.from_locomo(path, objectives=3, start=1)
    with pytest.raises(UserError, match="no sample with sample_id"):
        MultiObjectiveQA.from_locomo(path, sample="other")


# ---- kernel and plugin -------------------------------------------------------------------------


def test_session_agent_runs_mem1_and_keeps_the_trajectory(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    llm = ScriptedLLM([SCRIPT[0], SCRIPT[1], SCRIPT[3]])
    episode = alice.agent("mem1", env=qa_env(), llm=llm, namespace=("alice", "agent"))
    assert (episode.stop, episode.reward, len(llm.calls)) == ("answer", 2.0, 3)
    assert episode.turns[0].prompt_tokens == count_tokens(episode.task, mos.tokenizer)
    [cube] = alice.list(("alice", "agent"), level=None)
    assert cube.header.labels == {"type": "trajectory", "policy": "mem1", "reward": "2", "turns": "3", "stop": "answer"}
    assert cube.text.startswith("Question 1: What is Ana's kitten called?")
    assert "turn 2: <think>Kitten: Miso. Need the marathon.</think>\n<search>Ben marathon</search>" in cube.text
    assert cube.text.endswith("answers: Miso; Berlin marathon\nreward: 2 (ended by answer)")
    assert "Doc 1(" not in cube.text
    with pytest.raises(PermissionDenied):
        mos.as_user("bob").agent(env=qa_env(), llm=ScriptedLLM(), namespace=("alice", "agent"))


def test_session_agent_uses_the_kernels_llm(tmp_path: Path, clock: ManualClock) -> None:
    llm = ScriptedLLM(["<think>x</think><answer>Miso; Berlin marathon</answer>"])
    with MemOS.open(tmp_path / "home", embedder="hash", clock=clock, llm=llm, auto_paging=False) as mos:
        episode = mos.as_user("alice").agent(env=qa_env(), format="think", max_turns=3)
    assert (episode.reward, len(llm.calls)) == (2.0, 1)


def test_session_agent_needs_a_known_policy_and_an_llm(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    with pytest.raises(UserError, match="unknown agent policy 'react'"):
        alice.agent("react", env=qa_env(), llm=ScriptedLLM())
    with pytest.raises(UserError, match="MEM1 needs an LLM"):
        alice.agent(env=qa_env())


def test_plugin_registers_the_agent_factory(mos: MemOS) -> None:
    registered: dict[str, object] = {}
    memos_register_agents(lambda name, obj: registered.__setitem__(name, obj))
    assert registered == {"mem1": make_agent}
    agent = make_agent(mos.as_user("alice"), env=qa_env(), llm=ScriptedLLM(), format="paper", max_turns=4)
    assert (agent.format, agent.max_turns, agent.tokenizer) == ("paper", 4, mos.tokenizer)
