"""Commands on one cube: show, history, update, forget, restore, audit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    console,
    fmt_time,
    open_session,
    parse_labels,
    parse_when,
    print_json,
    read_text,
    shorten,
)

if TYPE_CHECKING:
    from memos.cube import MemCube

CubeId = Annotated[str, typer.Argument(help="A cube id, e.g. 01890a5d-ac96-774b-bcce-b302099a8057.")]


def show(ctx: typer.Context, cube_id: CubeId, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print a cube: its header and its text."""
    with open_session(ctx) as session:
        cube = session.get(cube_id)
    if as_json:
        print_json(cube.model_dump(mode="json"))
    else:
        typer.echo(describe(cube))


def describe(cube: MemCube) -> str:
    """A cube's header as `name: value` lines, then its text."""
    h = cube.header
    p = h.provenance
    lines = [
        f"id: {cube.id}",
        f"namespace: {'/'.join(cube.namespace)}",
        f"kind: {cube.kind.value}",
        f"level: {cube.level.value}",
        f"status: {h.lifecycle.status.value}",
        f"version: {h.version}",
        f"created: {fmt_time(h.created_at, seconds=True)}",
        f"updated: {fmt_time(h.updated_at, seconds=True)}",
        f"event time: {fmt_time(h.event_time, seconds=True)}",
        f"expires: {fmt_time(h.lifecycle.expires_at, seconds=True)}",
        f"source: {p.source.value} by {p.actor or '-'}",
    ]
    for name, value in (
        ("session", p.session_id),
        ("turn", p.turn_id),
        ("external id", p.external_id),
        ("speaker", p.speaker),
    ):
        if value is not None:
            lines.append(f"{name}: {value}")
    if p.derived_from:
        lines.append(f"derived from: {', '.join(p.derived_from)}")
    lines += [
        f"owner: {h.acl.owner}",
        f"tags: {', '.join(h.tags) or '-'}",
        f"labels: {', '.join(f'{k}={v}' for k, v in h.labels.items()) or '-'}",
        f"tokens: {h.tokens}",
        f"embedder: {h.embedder or '-'}",
        f"accessed: {h.usage.access_count} times, last {fmt_time(h.usage.last_access, seconds=True)}",
        "",
        cube.text,
    ]
    return "\n".join(lines)


def history(ctx: typer.Context, cube_id: CubeId, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every version of a cube, oldest first."""
    from rich.table import Table

    with open_session(ctx) as session:
        versions = session.history(cube_id)
    if as_json:
        print_json([v.model_dump(mode="json") for v in versions])
        return
    table = Table()
    for name in ("version", "updated", "level", "status", "tags", "text"):
        table.add_column(name, justify="right" if name == "version" else "left")
    for v in versions:
        table.add_row(
            str(v.header.version),
            fmt_time(v.header.updated_at, seconds=True),
            v.level.value,
            v.status.value,
            ", ".join(v.header.tags) or "-",
            shorten(v.text, 60),
        )
    console().print(table)


def update(
    ctx: typer.Context,
    cube_id: CubeId,
    text: Annotated[str | None, typer.Argument(help="New text ('-' reads standard input).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Replace the tags (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Replace the labels: key=value.")] = None,
    level: Annotated[str | None, typer.Option("--level", help="short, mid or long.")] = None,
    event_time: Annotated[str | None, typer.Option("--event-time", help="New event time (ISO-8601).")] = None,
    expected_version: Annotated[
        int | None, typer.Option("--expected-version", help="Fail unless the cube is at this version.")
    ] = None,
) -> None:
    """Make a new version of a cube (the old one stays in its history)."""
    labels = parse_labels(label)
    when = parse_when(event_time, "--event-time")
    body = read_text(text) if text is not None else None
    with open_session(ctx) as session:
        cube = session.update(
            cube_id, body, tags=tag, labels=labels, level=level, event_time=when, expected_version=expected_version
        )
    typer.echo(f"updated {cube.id} to version {cube.header.version}")


def forget(
    ctx: typer.Context,
    cube_id: CubeId,
    hard: Annotated[bool, typer.Option("--hard", help="Purge it and its history everywhere.")] = False,
) -> None:
    """Forget a cube: soft by default (restorable), or --hard."""
    with open_session(ctx) as session:
        session.forget(cube_id, hard=hard)
    typer.echo(f"{'purged' if hard else 'forgot'} {cube_id.lower()}")


def restore(ctx: typer.Context, cube_id: CubeId) -> None:
    """Bring a soft-forgotten cube back."""
    with open_session(ctx) as session:
        cube = session.restore(cube_id)
    typer.echo(f"restored {cube.id}")


def audit(
    ctx: typer.Context,
    cube_id: Annotated[str | None, typer.Argument(help="Only this cube's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many entries.")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Audit entries (of one cube, or of what you can read), newest first."""
    from rich.table import Table

    with open_session(ctx) as session:
        entries = session.audit(cube_id, limit=limit)
    if as_json:
        print_json(entries)
        return
    table = Table()
    for name in ("at", "actor", "action", "cube", "namespace", "detail"):
        table.add_column(name, no_wrap=name in ("at", "cube"))
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in (e.get("detail") or {}).items())
        table.add_row(
            fmt_time(e["at"], seconds=True), e["actor"], e["action"], e["cube_id"] or "-", e["ns"] or "-", detail
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    """Add the cube commands to the app."""
    for command in (show, history, update, forget, restore, audit):
        app.command()(command)
