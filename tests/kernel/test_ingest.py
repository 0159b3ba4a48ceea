"""Conversation parsing: exact WriteRequests per format, LoCoMo dates, and one clear UserError per bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from memos.errors import UserError
from memos.ingest import batched, count_turns, detect_format, iter_requests, parse_locomo_date, scan
from memos.kernel import WriteRequest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"

LOCOMO_SAMPLE: dict[str, Any] = {
    "sample_id": "conv-1",
    "qa": [{"question": "Where did Ana go?", "answer": "Lisbon", "evidence": ["D1:1"], "category": 1}],
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I just got back from Lisbon!"},
            {
                "speaker": "Ben",
                "dia_id": "D1:2",
                "text": "Welcome back!",
                "img_url": ["https://example.invalid/x.jpg"],
                "blip_caption": "a photo of a tram",
                "query": "tram",
            },
        ],
        "session_2": [{"speaker": "Ana", "dia_id": "D2:1", "text": "No date on this one."}],
        # sessions sort by number, not by text: session_10 comes after session_2
        "session_10_date_time": "12:09 am on 13 September, 2023",
        "session_10": [{"speaker": "Ben", "dia_id": "D10:1", "text": "Late night."}],
    },
}


def turn(
    text: str, when: datetime | None, session: str | None, turn_id: str | None, external: str | None, speaker: str
) -> WriteRequest:
    """The WriteRequest ingest should make for one turn."""
    return WriteRequest(
        text=text,
        level="short",
        event_time=when,
        provenance={
            "source": "message",
            "session_id": session,
            "turn_id": turn_id,
            "external_id": external,
            "speaker": speaker,
        },
        labels={"type": "episode"},
    )


def write(path: Path, value: Any) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def error_of(path: Path, fmt: str = "auto", **kwargs: Any) -> str:
    with pytest.raises(UserError) as info:
        list(iter_requests(path, fmt, **kwargs))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_locomo_sample_becomes_exact_requests(tmp_path: Path) -> None:
    path = write(tmp_path / "locomo.json", [LOCOMO_SAMPLE])
    assert list(iter_requests(path, "locomo")) == [
        (
            None,
            turn(
                "Ana: I just got back from Lisbon!",
                datetime(2023, 5, 8, 13, 56, tzinfo=UTC),
                "session_1",
                "D1:1",
                "D1:1",
                "Ana",
            ),
        ),
        (
            None,
            turn(
                "Ben: Welcome back! [shares an image: a photo of a tram]",
                datetime(2023, 5, 8, 13, 56, tzinfo=UTC),
                "session_1",
                "D1:2",
                "D1:2",
                "Ben",
            ),
        ),
        (None, turn("Ana: No date on this one.", None, "session_2", "D2:1", "D2:1", "Ana")),
        (
            None,
            turn("Ben: Late night.", datetime(2023, 9, 13, 0, 9, tzinfo=UTC), "session_10", "D10:1", "D10:1", "Ben"),
        ),
    ]
    assert detect_format(path) == "locomo"
    assert scan(path).num_sessions == 3


def test_one_locomo_object_is_detected_too(tmp_path: Path) -> None:
    path = write(tmp_path / "one.json", LOCOMO_SAMPLE)
    assert detect_format(path) == "locomo"
    assert count_turns(path) == 4


def test_several_locomo_samples_get_one_sub_namespace_each(tmp_path: Path) -> None:
    second = {**LOCOMO_SAMPLE, "sample_id": "conv-2"}
    path = write(tmp_path / "two.json", [LOCOMO_SAMPLE, second])
    found = scan(path)
    assert (found.format, found.num_turns, found.num_sessions) == ("locomo", 8, 6)
    assert found.suffixes == [("conv-1",), ("conv-2",)]
    assert [s for s, _ in iter_requests(path)] == [("conv-1",)] * 4 + [("conv-2",)] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37, tzinfo=UTC)),
        ("12:09 am on 13 September, 2023", datetime(2023, 9, 13, 0, 9, tzinfo=UTC)),
        ("12:30 pm on 1 January, 2024", datetime(2024, 1, 1, 12, 30, tzinfo=UTC)),
        ("9:05 PM on 3 Feb, 2024", datetime(2024, 2, 3, 21, 5, tzinfo=UTC)),
    ],
)
def test_locomo_dates_parse_exactly(text: str, expected: datetime) -> None:
    assert parse_locomo_date(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("yesterday", "not a LoCoMo date"),
        ("1:56 pm on 8 Maytember, 2023", "not a LoCoMo date"),
        ("13:56 pm on 8 May, 2023", "12-hour clock"),
        ("1:56 pm on 31 February, 2023", "not a real date"),
    ],
)
def test_bad_locomo_dates_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        parse_locomo_date(text)


def test_bad_locomo_date_names_the_session(tmp_path: Path) -> None:
    sample = json.loads(json.dumps(LOCOMO_SAMPLE))
    sample["conversation"]["session_1_date_time"] = "noon-ish"
    message = error_of(write(tmp_path / "l.json", [sample]))
    assert "sample 'conv-1' session_1_date_time" in message
    assert "'noon-ish' is not a LoCoMo date" in message


def test_locomo_turn_without_text_names_field_and_turn(tmp_path: Path) -> None:
    sample = json.loads(json.dumps(LOCOMO_SAMPLE))
    del sample["conversation"]["session_1"][1]["text"]
    message = error_of(write(tmp_path / "l.json", [sample]))
    assert message.endswith("sample 'conv-1' session_1 turn D1:2: missing field 'text'")


def test_several_locomo_samples_need_distinct_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "l.json", [LOCOMO_SAMPLE, LOCOMO_SAMPLE])
    assert "sample_id 'conv-1' appears twice" in error_of(path)
    nameless = {k: v for k, v in LOCOMO_SAMPLE.items() if k != "sample_id"}
    assert "missing field 'sample_id'" in error_of(write(tmp_path / "m.json", [LOCOMO_SAMPLE, nameless]))


def test_json_sessions_become_exact_requests(tmp_path: Path) -> None:
    doc = {
        "sessions": [
            {
                "id": "s1",
                "date": "2023-05-08T13:56:00",
                "turns": [
                    {"speaker": "Alice", "text": "I adopted a cat.", "id": "s1:1"},
                    {"speaker": "Bot", "text": "Lovely!"},
                ],
            },
            {"turns": [{"role": "user", "content": "Hi", "time": "2024-01-02T03:04:05+01:00"}]},
        ]
    }
    path = write(tmp_path / "c.json", doc)
    when = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert list(iter_requests(path)) == [
        (None, turn("Alice: I adopted a cat.", when, "s1", "s1:1", "s1:1", "Alice")),
        (None, turn("Bot: Lovely!", when, "s1", "s1:2", None, "Bot")),
        (None, turn("user: Hi", datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC), "s2", "s2:1", None, "user")),
    ]


def test_json_list_of_messages(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.json",
        [{"role": "user", "content": "hello", "session": "a"}, {"speaker": "bot", "text": "hi", "id": 7}],
    )
    assert detect_format(path) == "json"
    assert list(iter_requests(path)) == [
        (None, turn("user: hello", None, "a", "a:1", None, "user")),
        (None, turn("bot: hi", None, None, "7", "7", "bot")),
    ]


def test_jsonl_messages_with_blank_lines(tmp_path: Path) -> None:
    lines = [
        '{"speaker": "Maya", "text": "Moved to Bristol.", "time": "2023-09-10T18:40:00", "session": "s4", "id": "m1"}',
        "",
        '{"role": "assistant", "content": "Welcome to Bristol!", "session": "s4"}',
        "   ",
    ]
    path = write(tmp_path / "chat.jsonl", "\n".join(lines) + "\n")
    assert detect_format(path) == "jsonl"
    assert list(iter_requests(path)) == [
        (None, turn("Maya: Moved to Bristol.", datetime(2023, 9, 10, 18, 40, tzinfo=UTC), "s4", "m1", "m1", "Maya")),
        (None, turn("assistant: Welcome to Bristol!", None, "s4", "s4:2", None, "assistant")),
    ]


def test_jsonl_bad_line_reports_its_number(tmp_path: Path) -> None:
    good = '{"speaker": "a", "text": "b"}'
    path = write(tmp_path / "chat.jsonl", f"{good}\n\n{{oops\n{good}\n")
    assert "line 3 is not valid JSON" in error_of(path)
    path = write(tmp_path / "chat2.jsonl", f"{good}\n[1, 2]\n")
    assert error_of(path).endswith("line 2: expected a message object, got a list")


def test_malformed_json_says_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{"sessions": [\n  {"id": "s1",, }\n]}')
    assert (
        error_of(path)
        == f"{path} is not valid JSON: Expecting property name enclosed in double quotes at line 2 column 15"
    )


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"sessions": [{"id": "s1", "turns": [{"speaker": "a", "text": "x"}, {"speaker": "b"}]}]},
            "session 's1' turn 2: missing field 'text' (or 'content')",
        ),
        (
            {"sessions": [{"id": "s1", "turns": [{"text": "x"}]}]},
            "session 's1' turn 1: missing field 'speaker' (or 'role')",
        ),
        ({"sessions": [{"id": "s1"}]}, "session 's1': missing field 'turns'"),
        (
            {"sessions": [{"id": "s1", "turns": [{"speaker": "a", "text": "  "}]}]},
            "session 's1' turn 1: 'text' is empty",
        ),
        (
            {"sessions": [{"id": "s1", "turns": [{"speaker": "a", "text": 3}]}]},
            "turn 1: 'text' must be a string, not int",
        ),
        ({"sessions": [{"id": "s1", "date": "May", "turns": []}]}, "session 's1': date 'May' is not an ISO-8601"),
        ({"sessions": "nope"}, "'sessions' must be a list, not a string"),
    ],
)
def test_missing_and_wrong_fields_name_field_and_place(tmp_path: Path, doc: Any, expected: str) -> None:
    assert expected in error_of(write(tmp_path / "c.json", doc))


def test_unknown_format_and_unrecognised_content(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", {"hello": 1})
    assert error_of(path, "xml") == "unknown format 'xml': use one of auto, json, jsonl, locomo"
    assert "cannot tell the format" in error_of(path)
    assert "expected an object with a 'sessions' list" in error_of(path, "json")
    assert error_of(tmp_path / "missing.json") == f"no such file: {tmp_path / 'missing.json'}"


def test_text_over_the_limit_names_the_turn(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"speaker": "a", "text": "short"}\n{"speaker": "a", "text": "far too long"}\n')
    message = error_of(path, max_text_chars=10)
    assert message.startswith(f"{path} line 2: text is 15 characters, over the limit of 10")


def test_batched_splits_by_size_and_suffix() -> None:
    def req(n: int) -> WriteRequest:
        return WriteRequest(text=str(n))

    items = [(None, req(1)), (None, req(2)), (None, req(3)), (("b",), req(4)), (("b",), req(5))]
    assert [(s, [r.text for r in batch]) for s, batch in batched(items, 2)] == [
        (None, ["1", "2"]),
        (None, ["3"]),
        (("b",), ["4", "5"]),
    ]


def test_example_conversation_parses() -> None:
    found = scan(EXAMPLES / "conversation.json")
    assert (found.format, found.num_sessions, found.suffixes) == ("json", 5, [None])
    assert 60 <= found.num_turns <= 90
    jsonl = scan(EXAMPLES / "conversation.jsonl")
    assert (jsonl.format, jsonl.num_turns, jsonl.num_sessions) == ("jsonl", 10, 2)
