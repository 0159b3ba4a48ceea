"""The context command: the working set the scheduler would hand an LLM for a query."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import console, fmt_time, open_session, print_json, shorten

if TYPE_CHECKING:
    from memos.scheduler import WorkingItem, WorkingSet


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
        working = session.context(namespace or session.user, query, budget)
    if as_json:
        print_json(working_set_json(working))
        return
    if not working.items:
        typer.echo(f"no memories fit (budget {budget} tokens)")
        return
    typer.echo(working.render())
    typer.echo(f"-- {len(working.items)} items, {working.tokens}/{budget} tokens" + _paged_in(working))
    if explain:
        console().print(why_table(working.items))


def _paged_in(working: WorkingSet) -> str:
    return f", paged back in {len(working.paged_in)} segment(s)" if working.paged_in else ""


def working_set_json(working: WorkingSet) -> dict[str, Any]:
    """The working set as plain JSON data."""
    return {
        "namespace": "/".join(working.namespace),
        "query": working.query,
        "budget_tokens": working.budget_tokens,
        "tokens": working.tokens,
        "temporal": working.temporal,
        "paged_in": working.paged_in,
        "prompt": working.render(),
        "items": [
            {
                "id": item.cube.id,
                "section": item.section,
                "level": item.cube.level.value,
                "score": item.score if item.score != float("inf") else None,
                "why": item.why,
                "heat": item.heat,
                "segment": item.segment,
                "tokens": item.tokens,
                "event_time": item.cube.header.event_time.isoformat() if item.cube.header.event_time else None,
                "text": item.cube.text,
            }
            for item in working.items
        ],
    }


def why_table(items: list[WorkingItem]) -> Any:
    """A table of the items with their score parts."""
    from rich.table import Table

    table = Table(show_lines=False)
    for name, justify in (
        ("section", "left"),
        ("level", "left"),
        ("score", "right"),
        ("relevance", "right"),
        ("group", "right"),
        ("heat", "right"),
        ("event", "left"),
        ("text", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for item in items:
        table.add_row(
            item.section,
            item.cube.level.value,
            "-" if item.score == float("inf") else f"{item.score:.2f}",
            f"{item.why.get('relevance', 0.0):.2f}",
            f"{item.why.get('group', 0.0):.2f}",
            f"{item.heat:.2f}",
            fmt_time(item.cube.header.event_time),
            shorten(item.cube.text, 60),
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the context command to the app."""
    app.command()(context)
