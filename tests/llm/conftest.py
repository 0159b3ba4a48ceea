"""Fixtures of the LLM tests: a fake OpenAI-compatible server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.fake_openai import FakeOpenAIServer


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started FakeOpenAIServer on 127.0.0.1, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server
