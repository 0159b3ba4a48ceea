"""examples/langgraph_app.py: the LangGraph app with MemosStore as its store runs end to end on a fresh home."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console

from memos import ManualClock, MemOS
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM
from memos.plugins.langgraph_store import MemosStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_app.py"


@pytest.fixture(scope="module")
def app() -> Iterator[ModuleType]:
    """The example loaded as a module (registered, so LangGraph can resolve its state's type hints)."""
    spec = importlib.util.spec_from_file_location("langgraph_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_main_runs_the_scripted_conversation(app: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """main() plays both threads with the scripted assistant; the second thread recalls what the first stored,
    and the home keeps the items as cubes, the updated one with both versions."""
    home = tmp_path / "home"
    assert app.main([str(home), "--embedder", "hash"]) == 0
    out = capsys.readouterr().out
    friday = out[out.index("thread friday") :]
    assert "recalled: The user has a greyhound called Pixel." in friday
    assert "stored: home: The user lives in Porto." in friday
    assert "the store's items, as memos cubes" in out
    with MemOS.open(home, embedder="hash") as mos:
        alice = mos.as_user("alice")
        store = MemosStore(alice)
        assert [i.key for i in store.search(("memories", "alice"))] == ["home", "pet", "work"]
        home_item = store.get(("memories", "alice"), "home")
        assert home_item is not None and home_item.value == {"text": "The user lives in Porto."}
        cube = store.cube(("memories", "alice"), "home")
        assert cube is not None and cube.header.version == 2
        assert [e["action"] for e in alice.audit(cube.id)] == ["update", "write"]


def test_the_prompt_carries_recalled_memories(app: ModuleType, mos: MemOS, clock: ManualClock) -> None:
    """With an LLM that answers only from its prompt, the second thread's answer comes from the store, and
    each thread sees its own transcript alone."""
    seen: list[list[Message]] = []

    def assistant(messages: list[Message], _tools: list[ToolSchema]) -> str:
        seen.append(messages)
        question = messages[-1].content
        if "Lisbon" in question:
            return "Welcome!\nREMEMBER pet: The user has a greyhound called Pixel."
        found = re.search(r"greyhound called (\w+)", messages[0].content)
        if "dog" in question:
            return f"Your dog is {found.group(1)}." if found else "I do not know."
        return "Noted."

    output = io.StringIO()
    store = app.converse(mos, FunctionLLM(assistant), Console(file=output, width=120))
    assert isinstance(store, MemosStore)
    text = output.getvalue()
    assert "assistant: Your dog is Pixel." in text
    # monday: system + first question, then system + question, answer, question; friday starts afresh
    assert [len(m) for m in seen] == [2, 4, 2, 4, 6]
    assert store.get(("memories", "alice"), "pet").value == {"text": "The user has a greyhound called Pixel."}
