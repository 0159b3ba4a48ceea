"""Fixtures for the command-line tests: the `memos` app bound to a fresh home in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The memos command bound to a fresh home."""
    return Cli(tmp_path / "home")
