"""examples/quickstart.py runs on a fresh home: memories written, recalled, a working set, two agent turns."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from memos import MemOS
from memos.agents.threads import THREADS_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def run_quickstart(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the script as `python examples/quickstart.py HOME` in this process."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(home)])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_quickstart_runs_offline_on_a_fresh_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMOS_EMBEDDER", "hash")
    home = tmp_path / "home"

    run_quickstart(home, monkeypatch)

    out = capsys.readouterr().out
    assert out.startswith("recall:\n")
    assert "working set (" in out and "## Long-term knowledge\n[8 May 2023] I moved to Lisbon in May 2023." in out
    assert "you> When did I move to Lisbon?\nFrom memory: [8 May 2023] I moved to Lisbon in May 2023.\n" in out
    assert "you> What does my cat Pixel like?\nFrom memory: [" in out
    assert "] My cat Pixel is grey and sleeps in cardboard boxes.\n" in out
    assert (home / THREADS_FILE).is_file()
    with MemOS.open(home, embedder="hash") as mos:
        alice = mos.as_user("alice")
        texts = [cube.text for cube in alice.list("alice/chat")]
    assert texts[:3] == [
        "I moved to Lisbon in May 2023.",
        "My cat Pixel is grey and sleeps in cardboard boxes.",
        "I work night shifts as a nurse at Santa Maria hospital.",
    ]
    # the agent remembered both of the user's messages (and the replies) through the heuristic policy
    assert "alice: When did I move to Lisbon?" in texts and "alice: What does my cat Pixel like?" in texts


def test_quickstart_needs_a_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    with pytest.raises(SystemExit, match=r"usage: python examples/quickstart\.py HOME"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
