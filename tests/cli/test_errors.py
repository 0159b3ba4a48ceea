"""The bad-input contract: exit code 2, exactly one `error:` line on stderr, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import Cli

UNKNOWN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
GOOD_TURN = '{"speaker": "Maya", "text": "hello"}'


@pytest.fixture
def seeded(cli: Cli) -> Cli:
    """A home where alice has one memory and bob exists."""
    cli("add", "alice/chat", "Maya moved to Bristol")
    cli("users", "add", "bob")
    return cli


def rejected(cli: Cli, *args: str, user: str = "alice", env: dict[str, str] | None = None) -> str:
    """Run a bad command and check it wrote nothing; return the error line."""
    before = cli.total()
    line = cli.user_error(*args, user=user, env=env)
    assert cli.total() == before
    return line


def test_unknown_id(seeded: Cli) -> None:
    assert rejected(seeded, "show", UNKNOWN_ID) == f"error: no cube with id {UNKNOWN_ID}"
    assert rejected(seeded, "update", UNKNOWN_ID, "new text") == f"error: no cube with id {UNKNOWN_ID}"
    assert rejected(seeded, "forget", UNKNOWN_ID) == f"error: no cube with id {UNKNOWN_ID}"


def test_malformed_id(seeded: Cli) -> None:
    assert rejected(seeded, "show", "nope") == (
        "error: 'nope' is not a cube id (ids look like 01890a5d-ac96-774b-bcce-b302099a8057)"
    )
    assert rejected(seeded, "history", "12345").startswith("error: '12345' is not a cube id")


def test_empty_text(seeded: Cli) -> None:
    assert rejected(seeded, "add", "alice/chat", "   ") == "error: text is empty: give some words for the memory"
    assert rejected(seeded, "search", "alice/chat", "") == "error: query is empty: give some words"


def test_text_over_the_limit(seeded: Cli) -> None:
    line = rejected(seeded, "add", "alice/chat", "x" * 11, env={"MEMOS_MAX_TEXT_CHARS": "10"})
    assert line == ("error: text is 11 characters, over the limit of 10: split it, or raise MEMOS_MAX_TEXT_CHARS")


def test_text_over_the_limit_in_a_file_writes_nothing(seeded: Cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(f"{GOOD_TURN}\n" * 3 + '{"speaker": "Maya", "text": "far too long"}\n')
    line = rejected(seeded, "ingest", str(path), "-n", "alice/chat", "--batch", "1", env={"MEMOS_MAX_TEXT_CHARS": "12"})
    assert line.startswith(f"error: {path} line 4: text is 18 characters, over the limit of 12")


def test_invalid_namespace(seeded: Cli) -> None:
    assert "invalid namespace segment 'bad ns'" in rejected(seeded, "add", "alice/bad ns", "text")
    assert "invalid namespace segment" in rejected(seeded, "search", "alice/../x", "text")


def test_bad_options(seeded: Cli) -> None:
    assert "invalid level 'huge'" in rejected(seeded, "add", "alice/chat", "text", "--level", "huge")
    assert "write it as key=value" in rejected(seeded, "add", "alice/chat", "text", "--label", "fact")
    assert "invalid --ttl 'soon'" in rejected(seeded, "add", "alice/chat", "text", "--ttl", "soon")
    assert "--since 'last week' is not an ISO-8601" in rejected(
        seeded, "search", "alice/chat", "q", "--since", "last week"
    )
    assert "invalid right 'admin'" in rejected(seeded, "share", "alice/chat", "bob", "--right", "admin")
    assert "k must be an integer from 1 to 1000" in rejected(seeded, "search", "alice/chat", "q", "-k", "0")


def test_wrong_format(seeded: Cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([json.loads(GOOD_TURN)]))
    assert rejected(seeded, "ingest", str(path), "-n", "alice/chat", "--format", "xml") == (
        "error: unknown format 'xml': use one of auto, json, jsonl, locomo"
    )


def test_malformed_json_file(seeded: Cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text('{"sessions": [\n  {"id": "s1", "turns": [}\n]}')
    line = rejected(seeded, "ingest", str(path), "-n", "alice/chat")
    assert line.startswith(f"error: {path} is not valid JSON: ")
    assert line.endswith("at line 2 column 26")


def test_jsonl_with_a_bad_line_3(seeded: Cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(f"{GOOD_TURN}\n{GOOD_TURN}\n{{not json\n{GOOD_TURN}\n")
    line = rejected(seeded, "ingest", str(path), "-n", "alice/chat", "--batch", "1")
    assert "line 3" in line
    assert line.startswith(f"error: {path} line 3 is not valid JSON")


def test_missing_fields(seeded: Cli, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    doc = {"sessions": [{"id": "s1", "turns": [json.loads(GOOD_TURN), {"speaker": "Maya"}]}]}
    path.write_text(json.dumps(doc))
    line = rejected(seeded, "ingest", str(path), "-n", "alice/chat", "--batch", "1")
    assert line == f"error: {path} session 's1' turn 2: missing field 'text' (or 'content')"


def test_missing_and_empty_files(seeded: Cli, tmp_path: Path) -> None:
    assert rejected(seeded, "ingest", str(tmp_path / "none.json"), "-n", "alice/chat") == (
        f"error: no such file: {tmp_path / 'none.json'}"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert rejected(seeded, "ingest", str(empty), "-n", "alice/chat") == f"error: {empty} holds no conversation turns"


def test_bob_cannot_search_or_write_alices_namespace(seeded: Cli, tmp_path: Path) -> None:
    assert rejected(seeded, "search", "alice/chat", "Bristol", user="bob") == (
        "error: bob may not read alice/chat: ask its owner to run `memos share alice/chat bob --right read`"
    )
    path = tmp_path / "chat.jsonl"
    path.write_text(f"{GOOD_TURN}\n")
    assert "bob may not write alice/chat" in rejected(seeded, "ingest", str(path), "-n", "alice/chat", user="bob")
    assert "only alice (the owner of 'alice') may share" in rejected(seeded, "share", "alice/chat", "bob", user="bob")


def test_conflicts(seeded: Cli) -> None:
    hits = seeded.json("search", "alice/chat", "Bristol")
    assert isinstance(hits, list)
    cube_id = hits[0]["cube"]["id"]
    assert rejected(seeded, "update", cube_id, "new", "--expected-version", "5") == (
        f"error: cube {cube_id} is at version 1, not 5: re-read it and retry"
    )
    assert rejected(seeded, "update", cube_id).startswith("error: nothing to update")
    assert rejected(seeded, "restore", cube_id) == f"error: cube {cube_id} is active, not forgotten"


def test_usage_errors_keep_exit_code_2(cli: Cli) -> None:
    result = cli("add", "alice/chat", ok=False)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = cli("no-such-command", ok=False)
    assert result.exit_code == 2


def test_a_home_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = Cli(blocker / "home").user_error("stats")
    assert line.startswith(f"error: cannot create the memos home {blocker / 'home'}: ")
    assert line.endswith("; pass --home or set MEMOS_HOME")


def test_ingest_refuses_a_file_over_the_size_setting_before_reading_it(seeded: Cli, tmp_path: Path) -> None:
    big = tmp_path / "talk.json"
    big.write_text(json.dumps([{"speaker": "alice", "text": "word " * 100}]))
    message = rejected(seeded, "ingest", str(big), "-n", "alice/big", env={"MEMOS_MAX_INGEST_BYTES": "200"})
    assert "200" in message and "\n" not in message.strip()
    assert seeded.total() == 1
