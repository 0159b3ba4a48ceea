"""G-Memory as a plugin: registered as an agent memory ("gmemory") that a team builds for a session.

G-Memory is not an ingest policy (it does not decide, chunk by chunk, what to write) nor an agent
loop of its own: it is the memory a multi-agent team calls at task start, on each message and at
task end. `memos_register_agents` is the hook for things built per session with options, so it is
registered there: `get_registry().agents["gmemory"](session, llm=..., name=...) -> GMemory`.

It implements no `memos_on_task_end`: a team already calls its memory's `on_task_end` directly (and
then emits that event itself, with its `TeamResult`), and the event does not say which G-Memory the
task belongs to; after a single-agent episode (`Session.agent`) there is no team trace to learn from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memos.hooks import Register, hookimpl
from memos.plugins.gmemory.memory import GMemory

if TYPE_CHECKING:
    from memos.kernel import Session
    from memos.llm.base import LLM

NAME = "gmemory"


def make_memory(session: Session, *, llm: LLM | None = None, name: str = "default", **options: Any) -> GMemory:
    """A GMemory for a session: the given LLM or the kernel's (or none: deterministic fallbacks)."""
    return GMemory(session, llm, name=name, **options)


@hookimpl
def memos_register_agents(register: Register) -> None:
    """Register the G-Memory factory under "gmemory"."""
    register(NAME, make_memory)
