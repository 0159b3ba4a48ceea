"""`memos doctor` on both backend pairs: the same damage is found, counted and repaired on each."""

from __future__ import annotations

from collections.abc import Callable

from support.damage import DAMAGE_COUNTS, assert_repaired_cubes_found, damage

from memos import MemOS, doctor

NS = "alice/chat"


def test_doctor_finds_and_repairs_the_same_damage_on_every_pair(open_home: Callable[..., MemOS]) -> None:
    mos = open_home()
    alice = mos.as_user("alice")
    ids = [alice.write(NS, f"turn {i} about the word{i} topic", provenance={"session_id": "s1"}).id for i in range(12)]
    alice.tick()
    assert doctor.check(mos, sample=None).ok

    damage(mos, ids)
    report = doctor.check(mos, sample=None)
    assert {p.kind: p.count for p in report.problems} == DAMAGE_COUNTS
    assert report.problem("lexical_stale").examples == [ids[9]]  # type: ignore[union-attr]

    fixed = doctor.repair(mos, sample=None)
    assert fixed.ok, fixed.problems
    assert fixed.actions["vectors_embedded"] == 3 and fixed.actions["vectors_deleted"] == 1
    assert fixed.actions["lexical_indexed"] == 2 and fixed.actions["lexical_deleted"] == 1
    assert doctor.check(mos, sample=None).ok
    assert_repaired_cubes_found(mos, NS, ids)
