"""`memos plugins list`, `memos ingest --policy` and a plugin's own command, through the real app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Cli

from memos.registry import reset_registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "memos-plugin-example"
EXAMPLE_LINES = [
    "example (memos-plugin-example 0.1.0): loaded",
    "  policies: keep-questions",
    "  embedders: charfreq",
    "  cli commands: example-hello",
]
HEURISTIC_LINES = ["heuristic (memos 0.1.0): loaded", "  policies: heuristic"]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed by pip into a temporary folder (from a copy, so the repository stays clean)."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = shutil.copytree(EXAMPLE, root / "src")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(root / "site"), str(source)], check=True, capture_output=True, timeout=300)
    return root / "site"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test reads the plugins anew and leaves no registry or example module behind."""
    reset_registry()
    yield
    reset_registry()
    for name in [m for m in sys.modules if m.startswith("memos_plugin_example")]:
        del sys.modules[name]


@pytest.fixture
def with_example(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example plugin on sys.path."""
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


def conversation(tmp_path: Path) -> Path:
    """One session: a fact, filler, the fact again, a question."""
    turns = [
        {"speaker": "Maya", "text": "I adopted a greyhound called Biscuit.", "id": "t1"},
        {"speaker": "Ravi", "text": "ok thanks", "id": "t2"},
        {"speaker": "Maya", "text": "I adopted a greyhound called Biscuit!", "id": "t3"},
        {"speaker": "Ravi", "text": "Does Biscuit like the park?", "id": "t4"},
    ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"sessions": [{"id": "s1", "turns": turns}]}))
    return path


def without_disabled(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.endswith("(not in MEMOS_PLUGINS)")]


def test_plugins_list_shows_the_built_in_plugins(cli: Cli) -> None:
    lines = cli("plugins", "list").stdout.splitlines()

    start = lines.index(HEURISTIC_LINES[0])
    assert lines[start : start + 2] == HEURISTIC_LINES
    assert all(not line.startswith("example ") for line in lines)


def test_plugins_list_shows_an_installed_plugin(cli: Cli, with_example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic,example")

    result = cli("plugins", "list")

    assert without_disabled(result.stdout) == HEURISTIC_LINES + EXAMPLE_LINES
    assert "mem-alpha (memos 0.1.0): disabled (not in MEMOS_PLUGINS)" in result.stdout.splitlines()
    found = cli.json("plugins", "list")
    assert isinstance(found, dict)
    assert found["allow"] == ["example", "heuristic"]
    assert [p for p in found["plugins"] if p["status"] != "disabled"] == [
        {
            "name": "heuristic",
            "source": "memos 0.1.0",
            "value": "memos.policies.heuristic",
            "status": "loaded",
            "error": None,
            "registered": {"policies": ["heuristic"]},
        },
        {
            "name": "example",
            "source": "memos-plugin-example 0.1.0",
            "value": "memos_plugin_example.plugin",
            "status": "loaded",
            "error": None,
            "registered": {
                "policies": ["keep-questions"],
                "embedders": ["charfreq"],
                "cli_commands": ["example-hello"],
            },
        },
    ]
    assert found["conflicts"] == []


def test_ingest_with_a_policy_prints_what_it_did(cli: Cli, tmp_path: Path) -> None:
    path = conversation(tmp_path)

    result = cli("ingest", str(path), "-n", "alice/chat", "--policy", "heuristic")

    assert result.stdout == (
        f"policy heuristic: applied 2 ops (2 inserts), 0 failed, over 4 chunks (1 session, format json) "
        f"from {path} into alice/chat\n"
    )
    assert cli.total() == 2
    # the policy sees what is stored: a second run adds nothing
    assert cli.json("ingest", str(path), "-n", "alice/chat", "--policy", "heuristic") == {
        "policy": "heuristic",
        "chunks": 4,
        "ops": 0,
        "applied": 0,
        "failed": 0,
        "applied_by_kind": {},
        "errors": [],
        "file": str(path),
        "format": "json",
        "sessions": 1,
        "namespaces": ["alice/chat"],
    }
    assert cli.total() == 2


def test_ingest_with_a_plugins_policy(cli: Cli, with_example: Path, tmp_path: Path) -> None:
    path = conversation(tmp_path)

    result = cli("ingest", str(path), "-n", "alice/chat", "--policy", "keep-questions")

    assert result.stdout.startswith("policy keep-questions: applied 1 op (1 insert), 0 failed, over 4 chunks")
    hits = cli.json("search", "alice/chat", "park")
    assert isinstance(hits, list)
    assert [hit["cube"]["content"] for hit in hits] == ["Ravi: Does Biscuit like the park?"]


def test_ingest_without_a_policy_is_unchanged_and_has_json(cli: Cli, tmp_path: Path) -> None:
    path = conversation(tmp_path)

    assert cli.json("ingest", str(path), "-n", "alice/chat") == {
        "written": 4,
        "skipped": 0,
        "turns": 4,
        "file": str(path),
        "format": "json",
        "sessions": 1,
        "namespaces": ["alice/chat"],
    }


def test_an_unknown_policy_is_one_line_and_exit_2(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOS_PLUGINS", "heuristic")
    path = conversation(tmp_path)

    assert cli.user_error("ingest", str(path), "-n", "alice/chat", "--policy", "nope") == (
        "error: unknown policy 'nope': available policies are heuristic; `memos plugins list` shows the plugins"
    )
    assert cli.user_error("ingest", str(path), "-n", "alice/chat", "--policy", "heuristic", "--again") == (
        "error: --again applies only without --policy: the policy decides what to write"
    )
    assert cli.total() == 0


def test_a_plugins_command_runs_as_memos_name(cli: Cli, with_example: Path) -> None:
    assert cli("example-hello", "Maya").stdout == "hello, Maya, from memos-plugin-example\n"
    assert cli("example-hello").stdout == "hello, world, from memos-plugin-example\n"
    assert "Usage: memos example-hello [OPTIONS] [name]" in cli("example-hello", "--help").stdout
    unknown = cli("no-such-command", ok=False)
    assert unknown.exit_code == 2
    assert "No such command 'no-such-command'" in unknown.stderr


HELP_PROBE = """
import json, sys
import memos.cli.main as main
sys.argv = ["memos", "--help"]
try:
    main.run()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith(("memos_plugin_example", "memos.registry", "memos.policies.")))
print(json.dumps(loaded), file=sys.stderr)
"""


@pytest.mark.slow
def test_help_imports_no_plugin(example_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, env=env, timeout=120)

    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    assert "plugins" in result.stdout
