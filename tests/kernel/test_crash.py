"""Kill -9 in the middle of a large ingest: every write that returned survives, catalog and index agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memos import MemOS
from memos.storage.catalog import CubeFilter

WRITER = textwrap.dedent(
    """
    import sys
    from memos import MemOS, WriteRequest

    mos = MemOS.open(sys.argv[1], embedder="hash")
    session = mos.as_user("alice")
    i = 0
    while True:
        batch = [WriteRequest(f"memory number {i + j} mentions token{i + j}") for j in range(int(sys.argv[2]))]
        cubes = session.write_many(("alice", "ingest"), batch)
        for j, cube in enumerate(cubes):
            print(cube.id, i + j, flush=True)
        i += len(cubes)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 16])
def test_kill_nine_mid_ingest_loses_no_returned_write(tmp_path: Path, batch: int) -> None:
    home = tmp_path / "home"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(home), str(batch)], stdout=subprocess.PIPE, text=True, env=env
    )
    returned: dict[str, int] = {}
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            cube_id, number = line.split()
            returned[cube_id] = int(number)
            if len(returned) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with MemOS.open(home, embedder="hash") as mos:
        alice = mos.as_user("alice")
        present = mos.catalog.get(list(returned))
        assert set(present) == set(returned)
        # catalog and vector index hold the same cubes, which may include writes that never returned
        assert mos.vectors.all_ids() == set(mos.catalog.indexable_ids())
        assert mos.catalog.pending_vector_sync() == []
        total = mos.catalog.count(CubeFilter())
        assert total >= len(returned)
        assert mos.vectors.existing(list(returned)) == set(returned)
        for cube_id, number in list(returned.items())[:: max(1, len(returned) // 25)]:
            hits = alice.recall(("alice", "ingest"), f"token{number}", k=3)
            # the best lexical match (segment summaries quoting it rank below); dense ranks of these
            # near-identical hashed texts are approximate (HNSW)
            lexical = sorted((h for h in hits if h.lexical_rank is not None), key=lambda h: h.lexical_rank or 0)
            assert lexical[0].cube.id == cube_id
