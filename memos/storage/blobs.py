"""Blobs: the files behind activation (KV blocks) and parametric (LoRA adapter) cubes, in the home.

A blob is written under a temporary name and renamed into place, so a crash leaves either no blob or
a whole one; the catalog row that names it is committed after the rename. Blobs no cube names any
more (a crash between the two steps, a retired block) are removed by `sweep`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from memos.errors import UserError

#: a blob reference: "<area>/<name>", both plain names (no path tricks)
_REF = re.compile(r"^(activation|parametric)/[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class BlobStore:
    """Files and directories under `<home>/blobs`, addressed by references like 'activation/<id>.safetensors'."""

    def __init__(self, root: Path) -> None:
        #: every blob lives directly inside root/<area>/; temporary names start with '.'
        self.root = root

    def path(self, ref: str) -> Path:
        """Where a blob lives; UserError for a reference that is not one of ours."""
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise UserError(f"{ref!r} is not a blob reference (activation/NAME or parametric/NAME)")
        return self.root / ref

    def exists(self, ref: str) -> bool:
        """Whether the blob is there."""
        return self.path(ref).exists()

    def write_file(self, ref: str, write: Callable[[Path], object]) -> int:
        """Create a file blob: `write(tmp_path)` fills a temporary file that is then renamed into place."""
        target = self.path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target.stat().st_size

    def write_dir(self, ref: str, write: Callable[[Path], object]) -> int:
        """Create a directory blob: `write(tmp_dir)` fills a temporary directory that is renamed into place."""
        target = self.path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            write(tmp)
            if target.exists():
                # a directory cannot be replaced atomically; the old one is kept aside until the new one is in
                old = target.with_name(f".old-{target.name}")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.size(ref)

    def size(self, ref: str) -> int:
        """Bytes a blob takes (a directory: all its files)."""
        target = self.path(ref)
        if target.is_dir():
            return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        return target.stat().st_size if target.exists() else 0

    def delete(self, ref: str) -> None:
        """Remove a blob (no error when it is already gone)."""
        target = self.path(ref)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def refs(self) -> list[str]:
        """Every blob present, temporary ones excluded."""
        found: list[str] = []
        for area in ("activation", "parametric"):
            folder = self.root / area
            if folder.is_dir():
                found.extend(f"{area}/{p.name}" for p in sorted(folder.iterdir()) if not p.name.startswith("."))
        return found

    def sweep(self, keep: Iterable[str]) -> list[str]:
        """Delete blobs not in `keep` and leftover temporary files; return the references deleted."""
        wanted = set(keep)
        gone = [ref for ref in self.refs() if ref not in wanted]
        for ref in gone:
            self.delete(ref)
        for area in ("activation", "parametric"):
            folder = self.root / area
            if folder.is_dir():
                for leftover in folder.glob(".*"):
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
        return gone
