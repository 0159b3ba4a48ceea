"""Run the real `memos` app in-process against a real home, with the hashing embedder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from memos.cli.main import app


class Cli:
    """Invokes `memos --home HOME --embedder hash [--user USER] ARGS...` and checks the outcome."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(
        self,
        *args: str,
        user: str | None = "alice",
        ok: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run one command; with ok=True, fail the test unless it exits 0."""
        prefix = ["--home", str(self.home), "--embedder", "hash"] + (["--user", user] if user else [])
        result = self.runner.invoke(app, [*prefix, *args], input=input, env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        return result

    def json(self, *args: str, user: str | None = "alice") -> object:
        """Run a command with --json and parse its output."""
        return json.loads(self(*args, "--json", user=user).stdout)

    def total(self, user: str = "alice") -> int:
        """Cubes of any status the user can see."""
        stats = self.json("stats", user=user)
        assert isinstance(stats, dict)
        return int(stats["total"])

    def user_error(self, *args: str, user: str | None = "alice", env: Mapping[str, str] | None = None) -> str:
        """Run a command that must fail on bad input: exit 2, one `error:` line on stderr; return that line."""
        result = self(*args, user=user, ok=False, env=env)
        assert result.exit_code == 2, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert "Traceback" not in result.output
        return lines[0]
