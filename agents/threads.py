"""Conversation threads of the LangGraph agents: checkpoints in a SQLite file of the memos home.

Every agent graph of a home checkpoints into `<home>/agents/threads.sqlite` through LangGraph's
`SqliteSaver`, so a conversation resumes under the same thread id after the home is closed and
opened again. A thread belongs to one user: its checkpoint key is `USER/THREAD`, so two users may
use the same thread name without reading each other's conversation.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from memos.errors import UserError

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from memos.kernel import MemOS

#: the checkpoint database, relative to the memos home
THREADS_FILE = Path("agents") / "threads.sqlite"
#: what a thread id may look like: it is typed by users (`memos chat --thread ID`) and part of a key
_THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_thread_id(thread_id: object) -> str:
    """A valid thread id (1-64 letters, digits, '.', '_', '@' or '-'), or UserError saying what is wrong."""
    if not isinstance(thread_id, str) or not _THREAD_ID.match(thread_id):
        raise UserError(
            f"invalid thread id {thread_id!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return thread_id


def thread_key(user: str, thread_id: str) -> str:
    """The checkpoint key of a user's thread: `USER/THREAD`."""
    return f"{user}/{check_thread_id(thread_id)}"


def threads_path(mos: MemOS) -> Path:
    """Where the home keeps its agents' conversation threads."""
    return mos.home / THREADS_FILE


def open_thread_store(mos: MemOS) -> SqliteSaver:
    """LangGraph's SqliteSaver on the home's thread database (created if missing); close its `conn` when done."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = threads_path(mos)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the saver serialises its own use of the connection with a lock; graph steps run on worker threads
        conn = sqlite3.connect(path, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise UserError(f"cannot open the conversation threads at {path}: {exc}; check the home's permissions") from exc
    saver = SqliteSaver(conn)
    try:
        saver.setup()
    except sqlite3.Error as exc:
        conn.close()
        raise UserError(f"{path} is not a usable thread database ({exc}); move it away to start afresh") from exc
    return saver
