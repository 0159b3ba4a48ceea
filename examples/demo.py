"""memos demo: ingest a five-session conversation with Maya, then ask it questions and show why each memory ranked.

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
from rich.table import Table

from memos import Hit, MemOS, MemosError
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
    overrides = {"embedder": args.embedder} if args.embedder else {}
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
    except MemosError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
