"""`memos doctor`: a consistent home passes; each kind of damage is found, counted, repaired from the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.cli import Cli
from support.damage import DAMAGE_COUNTS, assert_repaired_cubes_found, damage

from memos import MemOS, doctor
from memos.cube import Kind, MemCube, Status
from memos.errors import UserError
from memos.ids import new_id
from memos.tiers import commit_derived, derived_cube

NS = "alice/chat"


def _fill(mos: MemOS, n: int = 12) -> list[str]:
    """Conversation turns, paged by a tick into segments, so derived plaintext cubes exist too."""
    alice = mos.as_user("alice")
    ids = [alice.write(NS, f"turn {i} about the word{i} topic", provenance={"session_id": "s1"}).id for i in range(n)]
    alice.tick()
    return ids


def _block(mos: MemOS, sources: list[str]) -> MemCube:
    """An activation cube with a stored blob, committed the way the activation tier commits one."""
    found = mos.catalog.get(sources)
    cube_id = new_id()
    ref = f"activation/{cube_id}.v1.safetensors"
    mos.blobs.write_file(ref, lambda path: path.write_bytes(b"kv block bytes"))
    cube = derived_cube(
        cube_id,
        Kind.activation,
        [found[i] for i in sources],
        user="alice",
        now=mos.clock.now(),
        blob=ref,
        labels={"backend": "kv", "bytes": "14"},
        tokens=10,
    )
    commit_derived(mos, "alice", cube, action="activate", detail={})
    # the tiers leave the commit's outbox entry to the next tick or open; drain it as they would
    mos.recover()
    return cube


def test_a_consistent_home_passes(mos: MemOS) -> None:
    ids = _fill(mos)
    _block(mos, ids[:3])
    report = doctor.check(mos, sample=None)
    assert report.ok, report.problems
    assert report.checked["cubes"] > len(ids)  # pages plus the segments and the block
    assert report.checked["vectors"] == report.checked["indexable_cubes"] == report.checked["vectors_verified"]
    assert report.checked["blobs"] == 1 and report.checked["lexical_rows"] >= len(ids)


def test_every_kind_of_damage_is_found_and_repaired(mos: MemOS) -> None:
    ids = _fill(mos)
    block = _block(mos, ids[:3])
    gone_blob = _block(mos, ids[3:5])
    damage(mos, ids)
    # blobs: one no cube names, a temporary file of an interrupted write, and a block whose blob is gone
    mos.blobs.write_file("activation/orphan.safetensors", lambda p: p.write_bytes(b"x"))
    (mos.blobs.root / "activation" / ".tmp-leftover").write_bytes(b"half")
    assert gone_blob.blob is not None
    mos.blobs.path(gone_blob.blob).unlink()

    report = doctor.check(mos, sample=None)
    counts = {p.kind: p.count for p in report.problems}
    assert counts == {**DAMAGE_COUNTS, "blob_orphan": 2, "blob_missing": 1}
    problem = report.problem("vector_missing")
    assert problem is not None and set(problem.examples) == set(ids[5:7])
    assert report.problem("vector_mismatch").examples == [ids[7]]  # type: ignore[union-attr]
    assert report.problem("blob_missing").examples == [gone_blob.id]  # type: ignore[union-attr]
    assert not report.ok

    fixed = doctor.repair(mos, sample=None)
    assert fixed.ok, fixed.problems
    assert {p.kind for p in fixed.found} == set(counts)
    assert fixed.actions["vectors_embedded"] == 3 and fixed.actions["vectors_deleted"] == 1
    assert fixed.actions["lexical_indexed"] == 2 and fixed.actions["lexical_deleted"] == 1
    assert fixed.actions["blobs_deleted"] == 2 and fixed.actions["derived_archived"] == 1
    assert doctor.check(mos, sample=None).ok
    assert_repaired_cubes_found(mos, NS, ids)
    # the block that lost its blob is archived (its sources stay); the healthy block is untouched
    states = mos.catalog.get([block.id, gone_blob.id, *ids[3:5]])
    assert states[gone_blob.id].status == Status.archived
    assert states[block.id].status == Status.active and mos.blobs.exists(block.blob or "")
    assert all(states[i].status != Status.deleted for i in ids[3:5])
    assert mos.blobs.refs() == [block.blob]
    assert mos.as_user("alice").audit(gone_blob.id, limit=1)[0]["actor"] == doctor.DOCTOR_ACTOR


def test_a_block_whose_sources_were_purged_is_archived(mos: MemOS) -> None:
    ids = _fill(mos)
    block = _block(mos, ids[:2])
    mos.as_user("alice").forget(ids[0], hard=True)
    report = doctor.check(mos)
    assert [(p.kind, p.count, p.examples) for p in report.problems] == [("source_missing", 1, [block.id])]
    fixed = doctor.repair(mos)
    assert fixed.ok and fixed.actions == {"derived_archived": 1}
    assert mos.catalog.get([block.id])[block.id].status == Status.archived
    assert mos.blobs.refs() == []  # an archived block's blob is freed


def test_a_wrong_embedders_vectors_are_found_by_sampling(mos: MemOS) -> None:
    ids = _fill(mos, 6)
    rng = np.random.default_rng(0)
    mos.vectors.upsert(ids, rng.normal(size=(len(ids), mos.embedder.dim)).astype(np.float32))
    assert doctor.check(mos, sample=0).ok  # presence alone cannot tell
    report = doctor.check(mos, sample=3)
    assert report.checked["vectors_verified"] == 3
    assert report.problem("vector_mismatch").count == 3  # type: ignore[union-attr]
    assert doctor.repair(mos, sample=None).ok  # every vector compared, every wrong one re-embedded


def test_a_corrupt_lexical_index_is_rebuilt(mos: MemOS) -> None:
    ids = _fill(mos, 6)
    with mos.catalog.engine.begin() as conn:
        # drop the index's own row-size records: FTS5's integrity check fails, queries still run
        conn.exec_driver_sql("DELETE FROM cubes_fts_docsize")
    report = doctor.check(mos)
    assert report.problem("lexical_corrupt") is not None
    fixed = doctor.repair(mos)
    assert fixed.ok, fixed.problems
    assert fixed.actions["lexical_rebuilt"] == fixed.checked["lexical_rows"]
    hits = mos.as_user("alice").recall(NS, "word3", k=3)
    assert hits[0].cube.id == ids[3]


def test_a_negative_sample_is_a_user_error(mos: MemOS) -> None:
    with pytest.raises(UserError, match="sample"):
        doctor.check(mos, sample=-1)


def test_the_command_exits_1_on_problems_and_0_once_repaired(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli("add", NS, "I moved to Lisbon in May 2023.")
    cli("add", NS, "My cat is called Pixel.")
    clean = cli("doctor")
    assert "ok: catalog, vectors, lexical index and blobs agree" in clean.stdout
    with MemOS.open(cli.home, embedder="hash") as mos:
        # one vector lost and one stray: the counts still agree, so opening the home does not notice
        mos.vectors.delete(mos.catalog.indexable_ids()[:1])
        mos.vectors.upsert(["00000000-0000-7000-8000-000000000002"], mos.embedder.embed(["stray"]))
    broken = cli("doctor", ok=False)
    assert broken.exit_code == 1
    assert "vector_missing: 1:" in broken.stdout and "memos doctor --repair" in broken.stdout
    as_json = json.loads(cli("doctor", "--json", ok=False).stdout)
    assert as_json["ok"] is False
    assert [(p["kind"], p["count"]) for p in as_json["problems"]] == [("vector_missing", 1), ("vector_orphan", 1)]
    repaired = json.loads(cli("doctor", "--repair", "--json").stdout)
    assert repaired["ok"] is True and repaired["actions"] == {"vectors_embedded": 1, "vectors_deleted": 1}
    assert [p["kind"] for p in repaired["found"]] == ["vector_missing", "vector_orphan"]
    assert "ok:" in cli("doctor").stdout
    assert cli("doctor", "--sample", "-1", ok=False).exit_code == 2
