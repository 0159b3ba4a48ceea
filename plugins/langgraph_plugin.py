"""The `langgraph-store` plugin's entry point: registers the store factory without importing LangGraph.

Plugins load on the first kernel event (every `memos add` emits one); LangGraph's store module is
imported only when a store is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memos.hooks import Register, hookimpl

if TYPE_CHECKING:
    from memos.kernel import Session

    from .langgraph_store import MemosStore

NAME = "langgraph-store"


def make_store(session: Session, **options: Any) -> MemosStore:
    """`MemosStore(session, **options)`: LangGraph's BaseStore over the session's memory."""
    from .langgraph_store import MemosStore

    return MemosStore(session, **options)


@hookimpl
def memos_register_agents(register: Register) -> None:
    """Register the store factory as "langgraph-store": factory(session, **options) -> MemosStore."""
    register(NAME, make_store)
