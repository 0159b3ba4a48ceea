"""One G-Memory used by several GMemory objects and processes at once: no task record is lost or overwritten."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from memos import MemOS
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM
from memos.plugins.gmemory import GMemory
from memos.plugins.gmemory import memory as memory_module
from memos.plugins.gmemory import state as state_file
from memos.plugins.gmemory.insights import InsightStore

RULE = "Prepare every tool before starting, because missing tools stop the work."
WORKERS = 3
TASKS = 10


def _task(memory: GMemory, task: str, success: bool = True) -> dict[str, Any]:
    memory.on_task_start(task, ["solver"])
    memory.on_agent_message("solver", f"Doing: {task}", action="switch on", observation="It boils.")
    return memory.on_task_end(success)


def test_two_objects_on_one_memory_keep_both_records(mos: MemOS) -> None:
    first = GMemory(mos, name="shared")
    second = GMemory(mos, name="shared")  # opened before the first one stores anything
    assert _task(first, "boil water for tea")["record_id"] == "t1"
    # the second one reloads the stored state before adding to it: its record is t2, and t1 stays
    assert _task(second, "boil water for soup", success=False)["record_id"] == "t2"
    assert [r.id for r in first.records] == ["t1", "t2"]
    assert [r.task for r in GMemory(mos, name="shared").records] == ["boil water for tea", "boil water for soup"]
    assert sorted(p.name for p in first.folder.iterdir()) == [state_file.LOCK_FILE, state_file.FILE]


def test_an_evolution_made_from_a_changed_state_is_not_saved(mos: MemOS, monkeypatch: pytest.MonkeyPatch) -> None:
    def reply(messages: list[Message], tools: list[ToolSchema]) -> str:
        return "switch on"

    evolving = GMemory(mos, FunctionLLM(reply), name="race", start_at=1, every=1)
    other = GMemory(mos, name="race")

    def racing_finetune(store: Any, trial: InsightStore, ask: Any, **options: Any) -> SimpleNamespace:
        trial.new_rule(RULE, ["t1"])
        _task(other, "boil water for soup")  # another process ends a task while the model works
        return SimpleNamespace(as_dict=lambda: {"kind": "finetune"})

    monkeypatch.setattr(memory_module.evolve, "finetune", racing_finetune)
    report = _task(evolving, "boil water for tea")
    assert report["finetune"] == {
        "kind": "finetune",
        "skipped": "another process changed this memory meanwhile; the next trigger runs",
    }
    stored = GMemory(mos, name="race")
    assert [r.id for r in stored.records] == ["t1", "t2"]
    assert len(stored.insights) == 0 and len(evolving.insights) == 0  # the stale rule was dropped


WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from memos import MemOS
    from memos.plugins.gmemory import GMemory

    home, worker, tasks, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mos = MemOS.open(home, embedder="hash", auto_paging=False)
    memory = GMemory(mos, name="shared")
    # every worker has opened the memory (and read its empty state) before any task ends
    Path(home, f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(home).glob("ready-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.01)
    for n in range(tasks):
        task = f"worker {worker} task {n}: boil water"
        memory.on_task_start(task, ["solver"])
        memory.on_agent_message("solver", "Going.", action="switch on", observation="It boils.")
        memory.on_task_end(n % 3 != 0)
    mos.close()
    """
)


def test_processes_sharing_a_memory_lose_no_record(home: Path) -> None:
    MemOS.open(home, embedder="hash", auto_paging=False).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home), str(w), str(TASKS), str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for w in range(WORKERS)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output.decode(errors="replace")[-3000:]
    mos = MemOS.open(home, embedder="hash", auto_paging=False)
    try:
        records = GMemory(mos, name="shared").records
    finally:
        mos.close()
    assert sorted(int(r.id[1:]) for r in records) == list(range(1, WORKERS * TASKS + 1))
    assert sorted(r.task for r in records) == sorted(
        f"worker {w} task {n}: boil water" for w in range(WORKERS) for n in range(TASKS)
    )
