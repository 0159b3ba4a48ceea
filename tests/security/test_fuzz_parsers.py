"""Hostile-input fuzzing of the text parsers: tool-call arguments, Mem-α's ✿ calls, MEM1 turns, G-Memory rule ops,
and a home's memos.toml. Any input gives a valid result or one clear UserError line; never another exception,
never a hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_support import FUZZ, NASTY_STRINGS, Count, json_texts, json_values, mutated, outcome

from memos.config import CONFIG_FILE, MAX_CONFIG_BYTES, Settings
from memos.errors import UserError
from memos.llm.base import Completion, ToolCall
from memos.plugins.gmemory.insights import (
    MAX_OPS,
    InsightStore,
    ParsedOps,
    parse_numbered_rules,
    parse_rule_ops,
    rule_problem,
)
from memos.policies.mem1.format import (
    close_stopped_action,
    parse_observation,
    parse_turn,
    split_answers,
)
from memos.policies.mem_alpha.parse import (
    ARGS_MARK,
    FUNCTION_MARK,
    RESULT_MARK,
    RETURN_MARK,
    calls_from_completion,
    parse_text_calls,
)

#: seconds a parser may take on a pathological input of a few hundred kilobytes (quadratic work takes minutes)
FAST = 3.0


def _fragments(pieces: st.SearchStrategy[str], max_size: int = 24) -> st.SearchStrategy[str]:
    """Text glued together from parser-relevant fragments and arbitrary characters."""
    return st.lists(pieces | st.text(max_size=6), max_size=max_size).map("".join)


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _run(check: Callable[[], None], count: Count, record_property: Callable[[str, object], None]) -> None:
    """Run a hypothesis property, then require that it really ran examples (and record how many)."""
    check()
    record_property("examples", count.passed)
    assert count.passed >= 50


# ---- OpenAI tool-call arguments --------------------------------------------------------------------


def test_tool_call_parse_never_raises(record_property: Callable[[str, object], None]) -> None:
    count = Count()

    @FUZZ
    @given(raw=st.none() | json_texts() | json_values.map(lambda v: json.dumps({"a": v})), ident=st.text(max_size=10))
    def check(raw: str | None, ident: str) -> None:
        call = ToolCall.parse(ident, "search", raw)
        assert isinstance(call, ToolCall)
        if call.valid:
            assert isinstance(call.arguments, dict)
            json.dumps(call.arguments)
        else:
            assert call.error and "\n" not in call.error and call.arguments == {}
        assert call.to_openai()["function"]["arguments"] == call.raw_arguments
        count.ok()

    _run(check, count, record_property)


@pytest.mark.parametrize("raw", ["[" * 200_000, '{"a":' * 200_000, "1" * 200_000, '{"n": ' + "7" * 100_000 + "}"])
def test_tool_call_parse_refuses_pathological_json_quickly(raw: str) -> None:
    elapsed = _timed(lambda: ToolCall.parse("c1", "f", raw))
    call = ToolCall.parse("c1", "f", raw)
    assert not call.valid and call.error and "\n" not in call.error
    assert elapsed < FAST


# ---- Mem-α's ✿FUNCTION✿ / ✿ARGS✿ text ----------------------------------------------------------------

_ALPHA_PIECES = st.sampled_from(
    (
        FUNCTION_MARK,
        f"{FUNCTION_MARK}: ",
        ARGS_MARK,
        f"{ARGS_MARK}: ",
        RESULT_MARK,
        RETURN_MARK,
        "new_memory_insert",
        "memory_update",
        "\n",
        ":",
        "{",
        "}",
        '"',
        '{"memory_type": "semantic_memory", "content": "x"}',
        "✿",
        *NASTY_STRINGS,
    )
)


def test_mem_alpha_text_calls_never_raise(record_property: Callable[[str, object], None]) -> None:
    count = Count()

    @FUZZ
    @given(text=_fragments(_ALPHA_PIECES) | mutated(_fragments(_ALPHA_PIECES)), raw=st.none() | json_texts())
    def check(text: str, raw: str | None) -> None:
        calls = parse_text_calls(text)
        assert len(calls) <= text.count(FUNCTION_MARK)
        for call in calls:
            assert isinstance(call.name, str) and "\n" not in call.name
            if call.error is None:
                assert isinstance(call.arguments, dict)
            else:
                assert call.arguments == {} and "\n" not in call.error
        completion = Completion(text=text, tool_calls=[ToolCall.parse("c1", "memory_update", raw)])
        assert len(calls_from_completion(completion)) == len(calls) + 1
        count.ok()

    _run(check, count, record_property)


def test_mem_alpha_pathological_replies_parse_quickly() -> None:
    many_calls = f"{FUNCTION_MARK}: f\n{ARGS_MARK}: {{" * 20_000
    deep_args = f"{FUNCTION_MARK}: f\n{ARGS_MARK}: " + "[" * 200_000
    huge_number = f"{FUNCTION_MARK}: f\n{ARGS_MARK}: " + '{"n": ' + "9" * 50_000 + "}"
    for text in (many_calls, deep_args, huge_number):
        assert _timed(lambda t=text: parse_text_calls(t)) < FAST
        assert all(call.error for call in parse_text_calls(text))


# ---- MEM1's <think>/<IS> turns and <information> blocks ---------------------------------------------


def _mem1_pieces(fmt: str) -> st.SearchStrategy[str]:
    names = ("think", "search", "answer", "information") if fmt == "think" else ("IS", "query", "answer", "info")
    tags = [f"<{n}>" for n in names] + [f"</{n}>" for n in names]
    return st.sampled_from(
        (
            *tags,
            *(t.upper() for t in tags),
            "[HINT]You have 3 turns left.[/HINT]",
            "[HINT]You have " + "9" * 5000 + " turns left.[/HINT]",
            "[HINT]You have 1 turn left",
            "\nDoc 1(Title: t) text\n",
            "Doc 2(Title: ",
            "a; b",
            ";",
            "\n",
            " ",
            "<",
            ">",
            *NASTY_STRINGS[:12],
        )
    )


@pytest.mark.parametrize("fmt", ["think", "paper"])
def test_mem1_turns_parse_or_come_back_invalid(fmt: str, record_property: Callable[[str, object], None]) -> None:
    count = Count()
    pieces = _mem1_pieces(fmt)

    @FUZZ
    @given(text=_fragments(pieces, 30) | mutated(_fragments(pieces, 30)))
    def check(text: str) -> None:
        turn = parse_turn(text, fmt)
        assert turn.raw == text
        if turn.valid:
            assert turn.problem is None and turn.state is not None and turn.content
            assert turn.action in ("search", "answer")
            assert turn.answers == (split_answers(turn.content) if turn.action == "answer" else [])
        else:
            assert turn.problem and "\n" not in turn.problem
        observed = parse_observation(text, fmt)
        assert observed.turns_left is None or observed.turns_left >= 0
        assert isinstance(close_stopped_action(text, fmt), str)
        count.ok()

    _run(check, count, record_property)


def test_mem1_rejects_what_is_not_text() -> None:
    for value in (None, 3, b"<think>x</think>", ["<think>"]):
        assert parse_turn(value).valid is False  # type: ignore[arg-type]
        assert parse_observation(value).valid is False  # type: ignore[arg-type]
        outcome(close_stopped_action, value)  # type: ignore[arg-type]
    with pytest.raises(UserError):
        parse_turn("<think>x</think><search>q</search>", "xml")


@pytest.mark.parametrize(
    "text",
    [
        "</think>" * 20_000 + "<think>" * 20_000 + "<search>q</search>",
        "</search>" * 20_000 + "<search>" * 20_000,
        "<information>" + "[HINT] You have 1 turns left " * 20_000 + "</information>",
        "<information>" + "[HINT]You have " + "9" * 50_000 + " turns left.[/HINT]</information>",
    ],
)
def test_mem1_pathological_turns_parse_quickly(text: str) -> None:
    assert _timed(lambda: (parse_turn(text), parse_observation(text))) < FAST
    assert parse_turn(text).valid is False or parse_turn(text).state is not None


# ---- G-Memory's rule operations ----------------------------------------------------------------------

_RULE_PIECES = st.sampled_from(
    (
        "ADD",
        "AGREE",
        "EDIT",
        "REMOVE",
        "add",
        " 1",
        " 0",
        " -1",
        " " + "9" * 5000,
        "AGREE " + "9" * 5000 + ": X, because Y.",
        " ٣",
        ":",
        ": ",
        "- ",
        "* ",
        "X, because Y.",
        ", because ",
        ".",
        "\n",
        "\r",
        "\u2028",
        "1. ",
        *NASTY_STRINGS[:12],
    )
)


def test_gmemory_rule_ops_parse_and_apply(record_property: Callable[[str, object], None]) -> None:
    count = Count()

    @FUZZ
    @given(text=_fragments(_RULE_PIECES, 30) | mutated(_fragments(_RULE_PIECES, 30)), shown=st.integers(0, 6))
    def check(text: str, shown: int) -> None:
        parsed = parse_rule_ops(text)
        assert isinstance(parsed, ParsedOps) and len(parsed.ops) <= MAX_OPS
        for op in parsed.ops:
            assert rule_problem(op.text) is None
            assert op.number is None if op.op == "ADD" else op.number >= 1
        assert all(why and "\n" not in why for _, why in parsed.rejected)
        store = InsightStore()
        ids = [store.new_rule(f"Rule {i} holds, because reason {i}.", ["t0"]).id for i in range(shown)]
        report = store.apply(parsed.ops, ids, ["t1"])
        assert len(report.applied) + len(report.rejected) == len(parsed.ops)
        assert all(rule.score > 0 for rule in store.rules)
        rules, rejected = parse_numbered_rules(text)
        assert all(rule_problem(rule) is None for rule in rules)
        assert len(rules) + len(rejected) <= len(text.splitlines())
        count.ok()

    _run(check, count, record_property)


def test_gmemory_rule_number_of_thousands_of_digits_is_rejected() -> None:
    parsed = parse_rule_ops("AGREE " + "9" * 5000 + ": X, because Y.\nADD: Z, because W.")
    assert [op.op for op in parsed.ops] == ["ADD"]
    assert "far too large" in parsed.rejected[0][1]


def test_gmemory_state_is_rebuilt_or_refused(record_property: Callable[[str, object], None]) -> None:
    count = Count()
    good = InsightStore()
    good.new_rule("Rule holds, because reason.", ["t1"])
    rule_keys = st.sampled_from(("id", "rule", "score", "positive_tasks", "negative_tasks", "x"))
    rule_like = st.dictionaries(rule_keys, json_values, max_size=5)

    @FUZZ
    @given(
        data=json_values
        | st.fixed_dictionaries(
            {"rules": st.lists(rule_like, max_size=3) | json_values}, optional={"next_id": json_values}
        )
        | st.just(good.to_dict())
    )
    def check(data: object) -> None:
        result = outcome(InsightStore.from_dict, data)  # type: ignore[arg-type]
        if isinstance(result, InsightStore):
            assert InsightStore.from_dict(result.to_dict()) == result
            assert all(isinstance(r.rule, str) and isinstance(r.score, int) for r in result.rules)
        count.ok()

    _run(check, count, record_property)


# ---- a home's memos.toml ----------------------------------------------------------------------------

_TOML_PIECES = st.sampled_from(
    (
        "max_text_chars",
        "embed_batch_size",
        "paging",
        "log_level",
        "auto_paging",
        "home",
        "catalog_url",
        "unknown_key",
        '"quoted\\nkey"',
        " = ",
        "=",
        "1",
        "-1",
        "9" * 5000,
        "1e999",
        "nan",
        "true",
        '"text"',
        '"\\u0000"',
        '"\\ud800"',
        "'''",
        '"""',
        "1979-05-27T07:32:00Z",
        "[",
        "]",
        "[paging]",
        "[[x]]",
        "{",
        "}",
        "theta = 0.5",
        ",",
        "\n",
        "#",
        "\r",
        "[" * 5000,
        "{a = " * 3000,
    )
)


def test_config_file_loads_or_is_refused(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    count = Count()
    home = tmp_path / "home"
    home.mkdir()

    @FUZZ
    @given(
        body=_fragments(_TOML_PIECES, 20).map(str.encode)
        | mutated(_fragments(_TOML_PIECES, 20)).map(lambda t: t.encode("utf-8", "surrogatepass"))
        | st.binary(max_size=80)
    )
    def check(body: bytes) -> None:
        (home / CONFIG_FILE).write_bytes(body)
        result = outcome(Settings.load, home, embedder="hash")
        if isinstance(result, Settings):
            assert result.home == home.resolve() and result.max_text_chars >= 1
        count.ok()

    _run(check, count, record_property)


def test_oversized_config_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # a sparse file: reading it whole would take gigabytes of memory
    with open(home / CONFIG_FILE, "wb") as handle:
        handle.truncate(4 << 30)
    elapsed = _timed(lambda: outcome(Settings.load, home))
    error = outcome(Settings.load, home)
    assert isinstance(error, UserError) and str(MAX_CONFIG_BYTES) in str(error)
    assert elapsed < FAST
