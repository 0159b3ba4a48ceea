"""`memos example-hello`: a command a plugin adds to the memos CLI."""

from __future__ import annotations

from typing import Annotated

import typer


def hello(name: Annotated[str, typer.Argument(help="Who to greet.")] = "world") -> None:
    """Greet someone, to show that a plugin's command runs as `memos example-hello`."""
    typer.echo(f"hello, {name}, from memos-plugin-example")
