"""Helpers every benchmark shares: the machine it ran on, the commit measured, the command, tables."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, str]:
    """CPU, cores, memory, Python, OS and the library versions that matter here."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = platform.system()
    release = Path("/etc/os-release")
    if release.is_file():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    versions = []
    for dist in ("memos", "chromadb", "sqlalchemy", "numpy", "torch", "transformers"):
        with suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    versions.append(f"SQLite {sqlite3.sqlite_version}")
    torch = sys.modules.get("torch")
    if torch is not None:
        versions.append(f"torch intra-op threads {torch.get_num_threads()}")
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)",
        "RAM": f"{mem_kib / 1024**2:.1f} GiB",
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "OS": f"{os_name}, kernel {platform.release()} ({platform.machine()})",
        "libraries": ", ".join(versions),
    }


def kernel_version() -> str:
    """The commit the memos package was measured at, and whether its files had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "memos"], capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    if not changed:
        return f"commit {head}, memos/ clean"
    return f"commit {head} plus uncommitted changes in {', '.join(changed)}"


def command_line() -> str:
    """The command as typed from the repository root."""

    def rel(p: str) -> str:
        # absolute() keeps symlinks (a venv's python links outside the repository)
        try:
            return str(Path(p).absolute().relative_to(Path.cwd()))
        except ValueError:
            return p

    return shlex.join([rel(sys.executable), rel(sys.argv[0]), *sys.argv[1:]])


def run_meta() -> dict[str, str]:
    """What a benchmark page says about its run: the command, the code measured and the load at the start."""
    load = os.getloadavg()
    return {
        "command": command_line(),
        "kernel": kernel_version(),
        "load_start": f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
    }


def report_head(title: str, meta: dict[str, str], started: datetime, done: bool) -> list[str]:
    """A benchmark page's first lines: title, partial-run warning, date, command, code measured, machine."""
    lines = [f"# {title}", ""]
    if not done:
        lines += ["**Partial results: the run is still going (or was cut short).**", ""]
    lines += [
        f"- date: {started:%Y-%m-%d %H:%M} UTC" + (f", finished {datetime.now(UTC):%H:%M} UTC" if done else ""),
        f"- command: `{meta['command']}`",
        f"- code measured: {meta['kernel']}",
    ]
    return lines + [f"- {key}: {value}" for key, value in machine().items()]


def short_count(n: int) -> str:
    """A cube count as a column label: 10000 -> '10k', 2500 -> '2,500'."""
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else f"{n:,}"


def dir_bytes(path: Path) -> int:
    """Bytes of every file under a folder (a home's size on disk)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drop_chroma_clients() -> None:
    """Drop chromadb's per-path client cache, so a finished home's index stops holding memory."""
    try:
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    except Exception as exc:  # a newer chromadb may move it; the benchmarks do not depend on it
        print(f"  (could not clear chromadb's client cache: {exc})", flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A Markdown table; align has one 'l' or 'r' per column."""
    marks = {"l": ":---", "r": "---:"}
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def publish(page: str, out: Path) -> None:
    """Write a results page (creating its folder) and print it."""
    write_atomic(out, page)
    print(page)


def write_atomic(out: Path, page: str) -> None:
    """Write a results page (creating its folder) through a temp file, so a reader never sees half of it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
