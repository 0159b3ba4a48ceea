"""LoCoMo retrieval benchmark: turn-level evidence recall of `context()` against BM25 alone and dense alone.

Each conversation of a LoCoMo-format file goes into its own namespace, one page per turn (`dia_id` as
external id, the session date as event time), written session by session through `Session.write_many`
with the kernel's clock set to the session's date and a `tick` after each session, so paging, segment
merging and promotion run as they would in a live conversation. Without an LLM configured, paging uses
its deterministic extractive fallbacks (keywords, leading sentences, pages promoted as knowledge).

Then, for every question, three systems rank the conversation's memory:

* memos: `Session.context(ns, question, budget_tokens)` — its ranked items, each counting every turn
  it carries (a page carries itself, knowledge carries the pages it came from); the working set packed
  into the budget is what an LLM would see;
* BM25 alone: the catalog's lexical index over the pages' own text;
* dense alone: the embedder's cosine over the pages.

and recall@k / hit@k are computed for k = 5, 10, 25, 50 turns, overall (categories 1-5), for 1-4 and per
category id. A question whose evidence is empty counts as recalled (as the official LoCoMo scorer does).

    .venv/bin/python bench/locomo.py --data PATH/TO/locomo_dev.json          # ~5 min on 2 cores
    .venv/bin/python bench/locomo.py --data FILE --conversations 1 --questions 30 --embedder hash   # smoke

Writes bench/results/locomo.md (or --out) with the table, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from memos.clock import ManualClock
from memos.ingest import iter_requests
from memos.kernel import MemOS, Session, WriteRequest
from memos.retrieval import dense_candidates
from memos.scheduler import render_line
from memos.storage.catalog import SEARCHABLE, CubeFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import command_line, kernel_version, machine, publish, table  # noqa: E402

KS = (5, 10, 25, 50)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
SYSTEMS = ("memos context()", "BM25 alone", "dense alone")
USER = "bench"
#: published anchors on the full 10-conversation file, turn-level recall (LoCoMo paper, Table 3)
ANCHORS = (
    ("DRAGON over dialog turns (LoCoMo paper, Table 3; all 10 conversations)", (56.7, 66.2, 76.7, 82.7)),
    ("BM25 over turns (Okapi, Porter; all 10 conversations)", (48.7, 56.4, 65.3, 73.0)),
)
_DIA = re.compile(r"^D:?(\d+):0*(\d+)$")


@dataclass
class Scores:
    """Per-question recall and hit at each k, grouped by category."""

    recall: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    hit: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, category: int, evidence: set[str], ranked_turns: Sequence[str]) -> None:
        """Score one question's ranked turn list."""
        for k in KS:
            top = set(ranked_turns[:k])
            found = len(evidence & top)
            recall = found / len(evidence) if evidence else 1.0
            hit = 1.0 if (found or not evidence) else 0.0
            for group in ("all", str(category), *(("1-4",) if category != 5 else ())):
                self.recall[(group, k)].append(recall)
                self.hit[(group, k)].append(hit)

    def mean(self, kind: str, group: str, k: int) -> float:
        """Mean recall or hit in percent (nan when the group is empty)."""
        values = (self.recall if kind == "recall" else self.hit)[(group, k)]
        return 100 * sum(values) / len(values) if values else float("nan")

    def count(self, group: str) -> int:
        """Questions in a group."""
        return len(self.recall[(group, KS[0])])


@dataclass
class Budgeted:
    """Per question, what a system hands an LLM within the token budget, and how long it took."""

    ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    recall_14: list[float] = field(default_factory=list)

    def add(self, ms: float, tokens: int, packed: Sequence[str], evidence: set[str], category: int) -> None:
        """Record one question."""
        recall = len(evidence & set(packed)) / len(evidence) if evidence else 1.0
        self.ms.append(ms)
        self.tokens.append(tokens)
        self.turns.append(len(packed))
        self.recall.append(recall)
        if category != 5:
            self.recall_14.append(recall)


@dataclass
class Run:
    """Everything one benchmark run measured."""

    scores: dict[str, Scores] = field(default_factory=lambda: {s: Scores() for s in SYSTEMS})
    budgeted: dict[str, Budgeted] = field(default_factory=lambda: {s: Budgeted() for s in SYSTEMS})
    turns: int = 0
    conversations: int = 0
    ingest_seconds: float = 0.0
    paging: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    levels: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def clean_evidence(raw: Any, valid: set[str]) -> set[str]:
    """Evidence ids as the conversation spells them: split joined lists, fix 'D:11:26' and 'D30:05'."""
    out: set[str] = set()
    for entry in raw if isinstance(raw, list) else []:
        for part in re.split(r"[;,\s]+", str(entry)):
            match = _DIA.match(part.strip())
            if match:
                dia = f"D{match.group(1)}:{match.group(2)}"
                if dia in valid:
                    out.add(dia)
    return out


def load(path: Path) -> list[dict[str, Any]]:
    """The samples of a LoCoMo-format file (a list, or one sample object)."""
    doc = json.loads(path.read_text())
    return doc if isinstance(doc, list) else [doc]


def ingest(session: Session, clock: ManualClock, path: Path, keep: set[str]) -> dict[tuple[str, ...], dict[str, str]]:
    """Write every turn session by session (clock at the session date, a tick after each); page id -> dia_id."""
    by_ns: dict[tuple[str, ...], dict[str, str]] = defaultdict(dict)
    pending: list[WriteRequest] = []
    pending_key: tuple[tuple[str, ...], str | None] | None = None

    def flush() -> None:
        if not pending or pending_key is None:
            return
        ns = pending_key[0]
        when = pending[0].event_time
        if when is not None and when > clock.now():
            clock.set(when)
        for cube in session.write_many(ns, pending):
            by_ns[ns][cube.id] = cube.header.provenance.external_id or ""
        session.tick()
        clock.advance(minutes=30)
        pending.clear()

    for suffix, request in iter_requests(path, "locomo"):
        name = suffix[0] if suffix else "conv"
        if name not in keep:
            continue
        ns = (USER, name)
        key = (ns, (request.provenance or {}).get("session_id"))
        if key != pending_key:
            flush()
            pending_key = key
        pending.append(request)
    flush()
    return by_ns


def run(args: argparse.Namespace) -> Run:
    """Ingest, ask every question of every system, return the figures."""
    samples = load(args.data)
    if args.conversations:
        samples = samples[: args.conversations]
    # the ingest reader puts one sample in the target namespace itself, several in one sub-namespace each
    several = len(load(args.data)) > 1
    names = [str(s.get("sample_id")) if several else "conv" for s in samples]
    result = Run(conversations=len(samples))
    clock = ManualClock(datetime(1970, 1, 2, tzinfo=UTC))
    home = Path(tempfile.mkdtemp(prefix="memos-locomo-"))
    overrides: dict[str, Any] = {"auto_paging": False, "paging_preset": args.preset}
    with MemOS.open(home, embedder=args.embedder, clock=clock, **overrides) as mos:
        session = mos.as_user(USER)
        mos.embedder.embed(["warm up"])
        started = time.perf_counter()
        pages = ingest(session, clock, args.data, set(names))
        result.ingest_seconds = time.perf_counter() - started
        result.turns = sum(len(v) for v in pages.values())
        stats = session.stats()
        for (kind, level, status), n in stats.counts.items():
            result.levels[f"{kind}/{level}/{status}"] += n
        result.paging.update(stats.paging)
        clock.advance(days=1)
        for sample, name in zip(samples, names, strict=True):
            ns = (USER, name)
            dia_of = pages.get(ns, {})
            valid = set(dia_of.values())
            questions = sample.get("qa", [])
            if args.questions:
                questions = questions[: args.questions]
            page_filter = CubeFilter(prefixes=["/".join(ns)], statuses=SEARCHABLE, labels={"type": "episode"})
            for qa in questions:
                question = str(qa.get("question", "")).strip()
                if not question:
                    continue
                category = int(qa.get("category", 0))
                evidence = clean_evidence(qa.get("evidence"), valid)
                t0 = time.perf_counter()
                working = session.context(ns, question, budget_tokens=args.budget)
                ms = 1000 * (time.perf_counter() - t0)
                ranked = _turns([dia_of.get(p, "") for item in working.ranked for p in item.carries])
                packed = _turns([dia_of.get(p, "") for item in working.items for p in item.carries])
                result.scores[SYSTEMS[0]].add(category, evidence, ranked)
                result.budgeted[SYSTEMS[0]].add(ms, working.tokens, packed, evidence, category)
                t0 = time.perf_counter()
                lexical = [i for i, _ in mos.catalog.lexical(question, page_filter, max(KS))]
                ms = 1000 * (time.perf_counter() - t0)
                _baseline(mos, SYSTEMS[1], lexical, ms, dia_of, evidence, category, args.budget, result)
                t0 = time.perf_counter()
                vector = mos.embedder.embed([question])[0]
                dense = [i for i, _ in dense_candidates(mos.catalog, mos.vectors, vector, page_filter, max(KS))]
                ms = 1000 * (time.perf_counter() - t0)
                _baseline(mos, SYSTEMS[2], dense, ms, dia_of, evidence, category, args.budget, result)
    return result


def _baseline(
    mos: MemOS,
    system: str,
    ids: Sequence[str],
    ms: float,
    dia_of: dict[str, str],
    evidence: set[str],
    category: int,
    budget: int,
    result: Run,
) -> None:
    """Score a baseline's ranking, and pack its best pages into the budget as dated lines, best first."""
    result.scores[system].add(category, evidence, _turns([dia_of.get(i, "") for i in ids]))
    cubes = mos.catalog.get(list(ids))
    lines: list[str] = []
    kept: list[str] = []
    spent = 0
    for cube_id in ids:
        line = render_line(cubes[cube_id])
        cost = mos.tokenizer.count(line) + 1
        if spent + cost <= budget:
            spent += cost
            lines.append(line)
            kept.append(dia_of.get(cube_id, ""))
    result.budgeted[system].add(ms, mos.tokenizer.count("\n".join(lines)), _turns(kept), evidence, category)


def _turns(dia_ids: Sequence[str]) -> list[str]:
    """Distinct turn ids in order (a turn carried twice counts once)."""
    seen: dict[str, None] = {}
    for dia in dia_ids:
        if dia:
            seen.setdefault(dia, None)
    return list(seen)


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def render(result: Run, args: argparse.Namespace) -> str:
    """The results page (markdown)."""
    lines = [
        "# LoCoMo retrieval benchmark",
        "",
        f"Data: `{args.data.name}` — {result.conversations} conversations, {result.turns} turns, "
        f"{result.scores[SYSTEMS[0]].count('all')} questions. Embedder: `{args.embedder}`. Paging preset: "
        f"`{args.preset}`, **no LLM: paging, summaries and promotion use the deterministic extractive fallbacks**. "
        f"Working-set budget: {args.budget} tokens.",
        "",
        "Turn-level evidence recall@k (percent; k counts turns, an item counts every turn it carries; a question "
        "without evidence counts as recalled):",
        "",
    ]
    header = ["system", "questions", *[f"R@{k}" for k in KS], *[f"hit@{k}" for k in KS]]
    rows = []
    for group, label in (("all", "all (1-5)"), ("1-4", "1-4")):
        for system in SYSTEMS:
            s = result.scores[system]
            rows.append(
                [
                    f"{system}, {label}",
                    str(s.count(group)),
                    *[f"{s.mean('recall', group, k):.1f}" for k in KS],
                    *[f"{s.mean('hit', group, k):.1f}" for k in KS],
                ]
            )
    lines += table(header, rows, "lr" + "r" * 2 * len(KS))
    lines += ["", "Per category id (R@5 / R@10 / R@25 / R@50):", ""]
    header = ["category", "n", *SYSTEMS]
    rows = []
    for cat, name in CATEGORIES.items():
        group = str(cat)
        cells = [" / ".join(f"{result.scores[s].mean('recall', group, k):.1f}" for k in KS) for s in SYSTEMS]
        rows.append([f"{cat} ({name})", str(result.scores[SYSTEMS[0]].count(group)), *cells])
    lines += table(header, rows, "lr" + "r" * len(SYSTEMS))
    r10 = result.scores[SYSTEMS[0]].mean("recall", "all", 10)
    memos = result.budgeted[SYSTEMS[0]]
    goal = "met" if r10 >= 80 and max(memos.tokens) <= 1500 else "NOT met"
    lines += [
        "",
        f"What each system hands an LLM within the {args.budget}-token budget (memos: the packed working set; "
        "baselines: their best pages as dated lines, best first, while they fit), and the time per question "
        "(query embedding included where the system embeds):",
        "",
    ]
    rows = [
        [
            system,
            f"{statistics.median(b.tokens):.0f}",
            str(max(b.tokens)),
            f"{statistics.median(b.turns):.0f}",
            f"{100 * statistics.mean(b.recall):.1f}",
            f"{100 * statistics.mean(b.recall_14):.1f}" if b.recall_14 else "nan",
            f"{_pct(b.ms, 0.5):.1f}",
            f"{_pct(b.ms, 0.95):.1f}",
        ]
        for system, b in result.budgeted.items()
    ]
    header = [
        "system",
        "tokens (median)",
        "tokens (max)",
        "turns (median)",
        "evidence in it, all",
        "1-4",
        "p50 ms",
        "p95 ms",
    ]
    lines += table(header, rows, "lrrrrrrr")
    lines += [
        "",
        "- memos latency covers the query embedding, both indexes, scoring, packing and the heat updates",
        f"- ingest: {result.turns} turns in {result.ingest_seconds:.1f} s = "
        f"{result.turns / result.ingest_seconds:.0f} turns/s (embedding, writes and a paging tick per session)",
        f"- after ingest: {', '.join(f'{k} {v}' for k, v in sorted(result.levels.items()))}",
        f"- paging: {', '.join(f'{k} {v}' for k, v in sorted(result.paging.items()))}",
        "",
        f"**Goal: R@10 >= 80 over all categories with the working set at most 1,500 tokens: {goal}** "
        f"(R@10 = {r10:.1f}).",
        "",
        "Published anchors (turn-level recall on the full 10-conversation file, not this split):",
        "",
    ]
    lines += table(["system", *[f"R@{k}" for k in KS]], [[n, *map(str, v)] for n, v in ANCHORS], "l" + "r" * len(KS))
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    # the data file lives wherever the user keeps it: name it, not its folder
    command = command_line().replace(str(args.data), f"PATH/TO/{args.data.name}")
    lines += [f"- measured: {kernel_version()}", "", "## Command", "", f"    {command}", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a LoCoMo-format JSON file")
    parser.add_argument("--embedder", default="minilm", help="minilm (default), hash[:DIM] or openai:MODEL")
    parser.add_argument("--budget", type=int, default=1500, help="working-set budget in tokens")
    parser.add_argument("--preset", default="paper", help="paging preset: paper or reference-code")
    parser.add_argument("--conversations", type=int, default=0, help="only the first N conversations")
    parser.add_argument("--questions", type=int, default=0, help="only the first N questions per conversation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "locomo.md")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write it to --out."""
    args = parse_args(argv)
    result = run(args)
    page = render(result, args)
    publish(page, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
