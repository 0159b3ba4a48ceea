"""Every command's happy path, against a real home with the hashing embedder."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support.cli import Cli

from memos.cli.main import app

ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CONVERSATION = {
    "sessions": [
        {
            "id": "s1",
            "date": "2023-02-14T19:05:00",
            "turns": [
                {"speaker": "Maya", "text": "I live in Leeds near Hyde Park.", "id": "s1:1"},
                {"speaker": "Assistant", "text": "Noted, Leeds.", "id": "s1:2"},
            ],
        },
        {
            "id": "s2",
            "date": "2023-09-10T18:40:00",
            "turns": [{"speaker": "Maya", "text": "I moved to Bristol with my greyhound Biscuit.", "id": "s2:1"}],
        },
    ]
}


def add(cli: Cli, *args: str, user: str = "alice") -> str:
    cube_id = cli("add", *args, user=user).stdout.strip()
    assert ID.match(cube_id), cube_id
    return cube_id


def show(cli: Cli, cube_id: str, user: str = "alice") -> dict[str, Any]:
    value = cli.json("show", cube_id, user=user)
    assert isinstance(value, dict)
    return value


def test_init_writes_settings_and_registers_the_user(cli: Cli) -> None:
    result = cli("init", "--user", "alice", "--embedder", "hash", user=None)
    assert result.stdout == f"initialised {cli.home} (user alice, embedder hash-v1-256)\n"
    assert (cli.home / "memos.toml").read_text() == (
        "# memos settings for this home; MEMOS_* environment variables override them\n"
        'user = "alice"\nembedder = "hash"\n'
    )
    assert [line.split()[0] for line in cli("users", "list").stdout.splitlines()] == ["alice"]


def test_init_writes_only_what_was_given(cli: Cli) -> None:
    result = cli("init", user=None, env={"MEMOS_USER": "dora"})
    assert result.stdout == f"initialised {cli.home} (user dora, embedder hash-v1-256)\n"
    # the global --embedder counts as given; a user from the environment does not
    assert (cli.home / "memos.toml").read_text().splitlines()[1:] == ['embedder = "hash"']


def test_the_acting_user_comes_from_flag_then_env_then_toml_then_login(cli: Cli) -> None:
    cli("init", "--user", "carol", user=None)
    toml_id = cli("add", "carol/notes", "from the toml", user=None).stdout.strip()
    assert show(cli, toml_id, user="carol")["header"]["acl"]["owner"] == "carol"
    env_id = cli("add", "dave/notes", "from the env", user=None, env={"MEMOS_USER": "dave"}).stdout.strip()
    assert show(cli, env_id, user="dave")["header"]["provenance"]["actor"] == "dave"
    flag_id = cli("add", "erin/notes", "from the flag", user="erin", env={"MEMOS_USER": "dave"}).stdout.strip()
    assert show(cli, flag_id, user="erin")["header"]["provenance"]["actor"] == "erin"
    (cli.home / "memos.toml").write_text("")
    login = {"LOGNAME": "zed", "USER": "zed", "LNAME": "zed", "USERNAME": "zed"}
    login_id = cli("add", "zed/notes", "from the login name", user=None, env=login).stdout.strip()
    assert show(cli, login_id, user="zed")["header"]["provenance"]["actor"] == "zed"


def test_home_comes_from_memos_home(cli: Cli, tmp_path: Path) -> None:
    result = cli.runner.invoke(
        app,
        ["--embedder", "hash", "--user", "alice", "stats", "--json"],
        env={"MEMOS_HOME": str(tmp_path / "elsewhere")},
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["home"] == str((tmp_path / "elsewhere").resolve())


def test_add_and_show_keep_every_option(cli: Cli) -> None:
    cube_id = add(
        cli,
        "alice/chat",
        "Maya moved to Bristol",
        "--level",
        "mid",
        "--tag",
        "move",
        "--tag",
        "city",
        "--label",
        "type=fact",
        "--event-time",
        "2023-09-10T18:40",
        "--external-id",
        "s4:1",
        "--ttl",
        "2h",
    )
    cube = show(cli, cube_id)
    header = cube["header"]
    assert (cube["namespace"], cube["level"], cube["content"]) == (["alice", "chat"], "mid", "Maya moved to Bristol")
    assert (header["tags"], header["labels"]) == (["move", "city"], {"type": "fact"})
    assert header["event_time"] == "2023-09-10T18:40:00Z"
    assert header["provenance"]["external_id"] == "s4:1"
    created = datetime.fromisoformat(header["created_at"])
    assert (datetime.fromisoformat(header["lifecycle"]["expires_at"]) - created).total_seconds() == 7200
    text = cli("show", cube_id).stdout
    assert text.startswith(f"id: {cube_id}\nnamespace: alice/chat\nkind: plaintext\nlevel: mid\nstatus: active\n")
    assert "event time: 2023-09-10 18:40:00\n" in text
    assert "external id: s4:1\ntags: move, city\nlabels: type=fact\n" in text.replace("owner: alice\n", "")
    assert text.endswith("\nMaya moved to Bristol\n")


def test_add_reads_standard_input(cli: Cli) -> None:
    cube_id = cli("add", "alice/chat", "-", input="from a pipe\n").stdout.strip()
    assert show(cli, cube_id)["content"] == "from a pipe\n"


def test_search_table_and_json(cli: Cli) -> None:
    leeds = add(cli, "alice/chat", "Maya lives in Leeds", "--tag", "city", "--event-time", "2023-02-14")
    bristol = add(cli, "alice/chat", "Maya moved to Bristol", "--tag", "city", "--event-time", "2023-09-10")
    add(cli, "alice/chat", "Biscuit is a greyhound", "--label", "type=pet")
    table = cli("search", "alice/chat", "Bristol").stdout
    header = table.splitlines()[1]
    for column in ("#", "score", "dense", "bm25", "level", "event time", "external id", "text"):
        assert column in header
    assert "Maya moved to Bristol" in table
    hits = cli.json("search", "alice/chat", "Bristol", "-k", "1")
    assert isinstance(hits, list) and len(hits) == 1
    assert (hits[0]["rank"], hits[0]["cube"]["id"], hits[0]["bm25_rank"]) == (1, bristol, 1)
    assert set(hits[0]) == {"rank", "score", "dense", "bm25", "dense_rank", "bm25_rank", "cube"}
    assert hits[0]["cube"]["header"]["acl"]["owner"] == "alice"

    def ids(*args: str) -> list[str]:
        found = cli.json("search", "alice/chat", "Maya Leeds Bristol greyhound", *args)
        assert isinstance(found, list)
        return sorted(h["cube"]["id"] for h in found)

    assert ids("--tag", "city") == sorted([leeds, bristol])
    assert ids("--since", "2023-06-01") == [bristol]
    assert ids("--until", "2023-06-01") == [leeds]
    assert len(ids("--label", "type=pet")) == 1
    assert ids("--level", "long") == []
    assert cli("search", "alice/chat", "anything", "--level", "long").stdout == "no memories match\n"


def test_ingest_json_then_recall_by_provenance(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(CONVERSATION))
    result = cli("ingest", str(path), "--namespace", "alice/chat", "--batch", "2")
    assert result.stdout == f"ingested 3 turns (2 sessions, format json) from {path} into alice/chat\n"
    # a second run writes nothing: every turn id is already stored there
    again = cli("ingest", str(path), "--namespace", "alice/chat")
    assert again.stdout == (
        f"ingested 0 turns (2 sessions, format json) from {path} into alice/chat; skipped 3 turns already stored\n"
    )
    assert cli.json("stats")["namespaces"] == [{"namespace": "alice/chat", "count": 3}]  # type: ignore[index]
    hits = cli.json("search", "alice/chat", "greyhound Biscuit", "-k", "1")
    assert isinstance(hits, list)
    cube = hits[0]["cube"]
    assert cube["content"] == "Maya: I moved to Bristol with my greyhound Biscuit."
    assert cube["header"]["event_time"] == "2023-09-10T18:40:00Z"
    assert cube["header"]["labels"] == {"type": "episode"}
    provenance = cube["header"]["provenance"]
    assert {k: provenance[k] for k in ("source", "session_id", "turn_id", "external_id", "speaker")} == {
        "source": "message",
        "session_id": "s2",
        "turn_id": "s2:1",
        "external_id": "s2:1",
        "speaker": "Maya",
    }


def test_ingest_jsonl_and_locomo(cli: Cli, tmp_path: Path) -> None:
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_text('{"role": "user", "content": "hi"}\n\n{"role": "assistant", "content": "hello"}\n')
    assert cli("ingest", str(jsonl), "-n", "alice/jl").stdout == (
        f"ingested 2 turns (1 session, format jsonl) from {jsonl} into alice/jl\n"
    )
    sample = {
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [{"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben"}],
        }
    }
    locomo = tmp_path / "locomo.json"
    locomo.write_text(json.dumps([{**sample, "sample_id": "c1"}, {**sample, "sample_id": "c2"}]))
    assert cli("ingest", str(locomo), "-n", "alice/locomo").stdout == (
        f"ingested 2 turns (2 sessions, format locomo) from {locomo} into 2 namespaces under alice/locomo\n"
    )
    stats = cli.json("stats")
    assert isinstance(stats, dict)
    assert stats["namespaces"] == [
        {"namespace": "alice/jl", "count": 2},
        {"namespace": "alice/locomo/c1", "count": 1},
        {"namespace": "alice/locomo/c2", "count": 1},
    ]


def test_stats_text(cli: Cli) -> None:
    add(cli, "alice/chat", "one")
    add(cli, "alice/notes", "two", "--level", "long")
    assert cli("stats").stdout == (
        f"home: {cli.home.resolve()}\n"
        "embedder: hash-v1-256\n"
        "vectors: 2 (0 pending sync)\n"
        "cubes: 2\n"
        "  plaintext long active: 1\n"
        "  plaintext short active: 1\n"
        "namespaces: 2\n"
        "  alice/chat: 1\n"
        "  alice/notes: 1\n"
        "paging:\n"
        "  segments: 0 active, 0 paged out\n"
        "  pages: 1 short, 0 mid, 0 paged out\n"
        "  profiles: 0\n"
        "  user knowledge: 0 (0 archived)\n"
        "  assistant knowledge: 0 (0 archived)\n"
        "hottest segments: none\n"
    )
    assert cli.json("stats", "alice/notes") == {
        "home": str(cli.home.resolve()),
        "embedder": "hash-v1-256",
        "total": 1,
        "counts": [{"kind": "plaintext", "level": "long", "status": "active", "count": 1}],
        "namespaces": [{"namespace": "alice/notes", "count": 1}],
        "vectors": 2,
        "pending_vector_sync": 0,
        "paging": {
            "segments": 0,
            "segments_paged_out": 0,
            "short_pages": 0,
            "mid_pages": 0,
            "paged_out_pages": 0,
            "profiles": 0,
            "user_knowledge": 0,
            "user_knowledge_archived": 0,
            "assistant_knowledge": 0,
            "assistant_knowledge_archived": 0,
        },
        "hottest": [],
    }


def test_tick_expires_cubes_past_their_ttl(cli: Cli) -> None:
    assert cli("tick").stdout == (
        "expired 0 cubes, moved 0 pages to mid-term (0 new segments, 0 merges), promoted 0 segments "
        "(0 knowledge cubes written), paged out 0 segments, archived 0 knowledge cubes, built 0 activation blocks, "
        "re-synced 0 vectors\n"
    )
    cube_id = add(cli, "alice/chat", "short-lived", "--ttl", "0.2")
    time.sleep(0.3)
    # expiry also takes the cube's vector out of the index
    assert cli.json("tick") == {
        "expired": 1,
        "moved": 0,
        "segments_created": 0,
        "merged": 0,
        "promoted": 0,
        "knowledge_written": 0,
        "paged_out": 0,
        "archived": 0,
        "activated": 0,
        "vector_synced": 1,
    }
    assert show(cli, cube_id)["header"]["lifecycle"]["status"] == "expired"


def test_update_history_forget_restore(cli: Cli) -> None:
    cube_id = add(cli, "alice/chat", "Maya lives in Leeds", "--tag", "city")
    assert cli("update", cube_id, "Maya lives in Bristol", "--tag", "city", "--tag", "move").stdout == (
        f"updated {cube_id} to version 2\n"
    )
    assert cli("update", cube_id, "--level", "long", "--expected-version", "2").stdout == (
        f"updated {cube_id} to version 3\n"
    )
    versions = cli.json("history", cube_id)
    assert isinstance(versions, list)
    assert [(v["header"]["version"], v["content"], v["level"]) for v in versions] == [
        (1, "Maya lives in Leeds", "short"),
        (2, "Maya lives in Bristol", "short"),
        (3, "Maya lives in Bristol", "long"),
    ]
    table = cli("history", cube_id).stdout
    assert "Maya lives in Leeds" in table and "city, move" in table
    assert cli("forget", cube_id).stdout == f"forgot {cube_id}\n"
    assert cli.json("search", "alice/chat", "Bristol") == []
    assert cli("restore", cube_id).stdout == f"restored {cube_id}\n"
    assert len(cli.json("search", "alice/chat", "Bristol")) == 1  # type: ignore[arg-type]
    assert cli("forget", cube_id, "--hard").stdout == f"purged {cube_id}\n"
    assert cli.user_error("show", cube_id) == f"error: no cube with id {cube_id}"


def test_audit(cli: Cli) -> None:
    cube_id = add(cli, "alice/chat", "one")
    cli("update", cube_id, "two")
    entries = cli.json("audit", cube_id)
    assert isinstance(entries, list)
    assert [(e["action"], e["actor"], e["cube_id"], e["ns"]) for e in entries] == [
        ("update", "alice", cube_id, "alice/chat"),
        ("write", "alice", cube_id, "alice/chat"),
    ]
    table = cli("audit").stdout
    assert "update" in table and "write" in table and "version=2" in table


def test_users_share_revoke_grants(cli: Cli) -> None:
    add(cli, "alice/chat", "Maya moved to Bristol")
    assert cli("users", "add", "bob").stdout == "added user bob\n"
    assert cli("users", "add", "bob").stdout == "user bob already exists\n"
    assert [line.split()[0] for line in cli("users", "list").stdout.splitlines()] == ["alice", "bob"]
    assert cli("grants", "alice").stdout == "no grants\n"
    assert cli("share", "alice/chat", "bob").stdout == "bob may now read alice/chat\n"
    assert cli("grants", "alice").stdout == "alice/chat  bob  read\n"
    assert len(cli.json("search", "alice/chat", "Bristol", user="bob")) == 1  # type: ignore[arg-type]
    assert "bob may not write alice/chat" in cli.user_error("add", "alice/chat", "from bob", user="bob")
    assert cli("share", "alice/chat", "bob", "--right", "write").stdout == "bob may now write alice/chat\n"
    add(cli, "alice/chat", "from bob", user="bob")
    assert cli("revoke", "alice/chat", "bob").stdout == "revoked bob's grant on alice/chat\n"
    assert "bob may not read alice/chat" in cli.user_error("search", "alice/chat", "Bristol", user="bob")


def test_reindex_switches_embedder(cli: Cli) -> None:
    add(cli, "alice/chat", "Maya moved to Bristol")
    switched = ["--home", str(cli.home), "--embedder", "hash:64", "--user", "alice"]
    refused = cli.runner.invoke(app, [*switched, "stats"])
    assert refused.exit_code == 2 and "memos reindex" in refused.stderr
    result = cli.runner.invoke(app, [*switched, "reindex"])
    assert result.stdout == "reindexed 1 cube with hash-v1-64\n"
    hits = cli.runner.invoke(app, [*switched, "search", "alice/chat", "Bristol", "--json"])
    assert json.loads(hits.stdout)[0]["cube"]["content"] == "Maya moved to Bristol"


def test_log_json_writes_json_lines(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cube_id = add(cli, "alice/chat", "Maya moved to Bristol")
    from memos import MemOS

    with MemOS.open(cli.home, embedder="hash") as mos:
        mos.vectors.delete([cube_id])  # the index lost a vector: the next open repairs it and says so
    monkeypatch.setenv("MEMOS_LOG_LEVEL", "info")
    result = cli.runner.invoke(app, ["--home", str(cli.home), "--embedder", "hash", "--log-json", "tick"])
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stderr.splitlines()]
    repaired = [e for e in events if e["event"] == "vector index repaired"]
    assert len(repaired) == 1
    assert {k: repaired[0][k] for k in ("component", "level", "missing", "extra")} == {
        "component": "kernel",
        "level": "info",
        "missing": 1,
        "extra": 0,
    }


def test_export_and_import_round_trip(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("memos.archive")
    cube_id = add(cli, "alice/chat", "Maya moved to Bristol")
    cli("update", cube_id, "Maya moved to Bristol in July")
    archive = tmp_path / "chat.archive"
    assert cli("export", "alice/chat", str(archive)).stdout.startswith(f"exported alice/chat to {archive}")
    assert cli("import", str(archive), "--into", "alice/copy").stdout.startswith(f"imported {archive}")
    copies = cli.json("search", "alice/copy", "Bristol")
    assert isinstance(copies, list) and len(copies) == 1
    assert copies[0]["cube"]["content"] == "Maya moved to Bristol in July"
    assert cli.total() == 2
