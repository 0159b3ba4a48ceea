"""The `memos` entry point in a real process: help stays light, errors are one line without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HEAVY = ("torch", "transformers", "chromadb", "sentence_transformers", "peft")

HELP_PROBE = """
import json, sys
import memos.cli.main as main
sys.argv = ["memos", "--help"]
try:
    main.run()
except SystemExit as exc:
    code = exc.code
heavy = [name for name in {heavy!r} if name in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def memos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script's entry point in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", "from memos.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_help_does_not_import_heavy_libraries() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    probe = json.loads(result.stderr.strip().splitlines()[-1])
    assert probe == {"code": 0, "heavy": []}
    assert "Usage" in result.stdout and "ingest" in result.stdout


def test_errors_are_one_line_with_the_error_exit_code(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    result = memos("--home", home, "--embedder", "hash", "--user", "alice", "show", "nope")
    assert result.returncode == 2
    assert result.stderr == ("error: 'nope' is not a cube id (ids look like 01890a5d-ac96-774b-bcce-b302099a8057)\n")
    assert result.stdout == ""


def test_usage_error_exit_code(tmp_path: Path) -> None:
    result = memos("--home", str(tmp_path / "home"), "search")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_add_then_search_across_processes(tmp_path: Path) -> None:
    env = {"MEMOS_HOME": str(tmp_path / "home"), "MEMOS_EMBEDDER": "hash", "MEMOS_USER": "alice"}
    added = memos("add", "alice/chat", "Maya adopted a greyhound called Biscuit", env=env)
    assert added.returncode == 0, added.stderr
    found = memos("search", "alice/chat", "greyhound", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["cube"]["id"] == added.stdout.strip()
