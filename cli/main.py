"""The `memos` command: global options, the command groups, and one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from memos.errors import MemosError

from . import chat, context, cube, doctor, memory, plugins, tiers, train, users
from .common import Globals, one_line


def report(err: MemosError) -> int:
    """Print an error as one `error: ...` line on stderr and return its exit code."""
    typer.echo(f"error: {one_line(err.message)}", err=True)
    return err.exit_code


class _Group(TyperGroup):
    """The root group: a MemosError from any command becomes one line on stderr and its exit code."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, else one a plugin registered under that name."""
        command = super().get_command(ctx, cmd_name)
        if command is None:
            # plugins load only for a name that is not built in, so `memos --help` never imports them
            command = plugins.plugin_command(cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemosError as err:
            raise typer.Exit(report(err)) from None


app = typer.Typer(
    cls=_Group,
    name="memos",
    help="An operating-system-style memory for LLM agents.",
    epilog="Plugins may add commands of their own: `memos plugins list` shows them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    home: Annotated[
        str | None, typer.Option("--home", help="The memos home (default: MEMOS_HOME, else ~/.memos).")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Act as this user (default: MEMOS_USER, the home's `user`, the login name)."),
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Write logs to stderr as JSON lines.")] = False,
    embedder: Annotated[
        str | None,
        typer.Option("--embedder", help="Embedder: minilm, hash, hash:DIM, openai:MODEL or a plugin's SCHEME:ARG."),
    ] = None,
) -> None:
    """An operating-system-style memory for LLM agents."""
    ctx.obj = Globals(home=home, user=user, embedder=embedder, log_json=log_json)


memory.register(app)
cube.register(app)
users.register(app)
context.register(app)
tiers.register(app)
train.register(app)
plugins.register(app)
chat.register(app)
doctor.register(app)


def run() -> None:
    """Entry point of the `memos` console script."""
    try:
        app()
    except MemosError as err:
        sys.exit(report(err))
