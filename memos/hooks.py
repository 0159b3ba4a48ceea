"""The plugin contract: pluggy hooks a plugin implements to register what it adds, and events it may observe.

A plugin is a module named by an entry point in group `memos.plugins`. It implements any of these
hooks with `@hookimpl`; each `memos_register_*` hook receives a `register(name, obj)` callback, so
the kernel owns the names and reports conflicts. Built-in plugins use the same entry points.

    from memos.hooks import hookimpl

    @hookimpl
    def memos_register_policies(register):
        register("my-policy", MyPolicy)          # a memos.policy.Policy subclass (or factory)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pluggy

PROJECT = "memos"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: register(name, obj): name is what users type (`--policy NAME`, `MEMOS_LLM=NAME:...`)
Register = Callable[[str, Any], None]


class Spec:
    """The hooks memos calls; a plugin implements any subset."""

    @hookspec
    def memos_register_policies(self, register: Register) -> None:
        """Register memory policies: `register(name, factory)`, factory() -> memos.policy.Policy."""

    @hookspec
    def memos_register_llm_backends(self, register: Register) -> None:
        """Register LLM backends: `register(scheme, factory)`, factory(settings, arg) -> memos.llm.LLM."""

    @hookspec
    def memos_register_embedders(self, register: Register) -> None:
        """Register embedders: `register(scheme, factory)`, factory(settings, arg) -> memos.embed.Embedder."""

    @hookspec
    def memos_register_vector_stores(self, register: Register) -> None:
        """Register vector stores: `register(scheme, factory)`, factory(settings, url) -> a vector index."""

    @hookspec
    def memos_register_agents(self, register: Register) -> None:
        """Register agents: `register(name, factory)`, factory(session, **options) -> an agent."""

    @hookspec
    def memos_register_tools(self, register: Register) -> None:
        """Register tools agents may call: `register(name, tool)`."""

    @hookspec
    def memos_register_cli_commands(self, register: Register) -> None:
        """Register CLI commands: `register(name, typer_app_or_function)`, shown under `memos NAME`."""

    @hookspec
    def memos_on_write(self, user: str, cubes: Sequence[Any]) -> None:
        """Observe cubes just written (after commit)."""

    @hookspec
    def memos_on_recall(self, user: str, query: str, hits: Sequence[Any]) -> None:
        """Observe a recall and what it returned."""

    @hookspec
    def memos_on_task_end(self, user: str, task: Any, success: bool) -> None:
        """Observe the end of an agent task (multi-agent memory evolves here)."""
