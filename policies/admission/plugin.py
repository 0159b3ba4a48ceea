"""Registers the admission policy with memos (entry point `admission` in group `memos.plugins`)."""

from __future__ import annotations

from memos.hooks import Register, hookimpl

from .policy import AdmissionPolicy


@hookimpl
def memos_register_policies(register: Register) -> None:
    """`--policy admission`: the trained model in the home if there is one, else the heuristic; 25 % budget."""
    register(AdmissionPolicy.name, AdmissionPolicy)
