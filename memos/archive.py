"""Portable, verifiable export archives: a namespace with its full history, imported all or nothing."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from memos import inputs
from memos.cube import ACL, MemCube, Namespace, Right, Status, ns_path, parse_namespace
from memos.errors import Conflict, UserError, first_problem
from memos.ids import new_id
from memos.log import get_logger
from memos.storage.catalog import Catalog, CubeFilter
from memos.storage.schema import cube_versions, cubes, to_micros

if TYPE_CHECKING:
    from memos.kernel import Session

log = get_logger("archive")

FORMAT = "memos-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CUBES = "cubes.jsonl"
VERSIONS = "versions.jsonl"
DATA_FILES = (CUBES, VERSIONS)
#: the only members an archive may hold, in the order they are written
MEMBERS = (MANIFEST, *DATA_FILES)
#: upper bounds on what an import reads into memory, per member
MAX_MANIFEST_BYTES = 1 << 20
MAX_DATA_BYTES = 1 << 30
#: the default bound on an archive file and on all it decompresses to (the `max_archive_bytes` setting)
MAX_ARCHIVE_BYTES = 2 << 30
ALL_STATUSES = tuple(s.value for s in Status)
_SYNC_BATCH = 256


@dataclass
class _Contents:
    """A validated archive: its manifest, cubes and version snapshots (grouped by cube id)."""

    path: Path
    sha256: str
    namespace: Namespace
    cubes: list[MemCube]
    versions: dict[str, list[MemCube]] = field(default_factory=dict)

    @property
    def num_versions(self) -> int:
        """Version snapshots across all cubes."""
        return sum(len(v) for v in self.versions.values())


# ---- export ------------------------------------------------------------------------------------


def export_namespace(session: Session, ns: Namespace, path: Path) -> dict[str, Any]:
    """Write every cube at or under `ns` (any status, every version) to a gzip tar at `path`."""
    mos = session.mos
    path = Path(path)
    _check_target(path)
    prefixes = mos.governance.readable_prefixes(session.user, ns)
    flt = CubeFilter(prefixes=prefixes, statuses=ALL_STATUSES)
    with mos.catalog.read() as conn:
        current = mos.catalog.select(flt, conn=conn)
        snapshots = _version_snapshots(conn, mos.catalog.where(flt))
    latest = {c.id: c.header.version for c in current}
    history = [s for s in snapshots if s.id in latest and s.header.version <= latest[s.id]]
    cubes_data = _jsonl(current)
    versions_data = _jsonl(history)
    if max(len(cubes_data), len(versions_data)) > MAX_DATA_BYTES:
        raise UserError(f"{ns_path(ns)} is too large for one archive: export its sub-namespaces one by one")
    now = mos.clock.now()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "namespace": list(ns),
        "exported_at": now.isoformat(),
        "exported_by": session.user,
        "embedder": mos.embedder.id,
        "num_cubes": len(current),
        "num_versions": len(history),
        "files": {
            CUBES: {"sha256": _sha256(cubes_data), "bytes": len(cubes_data)},
            VERSIONS: {"sha256": _sha256(versions_data), "bytes": len(versions_data)},
        },
    }
    manifest_data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    members = [(MANIFEST, manifest_data), (CUBES, cubes_data), (VERSIONS, versions_data)]
    digest = _write_atomically(path, members, int(now.timestamp()))
    summary = {
        "namespace": ns_path(ns),
        "num_cubes": len(current),
        "num_versions": len(history),
        "path": str(path),
        "sha256": digest,
    }
    with mos.catalog.tx() as tx:
        mos.catalog.audit(tx, at=now, actor=session.user, action="export", ns=ns_path(ns), detail=summary)
    return summary


def _check_target(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise UserError(f"{path} already exists: remove it or pick another file name for the export")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the directory {path.parent} does not exist")


def _version_snapshots(conn: Connection, where: sa.ColumnElement[bool]) -> list[MemCube]:
    stmt = (
        sa.select(cube_versions.c.snapshot)
        .select_from(cube_versions.join(cubes, cubes.c.id == cube_versions.c.cube_id))
        .where(where)
        .order_by(cubes.c.created_at, cubes.c.id, cube_versions.c.version)
    )
    return [MemCube.model_validate_json(s) for s in conn.execute(stmt).scalars()]


def _jsonl(items: Iterable[MemCube]) -> bytes:
    return "".join(c.model_dump_json() + "\n" for c in items).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: Path, members: Sequence[tuple[str, bytes]], mtime: int) -> str:
    """Write the archive to a temp file beside `path`, fsync it, then move it into place; return its sha256."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" keeps the temp file's name out of the gzip header
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = mtime
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        digest = _sha256(tmp.read_bytes())
        _place(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    _fsync_dir(path.parent)
    return digest


def _place(tmp: Path, path: Path) -> None:
    """Move a finished temp file to `path`, never replacing a file that appeared there meanwhile."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UserError(f"{path} already exists: remove it or pick another file name for the export") from None
    except OSError:
        # no hard links on this file system: fall back to a checked rename
        if path.exists():
            raise UserError(f"{path} already exists: remove it or pick another file name for the export") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- import ------------------------------------------------------------------------------------


def import_archive(session: Session, path: Path, into: Namespace | None) -> dict[str, Any]:
    """Load an archive made by export_namespace in one transaction (a copy with new ids under `into`)."""
    mos = session.mos
    path = Path(path)
    contents = _read_archive(path, mos.settings.max_text_chars, mos.settings.max_archive_bytes)
    source_ns = contents.namespace
    target_ns = into if into is not None else source_ns
    id_map = {c.id: (new_id() if into is not None else c.id) for c in contents.cubes}
    rebased = [_rebase(c, source_ns, target_ns, id_map, path) for c in contents.cubes]
    history = {
        id_map[cid]: [_rebase(v, source_ns, target_ns, id_map, path) for v in versions]
        for cid, versions in contents.versions.items()
    }
    targets = sorted({c.namespace for c in rebased}) or [target_ns]
    for ns in targets:
        mos.governance.require(session.user, ns, Right.write)
    now = mos.clock.now()
    new_ids = [c.id for c in rebased]
    with mos._write_lock:
        try:
            with mos.catalog.tx() as conn:
                if into is None:
                    _refuse_existing(conn, new_ids, path)
                owner = mos.governance.claim(conn, session.user, target_ns)
                for cube, old in zip(rebased, contents.cubes, strict=True):
                    versions = [_owned(v, owner) for v in history.get(cube.id, [])]
                    _insert_with_history(mos.catalog, conn, _owned(cube, owner), versions)
                    detail: dict[str, Any] = {
                        "archive": str(path),
                        "sha256": contents.sha256,
                        "versions": len(versions),
                    }
                    if into is not None:
                        detail["from_id"] = old.id
                        detail["from_ns"] = ns_path(old.namespace)
                    mos.catalog.audit(
                        conn,
                        at=now,
                        actor=session.user,
                        action="import",
                        cube_id=cube.id,
                        ns=ns_path(cube.namespace),
                        detail=detail,
                    )
        except sa.exc.IntegrityError as exc:
            raise Conflict(
                f"this home changed while {path} was being imported (another process wrote the same cubes or "
                f"claimed {target_ns[0]!r}); nothing was imported: retry, or import a copy with `--into NAMESPACE`",
                path=str(path),
            ) from exc
        indexed = _sync(session, new_ids)
    return {
        "namespace": ns_path(target_ns),
        "from_namespace": ns_path(source_ns),
        "num_cubes": len(rebased),
        "num_versions": contents.num_versions,
        "path": str(path),
        "sha256": contents.sha256,
        "ids": new_ids,
        "indexed": indexed,
    }


def _refuse_existing(conn: Connection, ids: Sequence[str], path: Path) -> None:
    existing = 0
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        existing += int(conn.execute(sa.select(sa.func.count()).where(cubes.c.id.in_(chunk))).scalar_one())
    if existing:
        raise Conflict(
            f"{existing} of the {len(ids)} cubes in {path} already exist in this home (an import keeps ids): "
            "import a copy with new ids with `--into NAMESPACE`",
            path=str(path),
            existing=existing,
        )


def _rebase(cube: MemCube, source: Namespace, target: Namespace, id_map: dict[str, str], path: Path) -> MemCube:
    """The cube moved from the exported namespace to the target one, its id and references remapped."""
    if source == target and all(k == v for k, v in id_map.items()):
        return cube
    rest = cube.namespace[len(source) :]
    try:
        namespace = parse_namespace(target + rest)
    except UserError as exc:
        raise UserError(f"cannot import {path} into {ns_path(target)}: {exc}") from None
    header = cube.header.model_copy(deep=True)
    header.provenance.derived_from = [id_map.get(i, i) for i in header.provenance.derived_from]
    return cube.model_copy(
        update={
            "id": id_map[cube.id],
            "namespace": namespace,
            "sources": [id_map.get(i, i) for i in cube.sources],
            "header": header,
        }
    )


def _owned(cube: MemCube, owner: str) -> MemCube:
    """The cube with the target root's owner as its ACL owner (per-cube grants do not travel between homes)."""
    header = cube.header.model_copy(deep=True)
    header.acl = ACL(owner=owner)
    return cube.model_copy(update={"header": header})


def _insert_with_history(catalog: Catalog, conn: Connection, current: MemCube, versions: Sequence[MemCube]) -> None:
    """Insert a cube so that its version rows are the archive's snapshots and its row is the current state."""
    if not versions:
        catalog.insert_cube(conn, current)
        return
    latest = versions[-1]
    catalog.insert_cube(conn, latest)
    earlier = versions[:-1]
    if earlier:
        conn.execute(
            sa.insert(cube_versions),
            [
                {
                    "cube_id": v.id,
                    "version": v.header.version,
                    "snapshot": v.model_dump_json(),
                    "recorded_at": to_micros(v.header.updated_at),
                }
                for v in earlier
            ],
        )
    if current != latest:
        catalog.replace_cube(conn, current, new_version=current.header.version != latest.header.version)


def _sync(session: Session, ids: Sequence[str]) -> bool:
    """Embed and index the imported cubes; on failure the outbox finishes the job on the next open or tick."""
    mos = session.mos
    try:
        for start in range(0, len(ids), _SYNC_BATCH):
            mos.sync_vectors(list(ids[start : start + _SYNC_BATCH]))
    except Exception as exc:
        log.warning("imported cubes are not indexed yet; `memos tick` retries", error=str(exc), pending=len(ids))
        return False
    return True


# ---- reading and validating an archive ---------------------------------------------------------


def _read_archive(path: Path, max_text_chars: int, max_bytes: int = MAX_ARCHIVE_BYTES) -> _Contents:
    """Read and check everything in an archive before anything is written; raise UserError on any fault.

    Nothing is ever extracted to disk. The file over `max_bytes` is refused before it is read, and
    reading stops as soon as it has decompressed to more than `max_bytes`.
    """
    size = inputs.file_size(
        path,
        missing="no archive at {path}: check the path",
        not_file="{path} is not a file: give the path of an archive made by `memos export`",
        unreadable="cannot read the archive {path}: {error}",
    )
    if size > max_bytes:
        raise _too_large(path, size, max_bytes)
    digest, members = _members(path, max_bytes)
    manifest = _manifest(path, members[MANIFEST])
    for name in DATA_FILES:
        want = manifest["files"][name]
        data = members[name]
        if len(data) != want["bytes"] or _sha256(data) != want["sha256"]:
            raise UserError(
                f"checksum mismatch for {name} in {path}: the archive was modified or damaged; export it again"
            )
    namespace = parse_namespace(manifest["namespace"])
    current = _cubes(path, CUBES, members[CUBES], max_text_chars)
    snapshots = _cubes(path, VERSIONS, members[VERSIONS], max_text_chars)
    if len(current) != manifest["num_cubes"] or len(snapshots) != manifest["num_versions"]:
        raise UserError(f"archive {path} holds a different number of cubes or versions than its manifest says")
    contents = _Contents(path=path, sha256=digest, namespace=namespace, cubes=[c for _, c in current])
    by_id: dict[str, MemCube] = {}
    for lineno, cube in current:
        if cube.id in by_id:
            raise UserError(f"archive {path}: {CUBES} line {lineno} repeats cube {cube.id}")
        _inside(path, CUBES, lineno, cube, namespace)
        by_id[cube.id] = cube
    for lineno, snap in snapshots:
        owner = by_id.get(snap.id)
        if owner is None:
            raise UserError(f"archive {path}: {VERSIONS} line {lineno} is a version of cube {snap.id}, not in {CUBES}")
        _inside(path, VERSIONS, lineno, snap, namespace)
        seen = contents.versions.setdefault(snap.id, [])
        if any(v.header.version == snap.header.version for v in seen):
            raise UserError(f"archive {path}: {VERSIONS} line {lineno} repeats version {snap.header.version}")
        if snap.header.version > owner.header.version:
            raise UserError(
                f"archive {path}: {VERSIONS} line {lineno} is version {snap.header.version} of cube {snap.id}, "
                f"newer than its current version {owner.header.version}"
            )
        seen.append(snap)
    for seen in contents.versions.values():
        seen.sort(key=lambda v: v.header.version)
    return contents


def _too_large(path: Path, size: int | str, limit: int) -> UserError:
    return UserError(
        f"archive {path} is {size} bytes, over this home's limit of {limit}: "
        "raise MEMOS_MAX_ARCHIVE_BYTES to import it, or export smaller namespaces"
    )


class _Bounded(io.RawIOBase):
    """A read-only stream that raises UserError once more than `limit` bytes have come out of it."""

    def __init__(self, raw: gzip.GzipFile, limit: int, path: Path) -> None:
        super().__init__()
        self._raw, self._limit, self._path, self._total = raw, limit, path, 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read from the wrapped stream, counting; refuse to go past the limit."""
        count = self._raw.readinto(buffer)
        self._total += count
        if self._total > self._limit:
            raise _too_large(self._path, f"more than {self._limit} decompressed", self._limit)
        return count


def _members(path: Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> tuple[str, dict[str, bytes]]:
    """The archive file's sha256 and its three members, refusing anything unsafe or unexpected."""
    found: dict[str, bytes] = {}
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UserError(f"cannot read the archive {path}: {exc.strerror}") from None
    try:
        with fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            fh.seek(0)
            # a stream read ("r|"), so tar headers that declare huge sizes (pax, long names) are bounded too
            stream = _Bounded(gzip.GzipFile(fileobj=fh, mode="rb"), max_bytes, path)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    _check_member(path, member, found)
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise EOFError(f"{member.name} ends early")
                    found[member.name] = data
    except UserError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(
            f"archive {path} is truncated or not a memos export ({exc}): make it again with `memos export`"
        ) from None
    missing = [m for m in MEMBERS if m not in found]
    if missing:
        raise UserError(
            f"archive {path} is truncated or not a memos export: it lacks {', '.join(missing)}; "
            "make it again with `memos export`"
        )
    return digest, found


def _check_member(path: Path, member: tarfile.TarInfo, found: dict[str, bytes]) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        reason = "has an absolute path"
    elif ".." in parts:
        reason = "has a '..' path component"
    elif member.issym() or member.islnk():
        reason = "is a link"
    elif member.isdev():
        reason = "is a device or pipe"
    elif member.issparse():
        reason = "is a sparse file"
    elif not member.isreg():
        reason = "is not a regular file"
    elif name not in MEMBERS:
        reason = f"is not part of a memos export (expected only {', '.join(MEMBERS)})"
    elif name in found:
        reason = "appears twice"
    elif member.size > (MAX_MANIFEST_BYTES if name == MANIFEST else MAX_DATA_BYTES):
        reason = f"is {member.size} bytes, over the limit for {name}"
    else:
        return
    raise UserError(f"archive {path} is not a safe memos export: member {name!r} {reason}; refusing to import it")


def _manifest(path: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise UserError(f"archive {path}: {MANIFEST} is not valid JSON; the archive is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"archive {path} is not a memos export ({MANIFEST} lacks format {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"archive {path} has format version {version!r}; this memos reads version {FORMAT_VERSION}: "
            "import it with the memos that made it, or upgrade"
        )
    files = manifest.get("files")
    ok = isinstance(files, dict) and all(
        isinstance(files.get(n), dict)
        and isinstance(files[n].get("sha256"), str)
        and isinstance(files[n].get("bytes"), int)
        for n in DATA_FILES
    )
    counts = all(isinstance(manifest.get(k), int) for k in ("num_cubes", "num_versions"))
    if not ok or not counts or "namespace" not in manifest:
        raise UserError(f"archive {path}: {MANIFEST} lacks namespace, counts or file checksums; it is damaged")
    try:
        parse_namespace(manifest["namespace"])
    except UserError as exc:
        raise UserError(f"archive {path}: {MANIFEST} names a bad namespace: {exc}") from None
    return manifest


def _cubes(path: Path, name: str, data: bytes, max_text_chars: int) -> list[tuple[int, MemCube]]:
    """(1-based line number, cube) for each line of a JSON-lines member."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"archive {path}: {name} is not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out: list[tuple[int, MemCube]] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            cube = MemCube.model_validate_json(line)
            _check_fields(cube, max_text_chars)
        except ValidationError as exc:
            where, problem = first_problem(exc)
            detail = f"{where}: {problem}" if where else problem
            raise UserError(f"archive {path}: {name} line {lineno} is not a valid cube ({detail})") from None
        except UserError as exc:
            raise UserError(f"archive {path}: {name} line {lineno} is not a valid cube ({exc})") from None
        out.append((lineno, cube))
    return out


def _check_fields(cube: MemCube, max_text_chars: int) -> None:
    """What the catalog needs beyond the model: well-formed ids, tags, labels and text within limits."""
    for ref in [cube.id, *cube.sources, *cube.header.provenance.derived_from]:
        if inputs.cube_id(ref) != ref:
            raise UserError(f"id {ref!r} is not in canonical lower-case form")
    if inputs.tags(cube.header.tags) != cube.header.tags:
        raise UserError("tags must be distinct and carry no surrounding spaces")
    inputs.labels(cube.header.labels)
    if cube.content is not None and len(cube.content) > max_text_chars:
        raise UserError(
            f"its text is {len(cube.content)} characters, over this home's limit of {max_text_chars}: "
            "raise MEMOS_MAX_TEXT_CHARS to import it"
        )


def _inside(path: Path, name: str, lineno: int, cube: MemCube, namespace: Namespace) -> None:
    if cube.namespace[: len(namespace)] != namespace:
        raise UserError(
            f"archive {path}: {name} line {lineno} is in {ns_path(cube.namespace)}, "
            f"outside the exported namespace {ns_path(namespace)}"
        )
