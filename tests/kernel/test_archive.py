"""memos.archive: export/import round trips, copies under --into, and refusal of damaged or unsafe archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from memos import Conflict, ManualClock, MemOS, PermissionDenied, Session, Status, UserError
from memos.storage.catalog import CubeFilter

ALL = tuple(s.value for s in Status)
MEMBERS = ["manifest.json", "cubes.jsonl", "versions.jsonl"]


def _count(m: MemOS) -> int:
    return m.catalog.count(CubeFilter(statuses=ALL))


def _audit_len(m: MemOS) -> int:
    """Audit entries other than refusals (a refused call is audited as `denied` and writes nothing else)."""
    return sum(1 for e in m.catalog.audit_log(limit=100_000) if e["action"] != "denied")


def _populate(mos: MemOS, clock: ManualClock) -> dict[str, str]:
    """Cubes in alice/chat of every status, one with three versions, one built from two others."""
    alice = mos.as_user("alice")
    moved = alice.write(
        "alice/chat", "I moved to Paris in May", tags=["move"], labels={"type": "fact"}, event_time="2023-05-08T13:56"
    )
    clock.advance(minutes=1)
    alice.update(moved.id, "I moved to Lyon in May")
    clock.advance(minutes=1)
    alice.update(moved.id, tags=["move", "city"])
    dog = alice.write("alice/chat/pets", "My dog is called Biscuit", level="long")
    summary = alice.write(
        "alice/chat", "Alice lives in Lyon with Biscuit", provenance={"derived_from": [moved.id, dog.id]}
    )
    with mos.catalog.tx() as conn:
        built = summary.model_copy(update={"sources": [moved.id, dog.id]})
        mos.catalog.replace_cube(conn, built, new_version=False)
    gone = alice.write("alice/chat", "My old phone number was 555-0100")
    alice.forget(gone.id)
    brief = alice.write("alice/chat", "Dentist appointment on Friday", ttl=60)
    clock.advance(minutes=5)
    assert alice.tick()["expired"] == 1
    purged = alice.write("alice/chat", "a secret I purged")
    alice.forget(purged.id, hard=True)
    outside = alice.write("alice/work", "Quarterly report due Monday")
    return {
        "moved": moved.id,
        "dog": dog.id,
        "summary": summary.id,
        "gone": gone.id,
        "brief": brief.id,
        "purged": purged.id,
        "outside": outside.id,
    }


EXPORTED = ("moved", "dog", "summary", "gone", "brief")


@pytest.fixture
def ids(mos: MemOS, clock: ManualClock) -> dict[str, str]:
    """The populated home's cube ids by role."""
    return _populate(mos, clock)


@pytest.fixture
def alice(mos: MemOS, ids: dict[str, str]) -> Session:
    """Alice, after the home is populated."""
    return mos.as_user("alice")


@pytest.fixture
def archive(alice: Session, tmp_path: Path) -> Path:
    """alice/chat exported to a file."""
    path = tmp_path / "exports" / "chat.tar.gz"
    path.parent.mkdir()
    alice.export("alice/chat", path)
    return path


@pytest.fixture
def fresh(tmp_path: Path, clock: ManualClock) -> Iterator[MemOS]:
    """A second, empty home."""
    m = MemOS.open(tmp_path / "fresh-home", embedder="hash", clock=clock)
    yield m
    m.close()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for m in tar:
            handle = tar.extractfile(m)
            assert handle is not None
            out[m.name] = handle.read()
        return out


def _pack(path: Path, files: dict[str, bytes], extra: Sequence[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """Write a gzip tar of the given members (regular files first, then the crafted extras)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _with_manifest_fixed(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same members with the manifest's checksums and counts recomputed, as a careful forger would."""
    manifest = json.loads(files["manifest.json"])
    for name in ("cubes.jsonl", "versions.jsonl"):
        manifest["files"][name] = {"sha256": hashlib.sha256(files[name]).hexdigest(), "bytes": len(files[name])}
    manifest["num_cubes"] = files["cubes.jsonl"].count(b"\n")
    manifest["num_versions"] = files["versions.jsonl"].count(b"\n")
    return {**files, "manifest.json": json.dumps(manifest).encode()}


# ---- export ------------------------------------------------------------------------------------


def test_export_writes_exactly_three_members_with_a_checked_manifest(
    mos: MemOS, alice: Session, ids: dict[str, str], tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "chat.tar.gz"
    summary = alice.export("alice/chat", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert summary == {
        "namespace": "alice/chat",
        "num_cubes": 5,
        "num_versions": 7,
        "path": str(path),
        "sha256": digest,
    }
    with tarfile.open(path, "r:gz") as tar:
        assert tar.getnames() == MEMBERS
    files = _members(path)
    manifest = json.loads(files["manifest.json"])
    assert manifest == {
        "format": "memos-export",
        "format_version": 1,
        "namespace": ["alice", "chat"],
        "exported_at": clock.now().isoformat(),
        "exported_by": "alice",
        "embedder": mos.embedder.id,
        "num_cubes": 5,
        "num_versions": 7,
        "files": {
            name: {"sha256": hashlib.sha256(files[name]).hexdigest(), "bytes": len(files[name])}
            for name in ("cubes.jsonl", "versions.jsonl")
        },
    }
    exported = [json.loads(line) for line in files["cubes.jsonl"].splitlines()]
    assert sorted(c["id"] for c in exported) == sorted(ids[k] for k in EXPORTED)
    by_id = {c["id"]: c for c in exported}
    assert by_id[ids["gone"]]["header"]["lifecycle"]["status"] == "deleted"
    assert by_id[ids["brief"]]["header"]["lifecycle"]["status"] == "expired"
    versions = [json.loads(line) for line in files["versions.jsonl"].splitlines()]
    assert [v["header"]["version"] for v in versions if v["id"] == ids["moved"]] == [1, 2, 3]
    entry = mos.catalog.audit_log(limit=1)[0]
    assert (entry["action"], entry["actor"], entry["ns"]) == ("export", "alice", "alice/chat")
    assert entry["detail"]["sha256"] == digest
    assert [n for n in os.listdir(tmp_path) if n.endswith(".partial")] == []


def test_export_refuses_to_overwrite(alice: Session, archive: Path) -> None:
    before = archive.read_bytes()
    with pytest.raises(UserError, match="already exists: remove it or pick another file name"):
        alice.export("alice/chat", archive)
    assert archive.read_bytes() == before
    assert os.listdir(archive.parent) == [archive.name]


def test_failed_export_leaves_no_file_behind(alice: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_addfile = tarfile.TarFile.addfile
    calls: list[str] = []

    def failing_addfile(self: tarfile.TarFile, info: tarfile.TarInfo, fileobj: Any = None) -> None:
        calls.append(info.name)
        if len(calls) == 2:
            raise OSError("disk full")
        real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UserError, match=r"cannot write .*chat\.tar\.gz: disk full"):
        alice.export("alice/chat", target / "chat.tar.gz")
    assert os.listdir(target) == []


def test_bob_cannot_export_alice_namespace_until_shared(mos: MemOS, alice: Session, tmp_path: Path) -> None:
    bob = mos.as_user("bob")
    path = tmp_path / "bob.tar.gz"
    with pytest.raises(PermissionDenied, match="bob may not read alice/chat"):
        bob.export("alice/chat", path)
    assert not path.exists()
    alice.share("alice/chat", "bob")
    summary = bob.export("alice/chat", path)
    assert (summary["num_cubes"], summary["num_versions"]) == (5, 7)
    assert json.loads(_members(path)["manifest.json"])["exported_by"] == "bob"
    entry = mos.catalog.audit_log(limit=1)[0]
    assert (entry["action"], entry["actor"]) == ("export", "bob")


# ---- import: round trips -----------------------------------------------------------------------


def test_round_trip_into_a_fresh_home_keeps_ids_headers_status_and_history(
    mos: MemOS, ids: dict[str, str], archive: Path, fresh: MemOS
) -> None:
    exported = [ids[k] for k in EXPORTED]
    original = mos.catalog.get(exported)
    summary = fresh.as_user("alice").import_(archive)
    assert summary == {
        "namespace": "alice/chat",
        "from_namespace": "alice/chat",
        "num_cubes": 5,
        "num_versions": 7,
        "path": str(archive),
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "ids": summary["ids"],
        "indexed": True,
    }
    assert sorted(summary["ids"]) == sorted(exported)
    assert _count(fresh) == 5
    assert fresh.catalog.get(exported) == original
    for cid in exported:
        assert fresh.catalog.versions(cid) == mos.catalog.versions(cid)
    moved = fresh.catalog.get([ids["moved"]])[ids["moved"]]
    assert moved.content == "I moved to Lyon in May"
    assert moved.header.tags == ["move", "city"]
    assert moved.header.labels == {"type": "fact"}
    assert (moved.header.version, moved.header.previous) == (3, 2)
    assert [v.content for v in fresh.catalog.versions(ids["moved"])] == [
        "I moved to Paris in May",
        "I moved to Lyon in May",
        "I moved to Lyon in May",
    ]
    assert fresh.catalog.get([ids["gone"]])[ids["gone"]].status == Status.deleted
    assert fresh.catalog.get([ids["brief"]])[ids["brief"]].status == Status.expired
    assert fresh.vectors.all_ids() == {ids["moved"], ids["dog"], ids["summary"]}
    assert fresh.catalog.pending_vector_sync() == []
    alice2 = fresh.as_user("alice")
    hits = {h.cube.id for h in alice2.recall("alice", "where did I move? Lyon")}
    assert {ids["moved"], ids["summary"]} <= hits
    assert not hits & {ids["gone"], ids["brief"]}
    assert [h.cube.id for h in alice2.recall("alice/chat/pets", "Biscuit")] == [ids["dog"]]
    entry = alice2.audit(ids["moved"])[0]
    assert (entry["action"], entry["actor"], entry["ns"]) == ("import", "alice", "alice/chat")
    assert entry["detail"]["versions"] == 3


def test_import_into_gives_new_ids_remapped_namespaces_and_references(
    mos: MemOS, alice: Session, ids: dict[str, str], archive: Path
) -> None:
    before = _count(mos)
    first = alice.import_(archive, into="alice/copy")
    second = alice.import_(archive, into="alice/copy")
    assert (first["namespace"], first["from_namespace"]) == ("alice/copy", "alice/chat")
    assert (first["num_cubes"], first["num_versions"]) == (5, 7)
    assert _count(mos) == before + 10
    originals = set(ids.values())
    assert len(set(first["ids"]) | set(second["ids"]) | originals) == 10 + len(originals)
    dog_copies = []
    for summary in (first, second):
        copies = mos.catalog.get(summary["ids"])
        new_of = {alice.audit(cid)[0]["detail"]["from_id"]: cid for cid in summary["ids"]}
        assert set(new_of) == {ids[k] for k in EXPORTED}
        dog = copies[new_of[ids["dog"]]]
        dog_copies.append(dog.id)
        assert dog.namespace == ("alice", "copy", "pets")
        assert dog.content == "My dog is called Biscuit"
        built = copies[new_of[ids["summary"]]]
        assert built.namespace == ("alice", "copy")
        assert built.sources == [new_of[ids["moved"]], new_of[ids["dog"]]]
        assert built.header.provenance.derived_from == [new_of[ids["moved"]], new_of[ids["dog"]]]
        assert copies[new_of[ids["gone"]]].status == Status.deleted
        assert copies[new_of[ids["brief"]]].status == Status.expired
        history = mos.catalog.versions(new_of[ids["moved"]])
        assert [(v.id, v.namespace, v.header.version) for v in history] == [
            (new_of[ids["moved"]], ("alice", "copy"), n) for n in (1, 2, 3)
        ]
        assert all(c.header.acl.owner == "alice" for c in copies.values())
    hits = [h.cube.id for h in alice.recall("alice/copy/pets", "Biscuit")]
    assert sorted(hits) == sorted(dog_copies)
    assert mos.catalog.get([ids["dog"]])[ids["dog"]].namespace == ("alice", "chat", "pets")


def test_import_into_needs_write_on_the_target(mos: MemOS, ids: dict[str, str], archive: Path) -> None:
    bob = mos.as_user("bob")
    before, audit = _count(mos), _audit_len(mos)
    with pytest.raises(PermissionDenied, match="bob may not write alice/stolen"):
        bob.import_(archive, into="alice/stolen")
    assert (_count(mos), _audit_len(mos)) == (before, audit)
    summary = bob.import_(archive, into="bob/from-alice")
    copies = mos.catalog.get(summary["ids"])
    assert {c.header.acl.owner for c in copies.values()} == {"bob"}
    assert {c.header.provenance.actor for c in copies.values()} == {"alice"}


def test_importing_the_same_archive_twice_is_a_conflict(archive: Path, fresh: MemOS) -> None:
    alice = fresh.as_user("alice")
    alice.import_(archive)
    before, audit, vectors = _count(fresh), _audit_len(fresh), fresh.vectors.all_ids()
    with pytest.raises(Conflict, match=r"5 of the 5 cubes in .* already exist .* `--into NAMESPACE`"):
        alice.import_(archive)
    assert (_count(fresh), _audit_len(fresh), fresh.vectors.all_ids()) == (before, audit, vectors)


def test_importing_into_the_home_it_came_from_is_a_conflict(mos: MemOS, alice: Session, archive: Path) -> None:
    before, audit = _count(mos), _audit_len(mos)
    with pytest.raises(Conflict, match="5 of the 5 cubes"):
        alice.import_(archive)
    assert (_count(mos), _audit_len(mos)) == (before, audit)


def test_an_empty_namespace_round_trips(mos: MemOS, tmp_path: Path, fresh: MemOS) -> None:
    path = tmp_path / "empty.tar.gz"
    summary = mos.as_user("carol").export("carol/nothing", path)
    assert (summary["num_cubes"], summary["num_versions"]) == (0, 0)
    assert fresh.as_user("carol").import_(path)["num_cubes"] == 0
    assert _count(fresh) == 0


# ---- import: damaged and hostile archives ------------------------------------------------------


def _assert_untouched(m: MemOS, count: int, audit: int) -> None:
    assert (_count(m), _audit_len(m), m.catalog.pending_vector_sync()) == (count, audit, [])


def test_missing_archive(fresh: MemOS, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no archive at"):
        fresh.as_user("alice").import_(tmp_path / "nope.tar.gz")


@pytest.mark.parametrize("damage", ["half", "text", "gzip-of-junk", "empty"])
def test_truncated_or_foreign_file_is_refused(archive: Path, fresh: MemOS, tmp_path: Path, damage: str) -> None:
    import gzip

    data = archive.read_bytes()
    broken = {
        "half": data[: len(data) // 2],
        "text": b"hello, not an archive\n",
        "gzip-of-junk": gzip.compress(b"x" * 5000),
        "empty": b"",
    }[damage]
    path = tmp_path / "broken.tar.gz"
    path.write_bytes(broken)
    audit = _audit_len(fresh)
    with pytest.raises(UserError, match=r"archive .*broken\.tar\.gz is truncated or not a memos export"):
        fresh.as_user("alice").import_(path)
    _assert_untouched(fresh, 0, audit)


def test_tampered_archive_fails_its_checksum(archive: Path, fresh: MemOS, tmp_path: Path) -> None:
    files = _members(archive)
    assert b"Biscuit" in files["cubes.jsonl"]
    files["cubes.jsonl"] = files["cubes.jsonl"].replace(b"Biscuit", b"Biscuiu", 1)
    path = _pack(tmp_path / "tampered.tar.gz", files)
    audit = _audit_len(fresh)
    with pytest.raises(UserError, match=r"checksum mismatch for cubes\.jsonl .* the archive was modified or damaged"):
        fresh.as_user("alice").import_(path)
    _assert_untouched(fresh, 0, audit)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("dotdot", "has a '..' path component"),
        ("absolute", "has an absolute path"),
        ("symlink", "is a link"),
        ("hardlink", "is a link"),
        ("device", "is a device or pipe"),
        ("directory", "is not a regular file"),
        ("unexpected", "is not part of a memos export"),
        ("duplicate", "appears twice"),
    ],
)
def test_unsafe_members_are_refused(archive: Path, fresh: MemOS, tmp_path: Path, extra: str, reason: str) -> None:
    outside = tmp_path / "evil"
    files = _members(archive)
    crafted = {
        "dotdot": (_member("../evil"), b"pwned"),
        "absolute": (_member(str(outside)), b"pwned"),
        "symlink": (_member("evil", tarfile.SYMTYPE, str(outside)), b""),
        "hardlink": (_member("evil", tarfile.LNKTYPE, "manifest.json"), b""),
        "device": (_member("evil", tarfile.CHRTYPE), b""),
        "directory": (_member("evil", tarfile.DIRTYPE), b""),
        "unexpected": (_member("README"), b"hi"),
        "duplicate": (_member("cubes.jsonl"), files["cubes.jsonl"]),
    }[extra]
    path = _pack(tmp_path / "crafted.tar.gz", files, [crafted])
    audit = _audit_len(fresh)
    with pytest.raises(UserError, match=f"not a safe memos export: member .* {reason}"):
        fresh.as_user("alice").import_(path)
    _assert_untouched(fresh, 0, audit)
    assert not outside.exists()
    assert not (tmp_path.parent / "evil").exists()
    assert not (Path.cwd().parent / "evil").exists()


def test_a_data_member_replaced_by_a_symlink_is_refused(archive: Path, fresh: MemOS, tmp_path: Path) -> None:
    files = _members(archive)
    del files["cubes.jsonl"]
    path = _pack(tmp_path / "link.tar.gz", files, [(_member("cubes.jsonl", tarfile.SYMTYPE, "/etc/passwd"), b"")])
    with pytest.raises(UserError, match=r"member 'cubes\.jsonl' is a link"):
        fresh.as_user("alice").import_(path)
    assert _count(fresh) == 0


def test_a_missing_member_is_refused(archive: Path, fresh: MemOS, tmp_path: Path) -> None:
    files = _members(archive)
    del files["versions.jsonl"]
    path = _pack(tmp_path / "partial.tar.gz", files)
    with pytest.raises(UserError, match=r"truncated or not a memos export: it lacks versions\.jsonl"):
        fresh.as_user("alice").import_(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": "not json', "is not a valid cube"),
        (b'{"id": "x"}', "is not a valid cube .*namespace"),
        (b"", "is not a valid cube"),
    ],
)
def test_a_malformed_line_is_reported_with_its_number(
    archive: Path, fresh: MemOS, tmp_path: Path, line: bytes, message: str
) -> None:
    files = _members(archive)
    lines = files["cubes.jsonl"].splitlines(keepends=True)
    lines[2] = line + b"\n"
    files["cubes.jsonl"] = b"".join(lines)
    path = _pack(tmp_path / "malformed.tar.gz", _with_manifest_fixed(files))
    audit = _audit_len(fresh)
    with pytest.raises(UserError, match=rf"cubes\.jsonl line 3 {message}"):
        fresh.as_user("alice").import_(path)
    _assert_untouched(fresh, 0, audit)


def test_a_version_of_a_cube_not_in_the_archive_is_refused(archive: Path, fresh: MemOS, tmp_path: Path) -> None:
    files = _members(archive)
    cubes = files["cubes.jsonl"].splitlines(keepends=True)
    dropped = json.loads(cubes.pop(0))["id"]
    files["cubes.jsonl"] = b"".join(cubes)
    path = _pack(tmp_path / "orphan.tar.gz", _with_manifest_fixed(files))
    with pytest.raises(UserError, match=rf"versions\.jsonl line 1 is a version of cube {dropped}, not in cubes\.jsonl"):
        fresh.as_user("alice").import_(path)
    assert _count(fresh) == 0


def test_cubes_outside_the_manifest_namespace_are_refused(archive: Path, fresh: MemOS, tmp_path: Path) -> None:
    files = _members(archive)
    manifest = json.loads(files["manifest.json"])
    manifest["namespace"] = ["alice", "chat", "pets"]
    files["manifest.json"] = json.dumps(manifest).encode()
    path = _pack(tmp_path / "outside.tar.gz", files)
    with pytest.raises(UserError, match=r"cubes\.jsonl line 1 is in alice/chat, outside the exported namespace"):
        fresh.as_user("alice").import_(path)
    assert _count(fresh) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "has format version 2; this memos reads version 1"),
        ({"format": "tarball"}, "is not a memos export"),
        ({"files": {}}, "lacks namespace, counts or file checksums"),
        ({"num_cubes": 4}, "holds a different number of cubes or versions than its manifest says"),
    ],
)
def test_a_bad_manifest_is_refused(
    archive: Path, fresh: MemOS, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    files = _members(archive)
    files["manifest.json"] = json.dumps({**json.loads(files["manifest.json"]), **change}).encode()
    path = _pack(tmp_path / "manifest.tar.gz", files)
    with pytest.raises(UserError, match=message):
        fresh.as_user("alice").import_(path)
    assert _count(fresh) == 0


def test_import_into_too_deep_a_namespace_is_refused(alice: Session, mos: MemOS, archive: Path) -> None:
    before = _count(mos)
    with pytest.raises(UserError, match=r"cannot import .* into alice/b/c/d/e/f/g/h: a namespace has at most 8"):
        alice.import_(archive, into="alice/b/c/d/e/f/g/h")
    assert _count(mos) == before
