"""memos demo: ingest a five-session conversation with Maya, ask it questions and show why each memory ranked,
then page it into the memory hierarchy and show the working set one LLM call would get.

    python examples/demo.py [HOME] [--embedder hash]

HOME (default ./.demo/home) is deleted first. Runs offline: the default embedder is the local MiniLM model,
`--embedder hash` uses the deterministic hashing embedder (no model at all).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from memos import Hit, MemOS, MemosError, Session
from memos.ingest import iter_batches, scan

DATA = Path(__file__).resolve().parent / "data" / "conversation.json"
NAMESPACE = ("maya", "chat")
#: (question, recall keyword arguments): one question also filters by event time
QUESTIONS: list[tuple[str, dict[str, str]]] = [
    ("Where does Maya live now?", {}),
    ("What is the name of Maya's dog?", {}),
    ("What is Maya's brother called and what does he study?", {}),
    ("Where did Maya travel in June?", {}),
    ("Which company does Maya work for?", {}),
    ("What does Maya drink in the morning these days?", {"event_from": "2023-08-01"}),
]
#: the question whose working set the hierarchy step shows, and its token budget
CONTEXT_QUESTION = "When did Maya adopt her greyhound, and what is she called?"
CONTEXT_BUDGET = 300


def fresh_home(path: Path) -> Path:
    """Delete a previous demo home, refusing to touch a folder that is not one."""
    path = path.expanduser().resolve()
    if path.exists():
        if any(path.iterdir()) and not (path / "memos.toml").is_file():
            raise SystemExit(f"refusing to delete {path}: it is not empty and has no memos.toml")
        shutil.rmtree(path)
    return path


def hits_table(question: str, hits: list[Hit]) -> Table:
    """One question's top recalls: fused score, dense cosine, BM25, event date, provenance and text."""
    table = Table(title=question, title_justify="left", title_style="bold")
    table.add_column("#", justify="right")
    table.add_column("fused", justify="right")
    table.add_column("dense", justify="right")
    table.add_column("bm25", justify="right")
    table.add_column("event date", no_wrap=True)
    table.add_column("turn", no_wrap=True)
    table.add_column("text", ratio=1, min_width=30)
    for rank, hit in enumerate(hits, start=1):
        header = hit.cube.header
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            "-" if hit.dense is None else f"{hit.dense:.3f}",
            "-" if hit.lexical is None else f"{hit.lexical:.2f}",
            header.event_time.strftime("%Y-%m-%d") if header.event_time else "-",
            header.provenance.external_id or "-",
            hit.cube.text,
        )
    return table


def plural(count: int, noun: str) -> str:
    """'1 segment', '2 segments'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def show_hierarchy(console: Console, maya: Session) -> None:
    """Tick (paging: short -> mid -> long term), show the hierarchy, then the working set for one question."""
    started = time.perf_counter()
    done = maya.tick()
    console.rule("memory hierarchy")
    console.print(
        f"tick in {time.perf_counter() - started:.1f}s: moved {plural(done.get('moved', 0), 'page')} from short- "
        f"to mid-term ({plural(done.get('segments_created', 0), 'new segment')}, "
        f"{plural(done.get('merged', 0), 'merge')}), promoted {plural(done.get('promoted', 0), 'segment')} "
        f"({plural(done.get('knowledge_written', 0), 'knowledge cube')} written), "
        f"paged out {plural(done.get('paged_out', 0), 'segment')}"
    )
    stats = maya.stats(NAMESPACE)
    paging = stats.paging
    console.print(
        f"pages: {paging.get('short_pages', 0)} short-term, {paging.get('mid_pages', 0)} mid-term "
        f"in {paging.get('segments', 0)} segments ({paging.get('paged_out_pages', 0)} paged out); "
        f"long-term: {paging.get('profiles', 0)} profile, {paging.get('user_knowledge', 0)} user and "
        f"{paging.get('assistant_knowledge', 0)} assistant knowledge cubes"
    )
    if stats.hottest:
        top = stats.hottest[0]
        console.print(
            f"hottest segment: heat {top.heat:.2f}, {plural(top.visits, 'visit')}, {plural(top.pages, 'page')}: "
            f"{top.summary if len(top.summary) <= 80 else top.summary[:79] + '…'}",
            markup=False,
        )
    working = maya.context(NAMESPACE, CONTEXT_QUESTION, CONTEXT_BUDGET)
    console.print()
    console.print(
        Panel(
            # the prompt text is shown as is: its [dates] are not rich markup
            Text(working.render()),
            title=f"working set: {CONTEXT_QUESTION}",
            title_align="left",
            subtitle=f"{len(working)} items, {working.tokens}/{CONTEXT_BUDGET} tokens",
            subtitle_align="left",
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", nargs="?", default="./.demo/home", help="demo home (deleted first)")
    parser.add_argument("--embedder", default=None, help="minilm (default setting), hash, hash:DIM")
    parser.add_argument("-k", type=int, default=5, help="recalls per question")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    home = fresh_home(Path(args.home))
    # paging runs in the hierarchy step's tick rather than in the background after each write, so the
    # recall tables show the conversation as written and the tick shows every paging move
    overrides: dict[str, object] = {"auto_paging": False}
    if args.embedder:
        overrides["embedder"] = args.embedder
    try:
        with MemOS.open(home, **overrides) as mos:
            maya = mos.as_user("maya")
            found = scan(DATA, max_text_chars=mos.settings.max_text_chars)
            started = time.perf_counter()
            for _, batch in iter_batches(DATA, size=64):
                maya.write_many(NAMESPACE, batch)
            console.print(
                f"[bold]memos demo[/bold]: {found.num_turns} turns in {found.num_sessions} sessions from {DATA.name} "
                f"into {'/'.join(NAMESPACE)} in {time.perf_counter() - started:.1f}s "
                f"(embedder {mos.embedder.id}, home {home})\n"
            )
            for question, filters in QUESTIONS:
                hits = maya.recall(NAMESPACE, question, k=args.k, **filters)
                table = hits_table(question, hits)
                if filters:
                    table.caption = "filtered: " + ", ".join(f"{k}={v}" for k, v in filters.items())
                console.print(table)
                console.print()
            show_hierarchy(console, maya)
    except MemosError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
