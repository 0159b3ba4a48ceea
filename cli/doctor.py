"""`memos doctor`: check that catalog, vector index, lexical index and blobs agree; `--repair` fixes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import open_home, plural, print_json

if TYPE_CHECKING:
    from memos.doctor import Problem, Report


def doctor(
    ctx: typer.Context,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what is found: re-index from the catalog, delete orphans.")
    ] = False,
    sample: Annotated[
        int,
        typer.Option("--sample", min=0, help="Cubes whose stored vector is compared with a fresh embedding."),
    ] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check that the catalog, vector index, lexical index and blobs agree; exit 1 while problems remain."""
    from memos import doctor as checks

    with open_home(ctx) as mos:
        report = checks.repair(mos, sample=sample) if repair else checks.check(mos, sample=sample)
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo("\n".join(report_lines(report)))
    if not report.ok:
        raise typer.Exit(1)


def report_lines(report: Report) -> list[str]:
    """A doctor report as lines of text: what was checked, what was found, done and left."""
    c = report.checked.get
    lines = [
        f"checked {plural(c('cubes', 0), 'cube')}, {plural(c('vectors', 0), 'vector')} "
        f"({c('vectors_verified', 0)} re-embedded to verify), {plural(c('lexical_rows', 0), 'lexical row')}, "
        f"{plural(c('blobs', 0), 'blob')}"
    ]
    if report.found:
        lines.append("found:")
        lines += [_line(p) for p in report.found]
    if report.actions:
        lines.append("repaired: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.actions.items()))
    if report.ok:
        lines.append("ok: catalog, vectors, lexical index and blobs agree")
    else:
        lines.append("problems:")
        lines += [_line(p) for p in report.problems]
        if not report.found:
            lines.append("run `memos doctor --repair` to fix them")
    return lines


def _line(problem: Problem) -> str:
    examples = f" (e.g. {', '.join(problem.examples)})" if problem.examples else ""
    return f"  {problem.kind}: {problem.count}: {problem.description}{examples}"


def register(app: typer.Typer) -> None:
    """Add the doctor command to the app."""
    app.command()(doctor)
