"""Four processes writing and recalling in one home at once, on both backend pairs.

Every acknowledged write must be stored exactly once afterwards (catalog and vector index), no process may
raise, none may hang (each is bounded by a timeout), and each write's wait stays bounded; the longest
write latency seen is printed and recorded as a test property.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from memos import MemOS
from memos.storage.catalog import CubeFilter

if TYPE_CHECKING:
    from conftest import Backend

WORKERS = 4
WRITES = 24
#: seconds all workers together may take before the test fails as hung
DEADLINE_S = 120.0
#: the longest a single acknowledged write may wait on the others
MAX_WRITE_S = 20.0
WORKER = Path(__file__).with_name("concurrency_worker.py")


def _run_workers(home: Path, tmp_path: Path, backend: Backend, writes: int, *extra: str) -> list[dict[str, Any]]:
    """Start WORKERS worker processes at once; fail on any hang, crash or error; return their reports."""
    settings = json.dumps(backend.overrides)
    procs = []
    for w in range(WORKERS):
        out = tmp_path / f"worker{w}.json"
        args = [sys.executable, str(WORKER), str(home), settings, str(w), str(writes), str(out), *extra]
        procs.append((subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out))
    deadline = time.monotonic() + DEADLINE_S
    hung = []
    for proc, _ in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            hung.append(proc.pid)
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert not hung, f"worker processes {hung} did not finish within {DEADLINE_S} s (deadlock or stall)"
    results = []
    for proc, out in procs:
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        assert proc.returncode == 0 and out.exists(), f"worker exited with {proc.returncode}: {output[-3000:]}"
        result = json.loads(out.read_text())
        assert result["error"] is None, result["error"]
        results.append(result)
    return results


def test_four_processes_update_one_cube(
    open_home: Callable[..., MemOS], home: Path, tmp_path: Path, backend: Backend
) -> None:
    """4 processes make versions of the same cube at once: no version is lost or written twice (others retry)."""
    mos = open_home()
    cube = mos.as_user("alice").write(("alice", "load"), "the shared note")
    mos.close()
    edits = 5
    results = _run_workers(home, tmp_path, backend, edits, cube.id)
    versions = sorted(int(v) for r in results for v in r["acknowledged"].values())
    assert versions == list(range(2, 2 + WORKERS * edits))
    again = open_home()
    history = again.as_user("alice").history(cube.id)
    assert [v.header.version for v in history] == list(range(1, 2 + WORKERS * edits))
    assert sorted(v.text for v in history[1:]) == sorted(
        f"worker{w} edit{i}" for w in range(WORKERS) for i in range(edits)
    )
    assert again.as_user("alice").get(cube.id).text == history[-1].text


def test_four_processes_write_and_recall(
    home: Path, tmp_path: Path, backend: Backend, record_property: pytest.RecordProperty
) -> None:
    """4 processes open a fresh home together, write (single and batched) and recall; every write lands once."""
    results = _run_workers(home, tmp_path, backend, WRITES)
    acknowledged = {ext: cid for r in results for ext, cid in r["acknowledged"].items()}
    assert len(acknowledged) == WORKERS * WRITES
    longest = max(max(r["latencies"]) for r in results)
    record_property("max_write_latency_s", round(longest, 3))
    print(f"\n[{backend.pair}] {WORKERS} processes x {WRITES} writes: max write latency {longest:.3f} s")
    assert longest < MAX_WRITE_S

    mos = MemOS.open(home, embedder="hash", auto_paging=False, **backend.overrides)
    try:
        everything = mos.catalog.select(CubeFilter(prefixes=["alice/load"], statuses=("active", "archived")))
        # the workers' writes; the rest are segments and knowledge their ticks made from them
        stored = [c for c in everything if c.header.provenance.external_id is not None]
        derived = [c for c in everything if c.header.provenance.external_id is None]
        per_external = Counter(c.header.provenance.external_id for c in stored)
        assert {ext for ext, n in per_external.items() if n != 1} == set()
        assert {c.header.provenance.external_id: c.id for c in stored} == acknowledged
        assert all(c.content for c in stored)  # paging moved pages between levels, never emptied or lost one
        assert mos.catalog.count_pending_vector_sync() == 0
        assert mos.vectors.existing(list(acknowledged.values())) == set(acknowledged.values())
        assert mos.vectors.count() == len(acknowledged) + len(derived)
        writes = [e for e in mos.catalog.audit_log(limit=10_000) if e["action"] == "write"]
        assert Counter(e["cube_id"] for e in writes) == Counter(acknowledged.values())
        assert [u for u, _ in mos.users()] == ["alice"]
    finally:
        mos.close()
