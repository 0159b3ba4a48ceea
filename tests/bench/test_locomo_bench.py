"""The LoCoMo benchmark script runs end to end on a tiny file in LoCoMo format and scores correctly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import locomo  # noqa: E402

SAMPLE = {
    "sample_id": "tiny-1",
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a grey kitten called Miso."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Lovely! How old is she?"},
            {"speaker": "Ana", "dia_id": "D1:3", "text": "Twelve weeks, she sleeps on my keyboard."},
        ],
        "session_2_date_time": "10:00 am on 2 June, 2023",
        "session_2": [
            {"speaker": "Ben", "dia_id": "D2:1", "text": "I signed up for the Berlin marathon."},
            {"speaker": "Ana", "dia_id": "D2:2", "text": "How far do you run each week?"},
            {"speaker": "Ben", "dia_id": "D2:3", "text": "About forty kilometres along the river."},
        ],
    },
    "qa": [
        {"question": "What is Ana's kitten called?", "answer": "Miso", "evidence": ["D1:1"], "category": 4},
        {
            "question": "When did Ben sign up for the marathon?",
            "answer": "June 2023",
            "evidence": ["D2:1"],
            "category": 2,
        },
        {"question": "How far does Ben run?", "answer": "40 km", "evidence": ["D2:3; D2:2"], "category": 1},
        {"question": "What is Ben's cat called?", "adversarial_answer": "Miso", "evidence": [], "category": 5},
    ],
}


def test_evidence_ids_are_cleaned_like_the_official_scorer() -> None:
    valid = {"D1:1", "D8:6", "D9:17", "D11:26", "D30:5"}
    assert locomo.clean_evidence(["D8:6; D9:17", "D:11:26", "D30:05", "D", "D99:1"], valid) == {
        "D8:6",
        "D9:17",
        "D11:26",
        "D30:5",
    }


def test_recall_and_hit_count_turns() -> None:
    scores = locomo.Scores()
    scores.add(4, {"D1:1", "D1:2"}, ["D1:1", "D3:3", "D3:4", "D3:5", "D3:6", "D1:2"])
    scores.add(5, set(), [])
    assert scores.mean("recall", "4", 5) == 50.0
    assert scores.mean("recall", "4", 10) == 100.0
    assert scores.mean("hit", "4", 5) == 100.0
    assert scores.mean("recall", "all", 5) == 75.0  # no evidence counts as recalled
    assert scores.count("1-4") == 1


@pytest.mark.slow
def test_the_script_writes_its_table(tmp_path: Path) -> None:
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps([SAMPLE, {**SAMPLE, "sample_id": "tiny-2"}]))
    out = tmp_path / "locomo.md"
    assert locomo.main(["--data", str(data), "--embedder", "hash", "--out", str(out), "--conversations", "1"]) == 0
    page = out.read_text()
    assert "1 conversations, 6 turns, 4 questions" in page
    assert "memos context(), all (1-5)" in page and "BM25 alone" in page and "dense alone" in page
    assert "extractive fallbacks" in page
    row = next(line for line in page.splitlines() if line.startswith("| memos context(), all (1-5)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "4"
    assert float(cells[5]) == 100.0  # R@50 over six turns finds every evidence turn
