"""The context command: the working set the scheduler would hand an LLM for a query."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import console, open_session, plural, print_json

if TYPE_CHECKING:
    from rich.table import Table

    from memos.scheduler import WorkingItem, WorkingSet

#: score parts added on top of relevance, group and neighbour, with the names `--explain` shows
_BONUSES = (("speaker", "speaker"), ("heat", "heat"), ("recency", "recency"), ("temporal", "when"))
#: a bonus smaller than this is left out of the explain table (the JSON has every part)
_SHOWN_BONUS = 0.005


def context(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="The request the context is for.")],
    namespace: Annotated[
        str | None, typer.Option("--ns", "-n", help="Namespace to draw from (default: your own root namespace).")
    ] = None,
    budget: Annotated[int, typer.Option("--budget", "-b", help="Token budget of the working set.")] = 1500,
    explain: Annotated[bool, typer.Option("--explain", help="Also show why each item was chosen.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the working set as JSON.")] = False,
) -> None:
    """Show the working set for a query: the memories chosen, packed into the budget, as prompt text."""
    with open_session(ctx) as session:
        # an explicit --ns (even an empty one) goes to the kernel to be checked; only a missing one defaults
        working = session.context(session.user if namespace is None else namespace, query, budget)
    if as_json:
        print_json(working_set_json(working))
        return
    if not working.items:
        typer.echo(_nothing(working))
        return
    typer.echo(working.render())
    typer.echo(footer(working))
    if explain:
        console().print(why_table(working))


def _nothing(working: WorkingSet) -> str:
    where = "/".join(working.namespace)
    if not working.ranked:
        return f"no memories under {where} match"
    return f"no memory fits in {plural(working.budget_tokens, 'token')} ({plural(len(working.ranked), 'candidate')})"


def footer(working: WorkingSet) -> str:
    """The line under the prompt text: items, tokens used of the budget, segments paged back in."""
    line = (
        f"-- {plural(len(working.items), 'item')}, {working.tokens}/{working.budget_tokens} tokens, "
        f"{plural(len(working.ranked), 'candidate')} ranked"
    )
    if working.temporal:
        line += ", dates favoured (a when-question)"
    if working.paged_in:
        line += f", paged back in {plural(len(working.paged_in), 'segment')}"
    return line


def _score(value: float) -> float | None:
    return value if math.isfinite(value) else None


def working_set_json(working: WorkingSet) -> dict[str, Any]:
    """The working set as plain JSON data."""
    return {
        "namespace": "/".join(working.namespace),
        "query": working.query,
        "budget_tokens": working.budget_tokens,
        "tokens": working.tokens,
        "candidates": len(working.ranked),
        "temporal": working.temporal,
        "paged_in": working.paged_in,
        "prompt": working.render(),
        "items": [
            {
                "id": item.cube.id,
                "namespace": "/".join(item.cube.namespace),
                "section": item.section,
                "level": item.cube.level.value,
                "status": item.cube.status.value,
                "rank": _rank(working, item),
                "score": _score(item.score),
                "why": {key: _score(value) for key, value in item.why.items()},
                "heat": item.heat,
                "segment": item.segment,
                "tokens": item.tokens,
                "event_time": item.cube.header.event_time,
                "line": item.line,
                "text": item.cube.text,
            }
            for item in working.items
        ],
    }


def _rank(working: WorkingSet, item: WorkingItem) -> int | None:
    """The item's place among the ranked candidates (1 is best); None for the profile, which is always in."""
    if item.section == "profile":
        return None
    for rank, candidate in enumerate(working.ranked, start=1):
        if candidate is item:
            return rank
    return None


def _bonuses(item: WorkingItem) -> str:
    parts = [f"{label}{item.why[key]:+.2f}" for key, label in _BONUSES if abs(item.why.get(key, 0.0)) >= _SHOWN_BONUS]
    return " ".join(parts) or "-"


def why_table(working: WorkingSet) -> Table:
    """Why each item is in the working set: its rank, score and the parts of the score, in prompt order."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    chosen = {item.cube.id for item in working.items}
    left = sum(1 for candidate in working.ranked if candidate.cube.id not in chosen)
    caption = f"{plural(left, 'more ranked candidate')} did not fit the budget" if left > 0 else None
    table = Table(caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    # every column but the text keeps its width; the text is cut to one line to fit the terminal
    for name in ("rank", "section", "score", "relevance", "group", "neighbour", "bonuses"):
        table.add_column(name, justify="left" if name in ("section", "bonuses") else "right", no_wrap=True)
    table.add_column("text", min_width=16)
    for item in working.items:
        if item.section == "profile":
            row = ["-", item.section, "always", "-", "-", "-", "-"]
        else:
            why = item.why
            row = [
                str(_rank(working, item) or "-"),
                item.section,
                f"{item.score:.2f}",
                f"{why.get('relevance', 0.0):.2f}",
                f"{why.get('group', 0.0):.2f}",
                f"{why.get('neighbour', 0.0):.2f}",
                _bonuses(item),
            ]
        text = Text(" ".join(item.cube.text.split()), no_wrap=True, overflow="ellipsis")
        table.add_row(*row, text)
    return table


def register(app: typer.Typer) -> None:
    """Add the context command to the app."""
    app.command()(context)
