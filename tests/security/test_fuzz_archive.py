"""Hostile-input fuzzing of archive import (memos.archive): malformed tar and gzip, unsafe members, forged
manifests and cubes, huge declared sizes. An import either succeeds or raises one clear UserError line; nothing
is ever written outside the home, and oversized archives are refused before they are read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_support import FUZZ, NASTY_STRINGS, Count, json_scalars, json_values, mutated, outcome

from memos import ManualClock, MemOS, Session
from memos.archive import CUBES, MANIFEST, MAX_ARCHIVE_BYTES, MEMBERS, VERSIONS
from memos.errors import UserError

_NAMES = st.sampled_from(
    (
        *MEMBERS,
        "/etc/passwd",
        "/manifest.json",
        "../manifest.json",
        "a/../../cubes.jsonl",
        "./manifest.json",
        "C:\\x",
        "\\\\server\\share",
        "x" * 200,
        "",
        "dir/",
        "manifest.json\x00.txt",
    )
)
_TYPES = st.sampled_from(
    (
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.LNKTYPE,
        tarfile.SYMTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.DIRTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        tarfile.GNUTYPE_SPARSE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.XHDTYPE,
        b"Z",
    )
)
_SIZES = st.sampled_from((None, 0, 1, 511, 1 << 20, (1 << 30) + 1, 1 << 40, 1 << 62))


@pytest.fixture
def alice(tmp_path: Path, clock: ManualClock) -> Iterator[Session]:
    """A session on a home inside tmp_path/home with two cubes (one with two versions) in alice/chat."""
    mos = MemOS.open(tmp_path / "home", embedder="hash", clock=clock, auto_paging=False)
    session = mos.as_user("alice")
    cube = session.write("alice/chat", "I moved to Paris in May", tags=["move"])
    session.update(cube.id, "I moved to Lyon in May")
    session.write("alice/chat/pets", "My dog is called Biscuit")
    yield session
    mos.close()


def _members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _pack(members: list[tuple[tarfile.TarInfo, bytes]], *, fmt: int = tarfile.PAX_FORMAT, end: bool = True) -> bytes:
    """A tar stream written header by header, so that declared sizes may lie about the data that follows."""
    out = io.BytesIO()
    for info, data in members:
        try:
            out.write(info.tobuf(fmt, "utf-8", "surrogateescape"))
        except ValueError:
            out.write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        out.write(data + b"\0" * (-len(data) % 512))
    if end:
        out.write(b"\0" * 1024)
    return out.getvalue()


def _archive(members: dict[str, bytes]) -> bytes:
    infos = []
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        infos.append((info, data))
    return gzip.compress(_pack(infos))


def _resealed(members: dict[str, bytes]) -> dict[str, bytes]:
    """The members with the manifest's checksums and sizes made to match the (changed) data files."""
    try:
        manifest = json.loads(members[MANIFEST])
        for name in (CUBES, VERSIONS):
            data = members[name]
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    except (ValueError, KeyError, TypeError):
        return members
    return {**members, MANIFEST: json.dumps(manifest).encode()}


@st.composite
def _hostile_tar(draw: st.DrawFn) -> bytes:
    """A tar (gzipped or not, maybe cut short) of members with hostile names, types, sizes and links."""
    members = []
    for _ in range(draw(st.integers(0, 4))):
        info = tarfile.TarInfo(draw(_NAMES))
        info.type = draw(_TYPES)
        info.linkname = draw(st.sampled_from(("", "/etc/passwd", "../../outside", "manifest.json")))
        info.mode = draw(st.sampled_from((0o644, 0o4755, 0o777)))
        data = draw(st.binary(max_size=64) | st.sampled_from((b"{}", b'{"format": "memos-export"}', b"\n" * 10)))
        declared = draw(_SIZES)
        info.size = len(data) if declared is None else declared
        members.append((info, data))
    raw = _pack(members, fmt=draw(st.sampled_from((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT))), end=draw(st.booleans()))
    data = draw(st.sampled_from((gzip.compress(raw), raw, gzip.compress(raw)[:-9], b"\x1f\x8b" + raw[:40])))
    return draw(st.just(data) | st.binary(max_size=100))


@st.composite
def _forged(draw: st.DrawFn, members: dict[str, bytes]) -> dict[str, bytes]:
    """A real export's members with JSON-level edits to the manifest or the cube lines, resealed or not."""
    out = dict(members)
    name = draw(st.sampled_from(MEMBERS))
    text = out[name].decode()
    if name == MANIFEST:
        doc = json.loads(text)
        key = draw(st.sampled_from([*sorted(doc), "extra"]))
        doc[key] = draw(
            json_values | st.sampled_from((["..", "x"], ["/"], ["alice", "chat"], "a/b", 10**400 // 10**380))
        )
        out[name] = json.dumps(doc).encode()
    else:
        lines = text.splitlines()
        if lines:
            at = draw(st.integers(0, len(lines) - 1))
            cube = json.loads(lines[at])
            path = draw(st.sampled_from((("id",), ("content",), ("namespace",), ("sources",), ("header", "tags"))))
            path = draw(st.just(path) | st.sampled_from((("header", "labels"), ("header", "version"), ("header",))))
            target = cube
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = draw(json_values | json_scalars | st.sampled_from(NASTY_STRINGS))
            lines[at] = json.dumps(cube)
        lines = draw(st.just(lines) | st.lists(mutated(st.sampled_from(lines or ["{}"])), max_size=3))
        out[name] = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    return _resealed(out) if draw(st.booleans()) else out


def _outside(tmp_path: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if "home" not in p.relative_to(tmp_path).parts}


def _import(alice: Session, path: Path, into: str | None, tmp_path: Path) -> object:
    """Import, then check that nothing appeared outside the home but the archive itself."""
    before = _outside(tmp_path)
    result = outcome(alice.import_, path, into=into)
    assert _outside(tmp_path) == before
    if not isinstance(result, UserError):
        assert isinstance(result, dict) and result["num_cubes"] >= 0
    return result


def test_hostile_tars_are_refused_cleanly(
    alice: Session, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    count = Count()
    path = tmp_path / "in" / "hostile.tar.gz"
    path.parent.mkdir()

    @FUZZ
    @given(data=_hostile_tar())
    def check(data: bytes) -> None:
        path.write_bytes(data)
        assert isinstance(_import(alice, path, None, tmp_path), UserError)
        count.ok()

    check()
    record_property("examples", count.passed)
    assert count.passed >= 100


def test_forged_exports_import_or_are_refused(
    alice: Session, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    count = Count()
    export = tmp_path / "in" / "export.tar.gz"
    export.parent.mkdir()
    alice.export("alice/chat", export)
    members = _members_of(export)
    path = tmp_path / "in" / "forged.tar.gz"

    @FUZZ
    @given(forged=_forged(members), into=st.sampled_from((None, "alice/copy", "alice/chat")), flip=st.integers(-1, 400))
    def check(forged: dict[str, bytes], into: str | None, flip: int) -> None:
        data = bytearray(_archive(forged))
        if 0 <= flip < len(data):
            data[flip] ^= 0x41  # a damaged byte somewhere in the gzip stream
        path.write_bytes(bytes(data))
        _import(alice, path, into, tmp_path)
        count.ok()

    check()
    record_property("examples", count.passed)
    assert count.passed >= 100


@pytest.mark.parametrize(
    ("kind", "name", "linkname", "reason"),
    [
        (tarfile.SYMTYPE, "manifest.json", "/etc/passwd", "is a link"),
        (tarfile.LNKTYPE, "cubes.jsonl", "../../outside", "is a link"),
        (tarfile.CHRTYPE, "versions.jsonl", "", "is a device or pipe"),
        (tarfile.FIFOTYPE, "versions.jsonl", "", "is a device or pipe"),
        (tarfile.REGTYPE, "/tmp/evil", "", "has an absolute path"),
        (tarfile.REGTYPE, "../evil", "", "'..'"),
        (tarfile.DIRTYPE, "dir", "", "is not a regular file"),
        (tarfile.GNUTYPE_SPARSE, "cubes.jsonl", "", "is a sparse file"),
    ],
)
def test_unsafe_members_are_named_and_refused(
    alice: Session, tmp_path: Path, kind: bytes, name: str, linkname: str, reason: str
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    path = tmp_path / "unsafe.tar.gz"
    path.write_bytes(gzip.compress(_pack([(info, b"")], fmt=tarfile.GNU_FORMAT)))
    error = _import(alice, path, None, tmp_path)
    assert isinstance(error, UserError) and "not a safe memos export" in str(error) and reason in str(error)


@pytest.mark.parametrize("size", [(1 << 30) + 1, 1 << 40])
def test_huge_declared_member_sizes_are_refused_unread(alice: Session, tmp_path: Path, size: int) -> None:
    info = tarfile.TarInfo(CUBES)
    info.size = size
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(gzip.compress(_pack([(info, b"x" * 100)], fmt=tarfile.GNU_FORMAT)))
    start = time.perf_counter()
    error = _import(alice, path, None, tmp_path)
    assert isinstance(error, UserError) and "over the limit" in str(error)
    assert time.perf_counter() - start < 2.0


def test_oversized_archive_file_is_refused_before_it_is_read(alice: Session, tmp_path: Path) -> None:
    path = tmp_path / "big.tar.gz"
    with open(path, "wb") as handle:
        handle.truncate(MAX_ARCHIVE_BYTES + 1)  # sparse: reading it would take seconds and gigabytes
    start = time.perf_counter()
    error = _import(alice, path, None, tmp_path)
    assert isinstance(error, UserError) and "over this home's limit" in str(error)
    assert time.perf_counter() - start < 1.0


def test_decompression_bombs_stop_at_the_limit(tmp_path: Path, clock: ManualClock) -> None:
    mos = MemOS.open(tmp_path / "home", embedder="hash", clock=clock, auto_paging=False, max_archive_bytes=1 << 20)
    try:
        alice = mos.as_user("alice")
        zeros = tarfile.TarInfo(CUBES)
        zeros.size = 4 << 20
        pax = tarfile.TarInfo("././@PaxHeader")
        pax.type, pax.size = tarfile.XHDTYPE, 4 << 20
        for info in (zeros, pax):
            path = tmp_path / "bomb.tar.gz"
            path.write_bytes(gzip.compress(_pack([(info, b"\0" * (4 << 20))])))
            assert path.stat().st_size < (1 << 20)
            error = _import(alice, path, None, tmp_path)
            assert isinstance(error, UserError), error
            assert "over this home's limit" in str(error) or "over the limit" in str(error)
        with pytest.raises(UserError, match="max_archive_bytes"):
            MemOS.open(tmp_path / "other", embedder="hash", max_archive_bytes=0)
    finally:
        mos.close()
