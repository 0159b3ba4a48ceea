"""Coverage-guided fuzzing of the parsers with atheris (libFuzzer), runnable by hand and smoke-tested here.

By hand, one target at a time, for as long as wanted:

    .venv/bin/python tests/security/test_fuzz_atheris.py TARGET [libFuzzer flags, e.g. -runs=100000 -max_len=4096]

Coverage instrumentation takes tens of seconds to set up; --no-instrument skips it (random inputs only).

TARGET is one of the names in TARGETS. Any exception other than memos.errors.UserError is a crash: atheris
prints the input and exits non-zero. The tests below run each target for a few hundred inputs in a
subprocess, and are skipped when atheris is not installed.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from memos.errors import UserError

_SCRATCH = Path(tempfile.mkdtemp(prefix="memos-atheris-")) if __name__ == "__main__" else Path()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _tool_call(data: bytes) -> None:
    from memos.llm.base import ToolCall

    call = ToolCall.parse("c1", "f", _text(data))
    assert call.valid == (call.error is None)


def _mem_alpha(data: bytes) -> None:
    from memos.policies.mem_alpha.parse import parse_text_calls

    for call in parse_text_calls(_text(data)):
        assert call.error is None or call.arguments == {}


def _mem1(data: bytes) -> None:
    from memos.policies.mem1.format import close_stopped_action, parse_observation, parse_turn

    text = _text(data)
    for fmt in ("think", "paper"):
        turn = parse_turn(text, fmt)
        assert turn.valid == (turn.problem is None)
        parse_observation(text, fmt)
        close_stopped_action(text, fmt)


def _gmemory(data: bytes) -> None:
    from memos.plugins.gmemory.insights import InsightStore, parse_numbered_rules, parse_rule_ops

    parsed = parse_rule_ops(_text(data))
    store = InsightStore()
    shown = [store.new_rule(f"Rule {i} holds, because reason {i}.", ["t0"]).id for i in range(3)]
    store.apply(parsed.ops, shown, ["t1"])
    parse_numbered_rules(_text(data))


def _file_target(suffix: str, read: Callable[[Path], object]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        path = _SCRATCH / f"input{suffix}"
        path.write_bytes(data)
        read(path)

    return run


def _ingest(path: Path) -> None:
    from memos import ingest

    for fmt in ("auto", "json", "jsonl", "locomo"):
        with contextlib.suppress(UserError):
            list(ingest.iter_requests(path, fmt, max_text_chars=1000))


def _config(path: Path) -> None:
    from memos.config import check_config_file

    check_config_file(path)


def _archive(path: Path) -> None:
    from memos.archive import _read_archive

    _read_archive(path, 1000, 1 << 20)


def _archive_tar(data: bytes) -> None:
    """The input as the body of one gzipped manifest member, so the fuzzer reaches past gzip and tar."""
    info = tarfile.TarInfo("manifest.json")
    info.size = len(data)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.addfile(info, io.BytesIO(data))
    path = _SCRATCH / "input.tar.gz"
    path.write_bytes(gzip.compress(out.getvalue()))
    _archive(path)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "tool-call": _tool_call,
    "mem-alpha": _mem_alpha,
    "mem1": _mem1,
    "gmemory": _gmemory,
    "ingest-json": _file_target(".json", _ingest),
    "ingest-jsonl": _file_target(".jsonl", _ingest),
    "config": _file_target(".toml", _config),
    "archive": _file_target(".tar.gz", _archive),
    "archive-manifest": _archive_tar,
}


#: run without coverage instrumentation (a quick smoke run: random inputs only)
NO_INSTRUMENT = "--no-instrument"


def main(argv: list[str]) -> None:
    """Fuzz one target until libFuzzer stops (by -runs, -max_total_time, or a crash)."""
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: {argv[0]} TARGET [libFuzzer flags]; targets: {', '.join(TARGETS)}")
    target = TARGETS[argv[1]]
    with contextlib.suppress(UserError):
        target(b"")  # imports the code under test, so that instrument_all covers it
    flags = [flag for flag in argv[2:] if flag != NO_INSTRUMENT]
    if NO_INSTRUMENT not in argv:
        atheris.instrument_all()  # coverage guidance; takes tens of seconds to set up

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except UserError as exc:
            assert "\n" not in str(exc), f"a UserError must be one line: {exc}"

    atheris.Setup([argv[0], *flags], one_input)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_target_survives_a_short_run(target: str, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, __file__, target, NO_INSTRUMENT, "-runs=300", "-max_len=2048", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 300 runs" in done.stderr


if __name__ == "__main__":
    main(sys.argv)
