"""The scale benchmark runs end to end at toy size: segments, checkpoints, growth verdicts, report, cleanup."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import scale  # noqa: E402
from memos import MemOS  # noqa: E402
from memos.errors import UserError  # noqa: E402


def _row(page: str, first_cell: str) -> list[str]:
    """The cells of the first table row starting with first_cell."""
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_segment_boundaries_cover_every_checkpoint_and_the_end() -> None:
    hundreds = list(range(100_000, 1_000_001, 100_000))
    assert scale.boundaries(1_000_000, [10_000, 100_000], 100_000) == [10_000, *hundreds]
    assert scale.boundaries(20_000, [10_000, 100_000], 2_000) == list(range(2_000, 20_001, 2_000))
    assert scale.boundaries(250, [100], 100) == [100, 200, 250]
    with pytest.raises(UserError):
        scale.boundaries(0, [], 10)


def test_growth_against_log_n() -> None:
    # constant per-cube cost, and a log N index: both within log(N)
    flat = scale.Growth("flat", 1.0, 1.05, 10_000, 1_000_000)
    logn = scale.Growth("log", 2.0, 3.0, 10_000, 1_000_000)
    # a full scan per batch: per-cube cost grows with N (b = 1)
    scan = scale.Growth("scan", 1.0, 100.0, 10_000, 1_000_000)
    assert flat.within_log and logn.within_log and not scan.within_log
    assert logn.log_ratio == pytest.approx(1.5)
    assert scan.exponent == pytest.approx(1.0)
    assert scale.verdict([flat, logn]).startswith("nothing grows faster than log(N)")
    assert "scan x100.00 (~N^1.00)" in scale.verdict([flat, scan])


def test_toy_run_writes_the_report_and_removes_the_homes(tmp_path: Path) -> None:
    out = tmp_path / "results" / "scale.md"
    homes = tmp_path / "homes"
    argv = ["--cubes", "300", "--checkpoints", "100", "--segment", "100", "--minilm", "150"]
    argv += ["--subset-embedder", "hash:64", "--queries", "8", "--home", str(homes), "--out", str(out)]
    assert scale.main(argv) == 0
    page = out.read_text()
    assert "Partial results" not in page
    assert "## Hashing embedder: 0 → 300 cubes" in page
    assert "## Subset: hash:64 embedder, fresh home: 0 → 150 cubes" in page
    # checkpoints at 100 and at the end of each home, with real latencies, memory and disk
    for cubes in ("100", "300"):
        cells = _row(page, cubes)
        p50, p95 = float(cells[3]), float(cells[4])
        assert 0 < p50 <= p95
        peak, now, disk_kib = int(cells[7].replace(",", "")), int(cells[8].replace(",", "")), float(cells[10])
        assert peak >= now > 0 and disk_kib > 0
    # three segments of 100 in the hashing home, each with a rate and a per-step breakdown
    for seg in ("0→100", "100→200", "200→300"):
        cells = _row(page, seg)
        assert float(cells[1].replace(",", "")) > 0 and "embed texts" in page
    # the growth section states its ratios and a verdict for ingest and for recall
    assert re.search(r"- ingest s/cube at 300 vs 100: x\d+\.\d\d \(log N grew x1\.24\)", page)
    assert re.search(r"- recall p95 at 300 vs 100: x\d+\.\d\d", page)
    assert re.search(r"- ingest: (nothing grows faster than log\(N\)|faster than log\(N\): )", page)
    assert "recall p95 < 100 ms at 1,000,000 cubes" in page and "not measured at 1M" in page
    assert not homes.exists() or not any(homes.iterdir())


def test_keep_leaves_a_home_with_exactly_the_cubes_written(tmp_path: Path) -> None:
    homes = tmp_path / "homes"
    argv = ["--cubes", "120", "--checkpoints", "60", "--minilm", "0", "--queries", "3", "--keep"]
    assert scale.main([*argv, "--home", str(homes), "--out", str(tmp_path / "scale.md")]) == 0
    assert not (homes / "subset").exists()
    mos = MemOS.open(homes / "hash", embedder="hash", auto_paging=False)
    try:
        stats = mos.as_user(scale.USER).stats()
        assert sum(stats.counts.values()) == 120
        assert stats.num_vectors == 120
    finally:
        mos.close()
    # a second run into the same, now non-empty, folder refuses instead of mixing homes
    assert scale.main([*argv, "--home", str(homes), "--out", str(tmp_path / "again.md")]) == 2
    assert not (tmp_path / "again.md").exists()
    assert (homes / "hash").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cubes", "0"], "--cubes must be at least 1"),
        (["--cubes", "lots"], "--cubes needs a whole number"),
        (["--minilm", "-5"], "--minilm must be 0"),
        (["--checkpoints", "10,-1"], "--checkpoints must be positive"),
        (["--queries", "0"], "--queries must be at least 1"),
    ],
)
def test_bad_flags_are_user_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        scale.parse_args(argv)


def test_defaults_are_the_full_run() -> None:
    args = scale.parse_args([])
    assert (args.cubes, args.minilm, args.checkpoints, args.segment) == (1_000_000, 100_000, [10_000, 100_000], 100_000)
    assert args.out == ROOT / "bench" / "results" / "scale.md" and args.home is None and not args.keep
