"""Shared fixtures: a fresh home per test, a manual clock, and a guard that fails any non-loopback connection."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos import ManualClock, MemOS

_real_connect = socket.socket.connect


def _is_loopback(address: object) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else None
    if host in ("localhost", "") or host is None:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_loopback(address):
        raise RuntimeError(f"test tried to reach the network ({address!r}); tests may only use loopback")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a developer's own MEMOS_* settings must never leak into a test
    import os

    for key in list(os.environ):
        if key.startswith("MEMOS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))


@pytest.fixture
def clock() -> ManualClock:
    """A clock that starts at 2024-01-01 UTC and moves only when told."""
    return ManualClock(datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A path for a fresh memos home."""
    return tmp_path / "home"


@pytest.fixture
def mos(home: Path, clock: ManualClock) -> Iterator[MemOS]:
    """A real home (SQLite catalog, embedded chromadb), hashing embedder, manual clock, paging only on tick."""
    m = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False)
    yield m
    m.close()
