"""Mem-α: memory regions, tool calls (✿ text and OpenAI), the chunk loop on a real home, reward and RL env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memos import MemOS
from memos.cube import Status
from memos.embed import HashingEmbedder
from memos.errors import UserError
from memos.llm.base import Completion, ToolCall
from memos.llm.testing import FunctionLLM, ScriptedLLM
from memos.policies.mem_alpha import (
    TRUNCATION_MARKER,
    Instance,
    KernelBackend,
    MemAlphaEnv,
    MemAlphaPolicy,
    MemoryBackend,
    MemoryState,
    ParsedCall,
    ScratchBackend,
    calls_from_completion,
    compute_reward,
    heuristic_type_judge,
    load_instances,
    normalize_answer,
    parse_text_calls,
    run_call,
    run_calls,
    run_episode,
    substring_score,
)
from memos.policies.mem_alpha.plugin import memos_register_policies
from memos.policies.mem_alpha.prompt import chunk_messages, system_prompt, user_prompt
from memos.policy import Observation, OpKind, apply_ops

NS = ("alice", "notes")


def fn(name: str, **args: str) -> str:
    """One call in the released model's text format."""
    return f"✿FUNCTION✿: {name}\n✿ARGS✿: {json.dumps(args)}\n"


def insert(memory_type: str, content: str) -> ParsedCall:
    return ParsedCall("new_memory_insert", {"memory_type": memory_type, "content": content})


def update(memory_type: str, memory_id: str, new_content: str) -> ParsedCall:
    return ParsedCall("memory_update", {"memory_type": memory_type, "memory_id": memory_id, "new_content": new_content})


# ---- memory regions ------------------------------------------------------------------------------


def test_core_longer_than_512_tokens_is_truncated_with_a_visible_marker() -> None:
    state = MemoryState()
    result = run_call(state, ParsedCall("memory_update", {"memory_type": "core_memory", "new_content": "word " * 600}))
    assert result.ok
    assert result.message == "[memory_update ok] core memory rewritten, truncated to 512 tokens"
    # "word" and " word" are one token each, the marker four: 508 words survive
    assert state.core == "word" + " word" * 507 + TRUNCATION_MARKER
    assert state.tokenizer.count(state.core) == 512

    exact = "word" + " word" * 511
    assert not state.set_core(exact)
    assert state.core == exact


def test_duplicate_insert_is_skipped_and_counted_as_unsuccessful() -> None:
    state = MemoryState()
    calls = [
        insert("semantic_memory", "Bob likes green tea."),
        insert("semantic_memory", "Bob likes green tea."),
        insert("episodic_memory", "Bob likes green tea."),
    ]
    stats = run_calls(state, calls, index=0, chunk_tokens=10)
    assert (stats.num_calls, stats.num_ok, stats.num_failed) == (3, 2, 1)
    assert stats.calls[1].message == (
        "[new_memory_insert failed] semantic_memory already holds exactly this text; nothing inserted"
    )
    assert [e.text for e in state.entries("semantic")] == ["Bob likes green tea."]
    assert [e.short_id for e in state.entries("episodic")] == ["e1d8"]
    assert stats.memory_tokens == 10


def test_bm25_search_ranks_items_sharing_the_query_words() -> None:
    state = MemoryState()
    for text in ["Bob likes green tea.", "Paris is the capital of France.", "Bob likes tea."]:
        state.insert("semantic", text)
    assert [e.text for e in state.search("semantic", "green tea")] == ["Bob likes green tea.", "Bob likes tea."]
    assert state.search("semantic", "Berlin") == []
    result = run_call(state, ParsedCall("search_memory", {"memory_type": "semantic_memory", "query": "capital"}))
    assert result.message == "[search_memory ok]\n[cede] Paris is the capital of France."


def test_scratch_embedding_search_uses_the_embedder_and_falls_back_to_bm25_without_one() -> None:
    texts = ["Paris is the capital of France.", "Bob likes green tea."]
    with_embedder = ScratchBackend(embedder=HashingEmbedder()).load()
    without = MemoryState()
    for state in (with_embedder, without):
        for text in texts:
            state.insert("semantic", text)
    assert [e.short_id for e in with_embedder.search("semantic", "green tea", "text-embedding")] == ["e1d8", "cede"]
    assert [e.short_id for e in without.search("semantic", "green tea", "text-embedding")] == ["e1d8"]


def test_render_shows_blocks_with_ids_and_cuts_lists_to_the_newest_items() -> None:
    state = MemoryState()
    state.set_core("Bob lives in Paris.")
    state.insert("semantic", "Bob likes green tea.")
    state.insert("semantic", "Bob likes tea.")
    assert state.render(1) == (
        "<core_memory>\nBob lives in Paris.\n</core_memory>\n"
        "<semantic_memory>\n(1 older items not shown)\n[d135] Bob likes tea.\n</semantic_memory>\n"
        "<episodic_memory>\n(empty)\n</episodic_memory>"
    )


# ---- parsing tool calls ----------------------------------------------------------------------------


def test_text_parser_reads_several_calls_and_stops_at_result() -> None:
    reply = (
        "I will store this.\n"
        + fn("new_memory_insert", memory_type="semantic_memory", content="Bob likes green tea.")
        + fn("memory_update", memory_type="core_memory", new_content="Bob lives in Paris.")
        + '✿FUNCTION✿: memory_delete\n✿ARGS✿: {"memory_type": "semantic_memory", "memory_id": \n'
        + fn("forget_everything", memory_type="core_memory")
        + "✿FUNCTION✿: new_memory_insert\n"
        + "✿RESULT✿: ok\n"
        + fn("new_memory_insert", memory_type="semantic_memory", content="never read")
    )
    calls = parse_text_calls(reply)
    assert [c.name for c in calls] == [
        "new_memory_insert",
        "memory_update",
        "memory_delete",
        "forget_everything",
        "new_memory_insert",
    ]
    assert calls[0] == insert("semantic_memory", "Bob likes green tea.")
    assert calls[2].error is not None and calls[2].error.startswith("arguments are not valid JSON")
    assert calls[4].error == "no ✿ARGS✿ line after the function name"

    state = MemoryState()
    stats = run_calls(state, calls, index=3, chunk_tokens=40)
    assert (stats.num_calls, stats.num_ok, stats.num_failed) == (5, 2, 3)
    assert stats.calls[3].message == (
        "[forget_everything failed] unknown tool; use new_memory_insert, memory_update, memory_delete, search_memory"
    )
    assert state.core == "Bob lives in Paris."
    assert stats.writes() == [("semantic", "Bob likes green tea."), ("core", "Bob lives in Paris.")]


def test_wrong_arguments_fail_without_raising() -> None:
    state = MemoryState()
    state.insert("semantic", "Bob likes tea.")
    calls = [
        insert("procedural_memory", "x"),
        ParsedCall("new_memory_insert", {"memory_type": "semantic_memory"}),
        ParsedCall("new_memory_insert", {"memory_type": "semantic_memory", "content": "x", "tags": "y"}),
        ParsedCall("new_memory_insert", {"memory_type": "semantic_memory", "content": 7}),
        insert("core_memory", "x"),
        ParsedCall("memory_update", {"memory_type": "semantic_memory", "new_content": "x", "memory_id": "ffff"}),
        ParsedCall("memory_delete", {"memory_type": "episodic_memory"}),
        ParsedCall("search_memory", {"memory_type": "semantic", "query": "tea", "search_method": "grep"}),
        ParsedCall("memory_delete", {"memory_type": "semantic", "memory_id": "[d135]"}),
    ]
    stats = run_calls(state, calls, index=0, chunk_tokens=5)
    assert [c.ok for c in stats.calls] == [False] * 8 + [True]
    assert [c.message for c in stats.calls[:4]] == [
        "[new_memory_insert failed] memory_type 'procedural_memory' is not core_memory, semantic_memory or "
        "episodic_memory",
        "[new_memory_insert failed] missing arguments content",
        "[new_memory_insert failed] unexpected arguments tags; new_memory_insert takes memory_type, content",
        "[new_memory_insert failed] content must be a string, not int",
    ]
    assert state.entries("semantic") == []


def test_openai_tool_calls_are_read_and_bad_json_counts_as_failed() -> None:
    completion = Completion(
        tool_calls=[
            ToolCall.parse("c1", "new_memory_insert", '{"memory_type": "episodic_memory", "content": "At 9am, X."}'),
            ToolCall.parse("c2", "memory_update", '{"memory_type": "core_memory", "new_content": '),
            ToolCall.parse("c3", "memory_delete", '["semantic_memory"]'),
        ],
        finish_reason="tool_calls",
    )
    calls = calls_from_completion(completion)
    assert calls[0] == insert("episodic_memory", "At 9am, X.")
    assert calls[2].error == "arguments must be a JSON object, got list"
    stats = run_calls(MemoryState(), calls, index=0, chunk_tokens=5)
    assert (stats.num_calls, stats.num_ok, stats.num_failed) == (3, 1, 2)


# ---- the policy on a real home -------------------------------------------------------------------


def test_chunk_loop_writes_region_cubes_as_the_user_and_edits_them_by_short_id(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    first = (
        fn("memory_update", memory_type="core_memory", new_content="Bob lives in Paris.")
        + fn("new_memory_insert", memory_type="semantic_memory", content="Bob likes green tea.")
        + fn("new_memory_insert", memory_type="episodic_memory", content="On Monday, Alice visited Bob.")
        + "✿RESULT✿:"
    )
    second = Completion(
        tool_calls=[
            ToolCall(
                id="a",
                name="memory_update",
                arguments={"memory_type": "semantic_memory", "memory_id": "e1d8", "new_content": "Bob likes tea."},
            ),
            ToolCall(id="b", name="memory_delete", arguments={"memory_type": "episodic_memory", "memory_id": "d68e"}),
            ToolCall(id="c", name="memory_delete", arguments={"memory_type": "episodic_memory", "memory_id": "0000"}),
        ]
    )
    llm = ScriptedLLM([first, second])
    policy = MemAlphaPolicy(llm)

    ops = policy.observe(alice, NS, Observation("Bob, who lives in Paris, likes green tea. Alice came Monday."))
    assert [(op.kind, op.region, op.text) for op in ops] == [
        (OpKind.insert, "core", "Bob lives in Paris."),
        (OpKind.insert, "semantic", "Bob likes green tea."),
        (OpKind.insert, "episodic", "On Monday, Alice visited Bob."),
    ]
    results = apply_ops(alice, NS, ops, policy=policy.name)
    assert all(r.ok for r in results)
    cubes = alice.list(NS)
    assert [(c.text, c.header.labels) for c in cubes] == [
        ("Bob lives in Paris.", {"policy": "mem-alpha", "region": "core"}),
        ("Bob likes green tea.", {"policy": "mem-alpha", "region": "semantic", "item": "e1d8"}),
        ("On Monday, Alice visited Bob.", {"policy": "mem-alpha", "region": "episodic", "item": "d68e"}),
    ]
    assert [(e["action"], e["actor"]) for e in alice.audit(cubes[1].id)] == [("write", "alice")]

    ops = policy.observe(alice, NS, Observation("Bob switched to plain tea; forget Monday.", index=1))
    # the second prompt shows the stored memory with the ids the model then used
    system = llm.calls[1].messages[0].content
    assert "[e1d8] Bob likes green tea.\n" in system and "[d68e] On Monday, Alice visited Bob.\n" in system
    assert [t.name for t in llm.calls[1].tools] == ["new_memory_insert", "memory_update", "memory_delete"]
    assert [(op.kind, op.cube_id) for op in ops] == [(OpKind.update, cubes[1].id), (OpKind.delete, cubes[2].id)]
    assert all(r.ok for r in apply_ops(alice, NS, ops, policy=policy.name))

    assert [c.text for c in alice.list(NS)] == ["Bob lives in Paris.", "Bob likes tea."]
    assert alice.get(cubes[2].id).status == Status.deleted
    assert [(e["action"], e["actor"]) for e in alice.audit(cubes[1].id)] == [("update", "alice"), ("write", "alice")]
    assert [(e["action"], e["actor"]) for e in alice.audit(cubes[2].id)] == [("forget", "alice"), ("write", "alice")]
    assert [(s.num_calls, s.num_ok, s.num_failed) for s in policy.stats] == [(3, 3, 0), (3, 2, 1)]
    assert policy.stats[1].memory_tokens == 5 + 4
    assert policy.totals == {"num_chunks": 2, "num_calls": 6, "num_ok": 5, "num_failed": 1}


def test_text_tool_format_describes_the_tools_in_the_prompt_and_stops_at_result(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    llm = FunctionLLM(lambda messages, tools: fn("new_memory_insert", memory_type="semantic_memory", content="X."))
    ops = MemAlphaPolicy(llm, tool_format="text").observe(alice, NS, Observation("X.", speaker="Bob"))
    call = llm.calls[0]
    assert call.tools == []
    assert call.kwargs["stop"] == ["✿RESULT✿:"]
    assert "✿FUNCTION✿: the tool's name, one of [new_memory_insert, memory_update, memory_delete]" in (
        call.messages[0].content
    )
    assert call.messages[1].content.endswith("<new_chunk>\nBob: X.\n</new_chunk>")
    assert [(op.kind, op.region, op.text) for op in ops] == [(OpKind.insert, "semantic", "X.")]


def test_without_an_llm_observe_says_to_set_memos_llm_and_the_plugin_registers_a_no_argument_factory(
    mos: MemOS,
) -> None:
    registered: dict[str, object] = {}
    memos_register_policies(registered.__setitem__)
    assert registered == {"mem-alpha": MemAlphaPolicy}
    policy = MemAlphaPolicy()
    with pytest.raises(UserError, match="MEMOS_LLM"):
        policy.observe(mos.as_user("alice"), NS, Observation("anything"))


def test_rendering_is_identical_over_kernel_cubes_and_in_memory(mos: MemOS) -> None:
    rounds = [
        [
            ParsedCall("memory_update", {"memory_type": "core_memory", "new_content": "Bob lives in Paris."}),
            insert("semantic_memory", "Bob likes green tea."),
            insert("semantic_memory", "Paris is the capital of France."),
            insert("episodic_memory", "At 9am on Monday, Alice called Bob."),
            insert("episodic_memory", "On Monday, Alice visited Bob."),
        ],
        [
            update("semantic", "e1d8", "Bob likes tea."),
            ParsedCall("memory_delete", {"memory_type": "episodic", "memory_id": "22a7"}),
            insert("semantic_memory", "Alice prefers coffee."),
            update("semantic", "c300", "Alice: coffee."),
            ParsedCall("memory_update", {"memory_type": "core_memory", "new_content": "Bob and Alice, Paris."}),
        ],
    ]
    kernel = KernelBackend(mos.as_user("alice"), NS)
    scratch = ScratchBackend()
    assert isinstance(kernel, MemoryBackend) and isinstance(scratch, MemoryBackend)
    for calls in rounds:
        for backend in (kernel, scratch):
            state = backend.load()
            assert all(r.ok for r in run_calls(state, calls, index=0, chunk_tokens=1).calls)
            backend.save(state)
    expected = (
        "<core_memory>\nBob and Alice, Paris.\n</core_memory>\n"
        "<semantic_memory>\n[e1d8] Bob likes tea.\n[cede] Paris is the capital of France.\n"
        "[c300] Alice: coffee.\n</semantic_memory>\n"
        "<episodic_memory>\n[d68e] On Monday, Alice visited Bob.\n</episodic_memory>"
    )
    assert scratch.load().render() == expected
    assert kernel.load().render() == expected
    assert len(mos.as_user("alice").list(NS)) == 5


def test_text_embedding_search_goes_through_the_kernel_recall_of_the_region(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    alice.write(NS, "Bob likes green tea, not a Mem-α memory.")
    kernel = KernelBackend(alice, NS)
    state = kernel.load()
    run_calls(
        state,
        [insert("semantic_memory", "Bob likes green tea."), insert("semantic_memory", "Paris is in France.")],
        index=0,
        chunk_tokens=1,
    )
    kernel.save(state)
    state = kernel.load()
    hits = state.search("semantic", "green tea", "text-embedding")
    assert [(e.short_id, e.text) for e in hits] == [("e1d8", "Bob likes green tea."), ("2034", "Paris is in France.")]


# ---- prompt ----------------------------------------------------------------------------------------


def test_recent_items_are_halved_until_the_prompt_fits() -> None:
    state = MemoryState()
    for i in range(6):
        state.insert("semantic", f"Fact number {i} about the world.")
    chunk = "A new chunk."
    user_tokens = state.tokenizer.count(user_prompt(chunk))
    limit = state.tokenizer.count(system_prompt(state, 2)) + user_tokens
    assert state.tokenizer.count(system_prompt(state, 5)) + user_tokens > limit
    messages = chunk_messages(state, chunk, max_prompt_tokens=limit)
    assert messages[0].content == system_prompt(state, 2)
    assert "(4 older items not shown)" in messages[0].content
    assert chunk_messages(state, chunk, max_prompt_tokens=1)[0].content == system_prompt(state, 0)


# ---- reward ----------------------------------------------------------------------------------------


def test_squad_normalisation_and_substring_match() -> None:
    assert normalize_answer("  The Eiffel-Tower, in  Paris! ") == "eiffeltower in paris"
    assert substring_score("It is the Eiffel Tower.", "eiffel tower") == 1.0
    assert substring_score("It is 15.", "5") == 0.0
    assert substring_score("Green tea, mostly.", ["coffee", "green tea"]) == 1.0
    assert substring_score("", "the") == 1.0


def test_heuristic_type_judge() -> None:
    writes = [
        ("episodic", "At 9am, Bob left."),
        ("episodic", "Bob left."),
        ("semantic", "Paris is the capital of France."),
        ("semantic", "Yesterday, Bob bought tea."),
        ("core", "Bob lives in Paris."),
    ]
    assert heuristic_type_judge(writes) == [True, False, True, False, True]


def test_reward_is_qa_plus_tool_success_plus_weighted_compression_and_type_fit() -> None:
    state = MemoryState()
    chunk = "one two three four five six seven eight nine ten"
    assert state.tokenizer.count(chunk) == 10
    calls = [
        insert("semantic_memory", "one two"),  # ok, fits
        insert("episodic_memory", "at ten"),  # ok, no time word: does not fit
        insert("semantic_memory", "one two"),  # duplicate: failed
        ParsedCall("memory_delete", {"memory_type": "semantic_memory", "memory_id": "zzzz"}),  # failed
        ParsedCall("search_memory", {"memory_type": "semantic_memory", "query": "one"}),  # ok, writes nothing
    ]
    stats = run_calls(state, calls, index=0, chunk_tokens=10)
    assert state.num_tokens() == 4
    replies = {"q1": "Answer.", "q2": "It is forty-two.", "q3": "no idea"}
    asked: list[tuple[str, str]] = []

    def answerer(memory: str, question: str) -> str:
        asked.append((memory, question))
        return replies[question]

    reward = compute_reward(
        state, [stats], ["q1", "q2", "q3"], ["The answer", ["x", "Forty-two"], "Paris"], answerer=answerer
    )
    assert asked[0] == (state.render(), "q1")
    assert reward.qa == pytest.approx(2 / 3)
    assert reward.tool_success == pytest.approx(3 / 5)
    assert reward.compression == pytest.approx(1 - 4 / 10)
    assert reward.type_fit == pytest.approx(1 / 2)
    # 2/3 + 0.6 + 0.05 * 0.6 + 0.1 * 0.5
    assert reward.total == pytest.approx(1.3466666667)
    assert reward.chunk_rewards == (pytest.approx(2 / 3 + 0.03 + 0.6 + 0.05),)


# ---- RL environment --------------------------------------------------------------------------------

CHUNKS = [
    "Bob moved to Paris in 2020. He found a small flat near the river and started a new job.",
    "Bob likes green tea. He drinks it every morning before work.",
    "Alice visited Bob on Monday. They walked along the river and talked about old times.",
]
REPLIES = [
    fn("memory_update", memory_type="core_memory", new_content="Bob lives in Paris.")
    + fn("new_memory_insert", memory_type="episodic_memory", content="In 2020, Bob moved to Paris."),
    fn("new_memory_insert", memory_type="semantic_memory", content="Bob likes green tea.")
    + fn("new_memory_insert", memory_type="semantic_memory", content="Yesterday, Bob bought tea.")
    + fn("memory_search", memory_type="semantic_memory", query="tea"),
    fn("new_memory_insert", memory_type="episodic_memory", content="On Monday, Alice visited Bob.")
    + fn("new_memory_insert", memory_type="episodic_memory", content="In 2020, Bob moved to Paris.")
    + "✿RESULT✿: ...",
]
INSTANCE = {
    "chunks": CHUNKS,
    "questions": ["Where did Bob move?", "What does Bob drink?", "Who is Carol?"],
    "answers": ["Paris", ["green tea"], "Bob's sister"],
}


def test_env_reset_step_reward_over_a_three_chunk_instance(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(INSTANCE) + "\n\n" + json.dumps({"chunks": ["x"]}) + "\n")
    instances = load_instances(path)
    assert [len(i.chunks) for i in instances] == [3, 1]
    assert instances[0].answers == ("Paris", ("green tea",), "Bob's sister")

    env = MemAlphaEnv(instances[0], answerer=lambda memory, question: memory)
    messages = env.reset()
    assert [m.role for m in messages] == ["system", "user"]
    assert "<core_memory>\n(empty)\n</core_memory>" in messages[0].content
    assert "✿ARGS✿: the arguments as a JSON object" in messages[0].content
    assert messages[1].content.endswith(f"<new_chunk>\n{CHUNKS[0]}\n</new_chunk>")
    with pytest.raises(UserError, match="after the last chunk"):
        env.reward()

    first = env.step(REPLIES[0])
    assert not first.done and first.messages is not None
    assert "<core_memory>\nBob lives in Paris.\n</core_memory>" in first.messages[0].content
    assert "[83db] In 2020, Bob moved to Paris." in first.messages[0].content
    assert first.messages[1].content.endswith(f"<new_chunk>\n{CHUNKS[1]}\n</new_chunk>")
    assert {k: first.info[k] for k in ("chunk", "num_calls", "num_ok", "num_failed")} == {
        "chunk": 0,
        "num_calls": 2,
        "num_ok": 2,
        "num_failed": 0,
    }
    second = env.step(REPLIES[1])
    assert (second.info["num_calls"], second.info["num_failed"]) == (3, 1)
    last = env.step(REPLIES[2])
    assert last.done and last.messages is None
    assert (last.info["num_calls"], last.info["num_ok"], last.info["memory_tokens"]) == (2, 1, 33)
    with pytest.raises(UserError, match="every chunk"):
        env.step("")

    reward = env.reward()
    assert reward.qa == pytest.approx(2 / 3)
    assert reward.tool_success == pytest.approx(5 / 7)
    # chunks are 23 + 13 + 17 tokens; memory 5 + 10 + 5 + 6 + 7
    assert reward.compression == pytest.approx(1 - 33 / 53)
    assert reward.type_fit == pytest.approx(4 / 5)
    assert reward.total == pytest.approx(2 / 3 + 5 / 7 + 0.05 * 20 / 53 + 0.1 * 0.8)
    base = 2 / 3 + 0.05 * 20 / 53
    assert reward.chunk_rewards == pytest.approx((base + 1 + 0.1, base + 2 / 3 + 0.05, base + 1 / 2 + 0.1))

    # the same episode through run_episode, with the replies as a model would give them
    again = run_episode(MemAlphaEnv(instances[0], answerer=lambda memory, question: memory), REPLIES)
    assert again == reward
    scripted = ScriptedLLM(REPLIES)
    assert run_episode(MemAlphaEnv(instances[0], answerer=lambda m, q: m), scripted) == reward
    assert scripted.calls[2].kwargs["stop"] == ["✿RESULT✿:"]


def test_malformed_instances_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(INSTANCE) + "\n" + json.dumps({"chunks": ["x"], "questions": ["q"]}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: an instance has 1 questions but 0 answers"):
        load_instances(path)
    with pytest.raises(UserError, match="at least one chunk"):
        Instance.from_dict({"chunks": []})
