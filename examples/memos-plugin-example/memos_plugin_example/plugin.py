"""The plugin module the entry point names: its hooks register what this package adds to memos."""

from __future__ import annotations

from memos.hooks import Register, hookimpl

from .cli import hello
from .embedder import make_charfreq
from .policy import KeepQuestionsPolicy


@hookimpl
def memos_register_policies(register: Register) -> None:
    """`memos ingest FILE --policy keep-questions`."""
    register("keep-questions", KeepQuestionsPolicy)


@hookimpl
def memos_register_embedders(register: Register) -> None:
    """`--embedder charfreq:DIM` (or MEMOS_EMBEDDER=charfreq:DIM)."""
    register("charfreq", make_charfreq)


@hookimpl
def memos_register_cli_commands(register: Register) -> None:
    """`memos example-hello [NAME]`."""
    register("example-hello", hello)
