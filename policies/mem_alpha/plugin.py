"""Registers the Mem-α policy under the name users select it by: `--policy mem-alpha`."""

from __future__ import annotations

from memos.hooks import Register, hookimpl

from .agent import MemAlphaPolicy


@hookimpl
def memos_register_policies(register: Register) -> None:
    """`mem-alpha`: MemAlphaPolicy() uses the home's LLM (MEMOS_LLM) and raises UserError when none is set."""
    register(MemAlphaPolicy.name, MemAlphaPolicy)
