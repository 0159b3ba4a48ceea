"""G-Memory's state file: one JSON document per memory, written to a temporary file and renamed into place.

`<home>/gmemory/<name>/state.json` holds the task records (with their embeddings and interaction
traces), the query graph and the insights. Writing the whole document under a temporary name,
syncing it and renaming it over the old one (`os.replace`, atomic on POSIX) means a crash at any
point leaves either the old state or the new one, never a mix.

Several processes may use one memory: each change is made under the memory's lock file (`lock`), on
the state as stored (a process whose copy is older than the file reloads it first, see `stamp`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memos.errors import UserError

#: version of the state document; a file of another version is refused
FORMAT = 1
FILE = "state.json"
#: the lock file that serialises changes to one memory between processes
LOCK_FILE = ".lock"
#: what identifies one saved version of the state file: (inode, size, modification time in ns)
Stamp = tuple[int, int, int]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """A memory name usable as a folder name, or UserError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(
            f"G-Memory name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def state_dir(home: Path, name: str) -> Path:
    """The folder of the memory `name` inside a memos home."""
    return Path(home) / "gmemory" / check_name(name)


def load(folder: Path) -> dict[str, Any] | None:
    """The stored state document, or None when the memory was never saved; UserError if it is unreadable."""
    path = folder / FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read the G-Memory state {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the G-Memory state {path} is not valid JSON ({exc.msg}); restore it from a backup") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"the G-Memory state {path} is not a format-{FORMAT} state file")
    return data


def save(folder: Path, data: dict[str, Any]) -> None:
    """Write the state document atomically: temporary file in the same folder, fsync, os.replace."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {**data, "format": FORMAT}
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, ensure_ascii=False, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stamp(folder: Path) -> Stamp | None:
    """The stored state file's identity, None when there is none: every save replaces the file, so changes it."""
    try:
        st = (folder / FILE).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Hold the memory's lock (an exclusive flock) while reading, changing and saving its state."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
