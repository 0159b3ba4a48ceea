"""One writer process of the concurrency test: opens the home, writes and recalls, reports what was acknowledged.

Run as `python concurrency_worker.py HOME SETTINGS_JSON WORKER WRITES OUT_JSON [CUBE_ID]`; writes OUT_JSON with
the ids of every acknowledged write, each write's latency, and the first error (if any) as text. With CUBE_ID it
makes WRITES new versions of that one cube instead (retrying when another process got there first).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from memos import MemOS
from memos.errors import Conflict

NS = ("alice", "load")


def update_one(alice: object, cube_id: str, worker: int, writes: int, acknowledged: dict[str, str]) -> list[float]:
    """Make `writes` versions of one cube, each from the version just read; a Conflict means re-read and retry."""
    latencies = []
    for i in range(writes):
        start = time.monotonic()
        while True:
            current = alice.get(cube_id)  # type: ignore[attr-defined]
            try:
                new = alice.update(  # type: ignore[attr-defined]
                    cube_id, f"worker{worker} edit{i}", expected_version=current.header.version
                )
                break
            except Conflict:
                continue
        latencies.append(time.monotonic() - start)
        acknowledged[f"w{worker}-{i}"] = str(new.header.version)
    return latencies


def main(home: str, settings_json: str, worker: int, writes: int, out: str, cube_id: str | None = None) -> None:
    """Write `writes` cubes (singly and in batches of three) as alice, recalling each one back right after,
    and run `tick` every six writes."""
    acknowledged: dict[str, str] = {}
    latencies: list[float] = []
    error: str | None = None
    try:
        # small paging limits, so the workers' ticks page the shared namespace at the same time
        paging = {"stm_capacity": 6, "max_segments": 4}
        mos = MemOS.open(home, embedder="hash", auto_paging=False, paging=paging, **json.loads(settings_json))
        try:
            alice = mos.as_user("alice")
            if cube_id is not None:
                latencies = update_one(alice, cube_id, worker, writes, acknowledged)
                writes = 0
            i = 0
            while i < writes:
                batch = 3 if i % 4 == 1 and i + 3 <= writes else 1
                items = [
                    {
                        "text": f"worker{worker} note{i + j} token{worker}x{i + j}",
                        "provenance": {"external_id": f"w{worker}-{i + j}"},
                    }
                    for j in range(batch)
                ]
                start = time.monotonic()
                if batch == 1:
                    cubes = [alice.write(NS, items[0]["text"], provenance=items[0]["provenance"])]
                else:
                    cubes = alice.write_many(NS, items)
                latencies.append(time.monotonic() - start)
                for cube in cubes:
                    acknowledged[cube.header.provenance.external_id or ""] = cube.id
                # read your own write, by its one distinctive word
                # (among the best 3: once ticks page the namespace, a near-identical note may rank first)
                hits = alice.recall(NS, f"token{worker}x{i}", k=3)
                if cubes[0].id not in {h.cube.id for h in hits}:
                    raise AssertionError(f"worker {worker} did not recall its write {i}: {[h.cube.text for h in hits]}")
                i += batch
                if i % 6 < batch:
                    alice.tick()  # paging, expiry and index work, racing the other workers' ticks

        finally:
            mos.close()
    except Exception:
        error = traceback.format_exc()
    Path(out).write_text(json.dumps({"acknowledged": acknowledged, "latencies": latencies, "error": error}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], *sys.argv[6:7])
