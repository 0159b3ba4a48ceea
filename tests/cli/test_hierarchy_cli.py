"""The memory hierarchy from the command line: tick's paging report, stats' paging block, the context command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.cli import Cli

from memos.tokens import get_tokenizer

CONVERSATION = Path(__file__).resolve().parents[2] / "examples" / "data" / "conversation.json"
NS = "maya/chat"
TURNS = 84
#: short-term capacity of the default ("paper") paging preset
STM_CAPACITY = 7
QUESTION = "When did Maya adopt her greyhound?"
DATED = re.compile(r"^\[\d{1,2} [A-Z][a-z]+ 2023\] \S")
FOOTER = re.compile(r"^-- (\d+) items?, (\d+)/(\d+) tokens, (\d+) candidates? ranked")
SEGMENT_KEYS = {"id", "ns", "heat", "visits", "interactions", "pages", "paged_out", "summary"}


def as_maya(cli: Cli, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a command as maya and return its standard output."""
    return cli(*args, user="maya", env=env).stdout


def stats_json(cli: Cli) -> dict[str, Any]:
    value = cli.json("stats", user="maya")
    assert isinstance(value, dict)
    return value


def footer_of(output: str) -> tuple[int, int, int]:
    """(items, tokens, budget) from the footer line of `memos context`."""
    matches = [m for m in map(FOOTER.match, output.splitlines()) if m]
    assert len(matches) == 1, output
    items, tokens, budget, _ = (int(g) for g in matches[0].groups())
    return items, tokens, budget


@pytest.fixture
def ingested(cli: Cli) -> Cli:
    """A home where maya ingested the example conversation, with paging held back until `memos tick`."""
    out = as_maya(cli, "ingest", str(CONVERSATION), "-n", NS, env={"MEMOS_AUTO_PAGING": "false"})
    assert out.startswith(f"ingested {TURNS} turns (5 sessions, format json)")
    return cli


@pytest.fixture
def paged(ingested: Cli) -> Cli:
    """The ingested home after one tick: pages moved into mid-term segments, knowledge promoted."""
    as_maya(ingested, "tick")
    return ingested


def test_tick_reports_the_paging_it_did(ingested: Cli) -> None:
    before = stats_json(ingested)["paging"]
    assert (before["short_pages"], before["mid_pages"], before["segments"]) == (TURNS, 0, 0)

    line = as_maya(ingested, "tick")
    moved = TURNS - STM_CAPACITY
    assert re.fullmatch(
        rf"expired 0 cubes, moved {moved} pages to mid-term \((\d+) new segments?, \d+ merges?\), "
        r"promoted \d+ segments? \(\d+ knowledge cubes? written\), paged out 0 segments, "
        r"archived 0 knowledge cubes, built 0 activation blocks, re-synced 0 vectors\n",
        line,
    ), line
    created = int(re.search(r"\((\d+) new segment", line).group(1))  # type: ignore[union-attr]
    assert created >= 1

    # nothing is left to page: the JSON report has every key, all zero
    again = ingested.json("tick", user="maya")
    assert isinstance(again, dict)
    assert list(again) == [
        "expired",
        "moved",
        "segments_created",
        "merged",
        "promoted",
        "knowledge_written",
        "paged_out",
        "archived",
        "activated",
        "vector_synced",
    ]
    assert again["moved"] == again["segments_created"] == again["expired"] == 0

    after = stats_json(ingested)["paging"]
    assert (after["short_pages"], after["mid_pages"], after["segments"]) == (STM_CAPACITY, moved, created)


def test_stats_shows_the_hierarchy(paged: Cli) -> None:
    found = stats_json(paged)
    paging = found["paging"]
    assert paging["segments"] >= 1 and paging["segments_paged_out"] == 0
    assert (paging["short_pages"], paging["mid_pages"], paging["paged_out_pages"]) == (
        STM_CAPACITY,
        TURNS - STM_CAPACITY,
        0,
    )
    assert paging["profiles"] == 1
    assert paging["user_knowledge"] + paging["assistant_knowledge"] > 0
    hottest = found["hottest"]
    assert len(hottest) == min(5, paging["segments"])
    assert all(set(s) == SEGMENT_KEYS and s["ns"] == NS and not s["paged_out"] for s in hottest)
    assert all(s["pages"] >= 1 and s["heat"] > 0 and s["summary"] for s in hottest)
    assert [s["heat"] for s in hottest] == sorted((s["heat"] for s in hottest), reverse=True)

    text = as_maya(paged, "stats").splitlines()
    block = text[text.index("paging:") :]
    assert block[:6] == [
        "paging:",
        f"  segments: {paging['segments']} active, 0 paged out",
        f"  pages: {STM_CAPACITY} short, {TURNS - STM_CAPACITY} mid, 0 paged out",
        "  profiles: 1",
        f"  user knowledge: {paging['user_knowledge']} (0 archived)",
        f"  assistant knowledge: {paging['assistant_knowledge']} (0 archived)",
    ]
    assert block[6] == "hottest segments:"
    rows = block[7:]
    assert len(rows) == len(hottest)
    assert all(re.match(rf"  {NS}: heat \d+\.\d\d, \d+ visits?, \d+ pages?: \S", row) for row in rows), rows


def test_context_prints_the_dated_working_set_within_the_budget(paged: Cli) -> None:
    out = as_maya(paged, "context", QUESTION, "--ns", NS, "--budget", "200")
    lines = out.splitlines()
    items, tokens, budget = footer_of(out)
    assert budget == 200 and 0 < tokens <= 200
    body = lines[: lines.index(next(line for line in lines if FOOTER.match(line)))]
    assert body[0].startswith("## ")
    assert len([line for line in body if not line.startswith("## ")]) == items
    assert any(DATED.match(line) for line in body), out
    assert any("Biscuit" in line or "greyhound" in line for line in body), out
    assert "dates favoured" in lines[-1]


def test_context_json(paged: Cli) -> None:
    value = paged.json("context", QUESTION, "--ns", NS, "--budget", "200", user="maya")
    assert isinstance(value, dict)
    assert (value["namespace"], value["query"], value["budget_tokens"]) == (NS, QUESTION, 200)
    assert 0 < value["tokens"] <= 200
    assert value["temporal"] is True
    # the token count is the prompt's, counted with the home's tokenizer
    assert get_tokenizer("cl100k_base").count(value["prompt"]) == value["tokens"]
    items = value["items"]
    assert items and value["candidates"] >= len(items) - 1
    prompt_lines = [line for line in value["prompt"].splitlines() if not line.startswith("## ")]
    assert prompt_lines == [item["line"] for item in items]
    assert sum(1 for item in items if item["section"] == "profile") >= 1
    for item in items:
        if item["section"] == "profile":
            assert item["score"] is None and item["rank"] is None
        else:
            assert isinstance(item["score"], float) and item["rank"] >= 1
            assert {"relevance", "group", "neighbour", "speaker", "heat", "recency", "temporal"} <= set(item["why"])
    assert any(item["event_time"] and item["event_time"].startswith("2023-") for item in items)
    json.dumps(value)  # plain data all the way down


def test_context_explain_says_why(paged: Cli) -> None:
    out = as_maya(paged, "context", QUESTION, "--ns", NS, "--budget", "300", "--explain")
    lines = out.splitlines()
    items, tokens, _ = footer_of(out)
    assert tokens <= 300
    header = next(line for line in lines if line.split()[:2] == ["rank", "section"])
    assert header.split() == ["rank", "section", "score", "relevance", "group", "neighbour", "bonuses", "text"]
    table = lines[lines.index(header) + 2 :]
    rows = [row for row in table if re.match(r"^\s*(\d+|-)\s+(profile|knowledge|memory|recent)\s", row)]
    assert len(rows) == items
    assert any(re.match(r"^\s*-\s+profile\s+always\s", row) for row in rows)
    # a when-question about Maya: the speaker and the dates count
    assert any("speaker+0.60" in row and "when+0.30" in row for row in rows), out
    assert re.search(r"\d+ more ranked candidates? did not fit the budget", out)


def test_context_with_nothing_to_show(paged: Cli) -> None:
    assert paged("context", "anything", user="bob").stdout == "no memories under bob match\n"
    out = as_maya(paged, "context", QUESTION, "--ns", NS, "--budget", "3")
    assert re.fullmatch(r"no memory fits in 3 tokens \(\d+ candidates\)\n", out)


def test_context_bad_input_is_one_line(paged: Cli) -> None:
    for budget in ("0", "-5", "2000000"):
        line = paged.user_error("context", QUESTION, "--ns", NS, "--budget", budget, user="maya")
        assert line == f"error: the token budget must be an integer from 1 to 1000000, got {budget}"
    for query in ("", "   "):
        assert paged.user_error("context", query, "--ns", NS, user="maya").startswith("error: query is empty")
    assert paged.user_error("context", QUESTION, "--ns", "", user="maya").startswith("error: a namespace needs")
    assert paged.user_error("context", QUESTION, "--ns", "maya//chat", user="maya").startswith(
        "error: invalid namespace"
    )
    assert paged.user_error("context", QUESTION, "--ns", NS, user="bob") == (
        f"error: bob may not read {NS}: ask its owner to run `memos share {NS} bob --right read`"
    )
    # a budget that is not a number is a usage error: exit 2, no traceback
    result = paged("context", QUESTION, "--budget", "lots", user="maya", ok=False)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_paged_out_segments_show_in_stats_and_come_back_for_context(ingested: Cli) -> None:
    one_segment = {"MEMOS_PAGING": '{"max_segments": 1}'}
    report = ingested.json("tick", user="maya")
    assert isinstance(report, dict)
    as_maya(ingested, "tick", env=one_segment)
    paging = stats_json(ingested)["paging"]
    # the five sessions form several segments, so capping them at one pages the others out
    assert report["segments_created"] >= 2
    assert paging["segments"] == 1 and paging["segments_paged_out"] == report["segments_created"] - 1
    assert paging["paged_out_pages"] > 0
    assert paging["mid_pages"] + paging["paged_out_pages"] == TURNS - STM_CAPACITY
    assert all(not s["paged_out"] for s in stats_json(ingested)["hottest"])

    out = as_maya(ingested, "context", QUESTION, "--ns", NS, "--budget", "1000")
    footer = out.splitlines()[-1]
    assert re.search(r", paged back in \d+ segments?$", footer), footer
    assert stats_json(ingested)["paging"]["segments_paged_out"] < paging["segments_paged_out"]
