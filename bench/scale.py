"""Scale benchmark: one home grown to 1,000,000 cubes, and how ingest, recall, memory and disk grow with it.

Writes the synthetic chat memories of bench/store.py (seeded, so the i-th cube is always the same) through
the public API (`MemOS.open` with auto_paging off, `Session.write_many` in batches) into one fresh home with
the hashing embedder, and measures:

* ingest throughput per segment of growth (every `--segment` cubes, default a tenth of `--cubes`), with
  the microseconds per cube each kernel step took in that segment,
* at each checkpoint (default 10k, 100k and the final size): recall p50/p95 over `--queries` queries
  (k=10, query embedding included), the process's peak RSS (`resource.getrusage`), and the home's size
  on disk per cube,
* growth from the first checkpoint to the last: ingest time per cube and recall p95 against log(N),
  step by step, stating whether anything grows faster than log(N) (superlinear in total).

Then MiniLM (`--subset-embedder`) on the first `--minilm` cubes in a fresh home: ingest throughput and
recall p50/p95 at 10k and at the subset's size. Goal printed: recall p95 < 100 ms at 1,000,000 cubes.

Run from the repository root; the full run takes one to two hours on 2 idle cores and ~5 GB of disk:

    .venv/bin/python bench/scale.py                                   # 1M hashing + 100k MiniLM
    .venv/bin/python bench/scale.py --cubes 20000 --minilm 5000 --out /some/where/scale.md   # a few minutes
    .venv/bin/python bench/scale.py --cubes 200000 --minilm 0 --home big --keep              # keep the home

Results go to bench/results/scale.md (rewritten after every checkpoint, so a cut-short run still leaves
its partial tables), with the machine, the date and the command.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import (  # noqa: E402
    dir_bytes,
    drop_chroma_clients,
    report_head,
    run_meta,
    short_count,
    table,
    write_atomic,
)
from bench.store import (  # noqa: E402
    BATCH,
    INGEST_ROWS,
    RECALL_ROWS,
    SEED,
    USER,
    WARMUP_QUERIES,
    Corpus,
    K,
    PhaseTimer,
    ingest,
    instrument,
    recall_latencies,
)
from memos.errors import UserError  # noqa: E402
from memos.kernel import MemOS  # noqa: E402

#: the goal this benchmark checks
GOAL_RECALL_P95_MS = 100.0
GOAL_AT = 1_000_000
#: a per-cube cost may grow up to this factor above log(N)'s growth before it counts as faster than log(N)
LOG_SLACK = 1.25
#: kernel steps timed here on top of bench/store.py's: (MemOS attribute, method, phase)
EXTRA_WRAPS: tuple[tuple[str, str, str], ...] = (("catalog", "previous_in_session", "session link"),)
#: the ingest breakdown: bench/store.py's steps, then the extra ones
SCALE_INGEST_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *INGEST_ROWS,
    ("session links (`catalog.previous_in_session`)", ("session link",)),
)
#: steps taking less than this share of the time at the last checkpoint are too small to judge
MIN_SHARE = 0.05


# ---- measurements --------------------------------------------------------------------------------


@dataclass
class Segment:
    """One stretch of growth: cubes start..stop written, and what it cost."""

    start: int
    stop: int
    seconds: float
    cpu_s: float
    #: kernel step -> wall seconds inside this segment's writes
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def cubes(self) -> int:
        """Cubes written in this segment."""
        return self.stop - self.start

    @property
    def rate(self) -> float:
        """Cubes per second over the segment."""
        return self.cubes / self.seconds

    @property
    def us_per_cube(self) -> float:
        """Wall microseconds per cube over the segment."""
        return self.seconds / self.cubes * 1e6


@dataclass
class Probe:
    """What was measured at one checkpoint: recall, memory, disk."""

    cubes: int
    #: seconds of ingest from an empty home up to here
    ingest_s: float
    #: the segment that ended at this checkpoint
    segment: Segment
    latencies_ms: list[float]
    recall_cpu_s: float
    recall_phases: dict[str, float]
    #: the process's RSS high-water mark and its RSS now, in bytes
    peak_rss: int
    rss: int
    disk_bytes: int
    load_1min: float

    def pct(self, q: float) -> float:
        """A recall latency percentile in ms."""
        return float(np.percentile(self.latencies_ms, q))


@dataclass
class Run:
    """One embedder grown from an empty home: its segments and checkpoints."""

    embedder: str
    target: int
    model_load_s: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)


def peak_rss_bytes() -> int:
    """The process's RSS high-water mark (`getrusage`, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """The process's resident set size now (0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def boundaries(cubes: int, checkpoints: Sequence[int], segment: int) -> list[int]:
    """Where segments end: every `segment` cubes, every checkpoint up to `cubes`, and `cubes` itself."""
    if cubes < 1 or segment < 1:
        raise UserError(f"cube and segment counts must be positive, got {cubes} cubes, segments of {segment}")
    stops = set(range(segment, cubes + 1, segment)) | {c for c in checkpoints if 0 < c <= cubes} | {cubes}
    return sorted(stops)


def grow(
    spec: str,
    target: int,
    checkpoints: Sequence[int],
    segment: int,
    corpus: Corpus,
    queries: Sequence[str],
    warmup: Sequence[str],
    home: Path,
    on_probe: Callable[[Run], None],
) -> Run:
    """Grow a fresh home to `target` cubes with one embedder, measuring every segment and checkpoint."""
    if home.exists() and any(home.iterdir()):
        raise UserError(f"{home} is not empty; the benchmark needs a fresh home: pick another --home or empty it")
    print(f"== {spec}: {target:,} cubes into {home}", flush=True)
    run = Run(embedder=spec, target=target)
    mos = MemOS.open(home, embedder=spec, auto_paging=False)
    timer = PhaseTimer()
    try:
        session = mos.as_user(USER)
        t0 = time.perf_counter()
        mos.embedder.embed(["load the model before the clock starts"])
        run.model_load_s = time.perf_counter() - t0
        instrument(mos, timer)
        for owner, name, phase in EXTRA_WRAPS:
            if callable(getattr(getattr(mos, owner), name, None)):
                timer.wrap(getattr(mos, owner), name, phase)
        stops = boundaries(target, checkpoints, segment)
        probe_at = {c for c in checkpoints if c <= target} | {target}
        have, total_s = 0, 0.0
        for stop in stops:
            timer.take()
            seconds, cpu_s = ingest(session, corpus, have, stop, spec)
            part = Segment(start=have, stop=stop, seconds=seconds, cpu_s=cpu_s, phases=timer.take())
            run.segments.append(part)
            total_s += seconds
            have = stop
            print(
                f"  [{spec}] segment {part.start:,}->{stop:,}: {part.rate:,.0f} cubes/s "
                f"({part.us_per_cube:,.0f} us/cube)",
                flush=True,
            )
            if stop not in probe_at:
                continue
            for q in warmup:
                session.recall((USER,), q, k=K)
            timer.take()
            latencies, recall_cpu = recall_latencies(session, queries)
            rss = rss_bytes()
            probe = Probe(
                cubes=stop,
                ingest_s=total_s,
                segment=part,
                latencies_ms=latencies,
                recall_cpu_s=recall_cpu,
                recall_phases=timer.take(),
                # the kernel updates the high-water mark lazily: it is at least what was just resident
                peak_rss=max(peak_rss_bytes(), rss),
                rss=rss,
                disk_bytes=dir_bytes(home),
                load_1min=os.getloadavg()[0],
            )
            run.probes.append(probe)
            print(
                f"  [{spec}] {stop:,} cubes: ingest {stop / total_s:,.0f} cubes/s, recall p50 {probe.pct(50):.1f} ms "
                f"p95 {probe.pct(95):.1f} ms, peak RSS {probe.peak_rss / 1024**2:,.0f} MiB, "
                f"disk {probe.disk_bytes / stop:,.0f} B/cube, load {probe.load_1min:.1f}",
                flush=True,
            )
            on_probe(run)
    finally:
        timer.unwrap()
        mos.close()
        drop_chroma_clients()
    return run


# ---- growth --------------------------------------------------------------------------------------


@dataclass
class Growth:
    """How one cost grew between two home sizes, against log(N)."""

    label: str
    first: float
    last: float
    n_first: int
    n_last: int

    @property
    def ratio(self) -> float:
        """last / first."""
        return self.last / self.first if self.first > 0 else math.inf

    @property
    def log_ratio(self) -> float:
        """log(N_last) / log(N_first): how much an O(log N) cost would have grown."""
        return math.log(self.n_last) / math.log(max(self.n_first, 2))

    @property
    def exponent(self) -> float:
        """b in cost ~ N^b fitted through the two points."""
        if self.ratio <= 0 or math.isinf(self.ratio) or self.n_last == self.n_first:
            return math.nan
        return math.log(self.ratio) / math.log(self.n_last / self.n_first)

    @property
    def within_log(self) -> bool:
        """Whether the cost grew no faster than log(N) (with LOG_SLACK for noise)."""
        return self.ratio <= LOG_SLACK * self.log_ratio


def growths(run: Run) -> tuple[list[Growth], list[Growth]]:
    """Per-cube ingest cost and recall cost, first checkpoint vs last: in total and step by step."""
    if len(run.probes) < 2:
        return [], []
    a, b = run.probes[0], run.probes[-1]
    sa, sb = a.segment, b.segment
    ingest_rows = [
        Growth("ingest, all steps (us/cube)", sa.seconds / sa.cubes, sb.seconds / sb.cubes, a.cubes, b.cubes)
    ]
    for label, phases in SCALE_INGEST_ROWS:
        first = sum(sa.phases.get(p, 0.0) for p in phases) / sa.cubes
        last = sum(sb.phases.get(p, 0.0) for p in phases) / sb.cubes
        if last > 0 and last * sb.cubes >= MIN_SHARE * sb.seconds:
            ingest_rows.append(Growth(label, first, last, a.cubes, b.cubes))
    recall_rows = [
        Growth("recall p50 (ms)", a.pct(50), b.pct(50), a.cubes, b.cubes),
        Growth("recall p95 (ms)", a.pct(95), b.pct(95), a.cubes, b.cubes),
    ]
    total_b = sum(b.latencies_ms) / 1000
    for label, phases in RECALL_ROWS:
        first = sum(a.recall_phases.get(p, 0.0) for p in phases) / len(a.latencies_ms)
        last = sum(b.recall_phases.get(p, 0.0) for p in phases) / len(b.latencies_ms)
        if last > 0 and last * len(b.latencies_ms) >= MIN_SHARE * total_b:
            recall_rows.append(Growth(label, first * 1000, last * 1000, a.cubes, b.cubes))
    return ingest_rows, recall_rows


def verdict(rows: Sequence[Growth]) -> str:
    """One sentence: which costs grew faster than log(N), if any."""
    fast = [g for g in rows if not g.within_log]
    if not rows:
        return "not enough checkpoints to judge growth (needs two)."
    if not fast:
        return "nothing grows faster than log(N): no superlinear step."
    return "faster than log(N): " + "; ".join(f"{g.label} x{g.ratio:.2f} (~N^{g.exponent:.2f})" for g in fast) + "."


# ---- report --------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.0f}"


CHECKPOINT_COLUMNS = (
    "cubes|ingest cubes/s from empty|last segment cubes/s|recall p50 ms|recall p95 ms|recall p99 ms|"
    "recall cores used|peak RSS MiB|RSS now MiB|home MiB|disk KiB/cube|load avg"
)
CHECKPOINT_HEADER = CHECKPOINT_COLUMNS.split("|")


def _checkpoint_table(run: Run) -> list[str]:
    rows = [
        [f"{p.cubes:,}", f"{p.cubes / p.ingest_s:,.0f}", f"{p.segment.rate:,.0f}"]
        + [f"{p.pct(q):.1f}" for q in (50, 95, 99)]
        + [f"{p.recall_cpu_s / (sum(p.latencies_ms) / 1000):.2f}", _mib(p.peak_rss), _mib(p.rss)]
        + [_mib(p.disk_bytes), f"{p.disk_bytes / p.cubes / 1024:.2f}", f"{p.load_1min:.1f}"]
        for p in run.probes
    ]
    return table(CHECKPOINT_HEADER, rows, "r" * len(CHECKPOINT_HEADER))


def _segment_table(run: Run) -> list[str]:
    steps = [(lb, phs) for lb, phs in SCALE_INGEST_ROWS if any(p in s.phases for s in run.segments for p in phs)]
    header = ["segment", "cubes/s", "us/cube", "cores used"] + [label.split(" (")[0] for label, _ in steps] + ["other"]
    rows = []
    for s in run.segments:
        parts = [sum(s.phases.get(p, 0.0) for p in phases) for _, phases in steps]
        head = [f"{short_count(s.start)}→{short_count(s.stop)}", f"{s.rate:,.0f}", f"{s.us_per_cube:,.0f}"]
        us = [f"{v / s.cubes * 1e6:,.0f}" for v in [*parts, s.seconds - sum(parts)]]
        rows.append([*head, f"{s.cpu_s / s.seconds:.2f}", *us])
    return table(header, rows, "l" + "r" * (len(header) - 1))


def _growth_table(run: Run) -> list[str]:
    a = run.probes[0]
    rows = []
    for p in run.probes:
        logs, us, p95 = math.log(p.cubes) / math.log(max(a.cubes, 2)), p.segment.us_per_cube, p.pct(95)
        ratios = [f"x{us / a.segment.us_per_cube:.2f}", f"{p95:.1f}", f"x{p95 / a.pct(95):.2f}"]
        rows.append([f"{p.cubes:,}", f"{logs:.2f}", f"{us:,.0f}", *ratios])
    header = ["N cubes", "log N / log N₀", "ingest us/cube", "vs first", "recall p95 ms", "vs first"]
    return table(header, rows, "rrrrrr")


def _steps_table(rows: Sequence[Growth], unit: str) -> list[str]:
    def num(v: float) -> str:
        return f"{v * 1e6:,.0f}" if unit == "us" else f"{v:,.2f}"

    out = []
    for g in rows:
        cells = [g.label, num(g.first), num(g.last), f"x{g.ratio:.2f}", f"x{g.log_ratio:.2f}", f"{g.exponent:.2f}"]
        out.append([*cells, "yes" if g.within_log else "**no**"])
    first, last = (short_count(rows[0].n_first), short_count(rows[0].n_last)) if rows else ("", "")
    what = "ingest step, us per cube" if unit == "us" else "recall, ms per query"
    header = [what, f"at {first}", f"at {last}", "growth", "log N growth", "b in N^b", "within log N"]
    return table(header, out, "lrrrrrl")


def render(runs: Sequence[Run], args: argparse.Namespace, meta: dict[str, str], started: datetime, done: bool) -> str:
    """The Markdown report."""
    lines = report_head("Scale benchmark: one home grown to 1,000,000 cubes", meta, started, done)
    lines += [
        f"- load average at the start: {meta['load_start']} (1 / 5 / 15 min); above {os.cpu_count()} means "
        "other work shared the CPU and the numbers are pessimistic",
        "",
        f"One fresh home (SQLite catalog + embedded chromadb, `auto_paging` off) grown to {args.cubes:,} cubes "
        f"with `write_many` batches of {BATCH}, in segments of {args.segment:,}; the memories are bench/store.py's "
        f"synthetic chat corpus (seed {SEED}). At each checkpoint: recall is `session.recall(('{USER}',), query, "
        f"k={K})` over {args.queries} queries after {WARMUP_QUERIES} warm-up ones, timed around the call (query "
        "embedding included); peak RSS is the process's high-water mark (`resource.getrusage`, so it never "
        "goes down, and a later phase starts from the earlier one's peak); disk is every file under the home.",
        "",
        "## Goal",
        "",
    ]
    hashed = runs[0] if runs else None
    if hashed and hashed.probes:
        big = hashed.probes[-1]
        ok = big.pct(95) < GOAL_RECALL_P95_MS
        where = f"{big.cubes:,} cubes" + ("" if big.cubes >= GOAL_AT else f" (the goal is at {GOAL_AT:,}: not reached)")
        result = ("pass" if ok else "**fail**") if big.cubes >= GOAL_AT else "not measured at 1M"
        goal = f"recall p95 < {GOAL_RECALL_P95_MS:.0f} ms at {GOAL_AT:,} cubes on {os.cpu_count()} cores"
        row = [goal, hashed.embedder, f"{big.pct(95):.1f} ms at {where}", result]
        lines += table(["goal", "embedder", "measured", "result"], [row], "llll")
    else:
        lines.append("No checkpoint measured yet.")
    for i, run in enumerate(runs):
        if not run.probes:
            continue
        title = "Hashing embedder" if i == 0 else f"Subset: {run.embedder} embedder, fresh home"
        lines += ["", f"## {title}: 0 → {run.target:,} cubes", ""]
        if run.model_load_s >= 0.5:
            lines += [f"Model loaded in {run.model_load_s:.1f} s, before the clock started.", ""]
        lines += _checkpoint_table(run)
        lines += [
            "",
            "### Ingest per segment",
            "",
            "Microseconds per cube for each kernel step in the segment: bench/store.py's steps, plus linking each "
            "conversation turn to the one before it; 'other' is validation, ids, governance and SQLAlchemy "
            "overhead; 'cores used' is process CPU over wall.",
            "",
        ]
        lines += _segment_table(run)
        if len(run.probes) < 2:
            continue
        ingest_rows, recall_rows = growths(run)
        a, b = run.probes[0], run.probes[-1]
        lines += [
            "",
            "### Growth: does any step grow faster than linear?",
            "",
            "Linear total ingest means a constant cost per cube; an O(log N) index keeps it within log N's growth. "
            f"A cost counts as faster than log N when it grew more than {LOG_SLACK}x log N's growth; steps under "
            f"{MIN_SHARE:.0%} of the time at the last checkpoint are left out. b fits cost ~ N^b through the two "
            "points (a full scan per batch would show b ≈ 1 in ingest per cube).",
            "",
        ]
        lines += _growth_table(run)
        lines += ["", *_steps_table(ingest_rows, "us"), "", *_steps_table(recall_rows, "ms"), ""]
        lines += [
            f"- ingest s/cube at {short_count(b.cubes)} vs {short_count(a.cubes)}: x{ingest_rows[0].ratio:.2f} "
            f"(log N grew x{ingest_rows[0].log_ratio:.2f})",
            f"- recall p95 at {short_count(b.cubes)} vs {short_count(a.cubes)}: x{recall_rows[1].ratio:.2f}",
            f"- ingest: {verdict(ingest_rows)}",
            f"- recall: {verdict(recall_rows)}",
        ]
    lines += _recall_breakdown(runs)
    return "\n".join(lines) + "\n"


def _recall_breakdown(runs: Sequence[Run]) -> list[str]:
    cols = [(run.embedder, p) for run in runs for p in run.probes]
    if not cols:
        return []
    steps = [
        (label, phases) for label, phases in RECALL_ROWS if any(ph in p.recall_phases for _, p in cols for ph in phases)
    ]
    rows = []
    for label, phases in (*steps, ("other", ())):
        row = [label]
        for _, p in cols:
            total = sum(p.latencies_ms) / 1000
            if phases:
                s = sum(p.recall_phases.get(ph, 0.0) for ph in phases)
            else:
                s = total - sum(p.recall_phases.get(ph, 0.0) for _, phs in steps for ph in phs)
            row.append(f"{s / len(p.latencies_ms) * 1000:.2f}")
        rows.append(row)
    rows.append(["**mean total**"] + [f"**{float(np.mean(p.latencies_ms)):.2f}**" for _, p in cols])
    header = ["step"] + [f"{spec} {short_count(p.cubes)}" for spec, p in cols]
    return [
        "",
        "## Where recall time goes",
        "",
        "Mean milliseconds per query at each checkpoint.",
        "",
        *table(header, rows, "l" + "r" * len(cols)),
    ]


# ---- entry point ---------------------------------------------------------------------------------


def _count(text: str, flag: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise UserError(f"{flag} needs a whole number of cubes, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (bad values raise UserError)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cubes", default="1000000", help="cubes in the hashing home (default 1,000,000)")
    parser.add_argument("--minilm", default="100000", help="cubes in the MiniLM subset home (0 skips it)")
    parser.add_argument("--checkpoints", default="10000,100000", help="where recall is measured, comma-separated")
    parser.add_argument("--segment", default="0", help="cubes per ingest segment (default: a tenth of --cubes)")
    parser.add_argument("--queries", type=int, default=200, help="timed recall queries per checkpoint")
    parser.add_argument("--subset-embedder", default="minilm", help="the embedder of the subset home")
    parser.add_argument("--home", type=Path, help="folder for the homes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the homes afterwards")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.md", help="results page")
    args = parser.parse_args(argv)
    args.cubes = _count(args.cubes, "--cubes")
    args.minilm = _count(args.minilm, "--minilm")
    args.segment = _count(args.segment, "--segment")
    args.checkpoints = sorted({_count(c, "--checkpoints") for c in args.checkpoints.split(",") if c.strip()})
    if args.cubes < 1:
        raise UserError(f"--cubes must be at least 1, got {args.cubes}")
    if args.minilm < 0:
        raise UserError(f"--minilm must be 0 (skip) or a number of cubes, got {args.minilm}")
    if args.segment < 0:
        raise UserError(f"--segment must be positive (or 0 for a tenth of --cubes), got {args.segment}")
    if any(c < 1 for c in args.checkpoints):
        raise UserError(f"--checkpoints must be positive cube counts, got {args.checkpoints}")
    if args.queries < 1:
        raise UserError(f"--queries must be at least 1, got {args.queries}")
    args.segment = args.segment or max(1, args.cubes // 10)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Grow the hashing home, then the subset home, and write the report."""
    try:
        args = parse_args(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # a plain `kill` still runs the cleanup below (the 1M home is several GB)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    started = datetime.now(UTC)
    meta = run_meta()
    corpus = Corpus()
    queries = corpus.queries(args.queries, salt=1)
    warmup = corpus.queries(WARMUP_QUERIES, salt=2)
    made = args.home is None
    workdir = Path(tempfile.mkdtemp(prefix="memos-scale-")) if made else args.home.resolve()
    plan = [("hash", args.cubes, workdir / "hash")]
    if args.minilm:
        plan.append((args.subset_embedder, args.minilm, workdir / "subset"))
    for _, _, home in plan:
        if home.exists() and any(home.iterdir()):
            print(f"error: {home} is not empty; the benchmark needs fresh homes: pick another --home", file=sys.stderr)
            return 2
    runs: list[Run] = []

    def on_probe(run: Run) -> None:
        page = render([*runs, run] if run not in runs else runs, args, meta, started, done=False)
        write_atomic(args.out, page)

    print(
        f"scale benchmark: {args.cubes:,} cubes (hash), {args.minilm:,} ({args.subset_embedder}), "
        f"checkpoints {args.checkpoints}, segments of {args.segment:,}, homes under {workdir}",
        flush=True,
    )
    try:
        for spec, target, home in plan:
            segment = args.segment if not runs else max(1, target // 10)
            try:
                runs.append(grow(spec, target, args.checkpoints, segment, corpus, queries, warmup, home, on_probe))
            finally:
                if not args.keep and home.exists():
                    shutil.rmtree(home, ignore_errors=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if made and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    page = render(runs, args, meta, started, done=True)
    write_atomic(args.out, page)
    print()
    print(page)
    print(f"wrote {args.out}" + (f"; homes kept under {workdir}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
