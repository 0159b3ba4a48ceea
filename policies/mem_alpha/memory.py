"""Mem-α's memory: a core paragraph plus semantic and episodic item lists, addressed by short ids.

The state lives in memory; a backend (`backends.py`) loads it from the kernel's cubes or keeps it
in a scratch copy, so the agent and the RL environment render and edit the exact same structure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from memos.tokens import Tokenizer, get_tokenizer, truncate_to_tokens

from .search import bm25_top

CORE = "core"
SEMANTIC = "semantic"
EPISODIC = "episodic"
REGIONS = (CORE, SEMANTIC, EPISODIC)
#: the regions holding item lists (core is one paragraph)
LIST_REGIONS = (SEMANTIC, EPISODIC)
MAX_CORE_TOKENS = 512
#: appended to a core paragraph cut at MAX_CORE_TOKENS, so the model sees that text was lost
TRUNCATION_MARKER = " [...truncated]"
#: hits a search returns unless told otherwise (the paper's top 20)
SEARCH_TOP_K = 20
SEARCH_METHODS = ("bm25", "text-embedding")

#: searcher(state, region, query, k) -> short ids of the region's best items, best first
Searcher = Callable[["MemoryState", str, str, int], list[str]]


@dataclass
class Entry:
    """One semantic or episodic item: the short id the model sees, its text, and its cube (once stored)."""

    short_id: str
    text: str
    #: the kernel cube holding it; None while it exists only in memory
    cube_id: str | None = None


def short_id(text: str, taken: set[str] | dict[str, Entry]) -> str:
    """A 4-hex-digit id derived from the text, lengthened (then salted) until it is not taken."""
    digest = hashlib.sha1(text.encode()).hexdigest()
    for length in range(4, len(digest) + 1):
        if digest[:length] not in taken:
            return digest[:length]
    salt = 1
    while (candidate := hashlib.sha1(f"{text}\x00{salt}".encode()).hexdigest()[:8]) in taken:
        salt += 1
    return candidate


class MemoryState:
    """Core text plus semantic and episodic items (oldest first), with the edits Mem-α's tools make."""

    def __init__(self, tokenizer: Tokenizer | None = None, *, max_core_tokens: int = MAX_CORE_TOKENS) -> None:
        #: counts tokens for the core limit and the compression reward
        self.tokenizer: Tokenizer = tokenizer or get_tokenizer()
        self.max_core_tokens = max_core_tokens
        #: the core paragraph; never more than max_core_tokens tokens ("" when cleared)
        self.core = ""
        #: the cube holding the core paragraph; None while it is only in memory
        self.core_cube_id: str | None = None
        #: region -> short id -> entry, in insertion order (oldest first); ids are unique per region
        self.items: dict[str, dict[str, Entry]] = {region: {} for region in LIST_REGIONS}
        #: dense search over a region; None: "text-embedding" searches fall back to BM25
        self.embedding_search: Searcher | None = None

    # ---- reads -------------------------------------------------------------------------------

    def entries(self, region: str) -> list[Entry]:
        """A region's items, oldest first."""
        return list(self.items[region].values())

    def get(self, region: str, item_id: str) -> Entry | None:
        """The item with this short id, or None."""
        return self.items[region].get(item_id)

    def num_tokens(self) -> int:
        """Tokens of the stored texts (core plus every item), without rendering markup."""
        texts = [self.core, *(e.text for region in LIST_REGIONS for e in self.items[region].values())]
        return sum(self.tokenizer.count(text) for text in texts if text)

    def render(self, max_recent: int | None = None) -> str:
        """The core, semantic and episodic blocks (`<core_memory>`...); lists cut to the newest `max_recent`."""
        blocks = [f"<core_memory>\n{self.core or '(empty)'}\n</core_memory>"]
        for region in LIST_REGIONS:
            entries = self.entries(region)
            shown = entries if max_recent is None else entries[max(0, len(entries) - max_recent) :]
            lines = []
            if len(shown) < len(entries):
                lines.append(f"({len(entries) - len(shown)} older items not shown)")
            lines.extend(f"[{e.short_id}] {e.text}" for e in shown)
            if not entries:
                lines.append("(empty)")
            blocks.append(f"<{region}_memory>\n" + "\n".join(lines) + f"\n</{region}_memory>")
        return "\n".join(blocks)

    def search(self, region: str, query: str, method: str = "bm25", k: int = SEARCH_TOP_K) -> list[Entry]:
        """The region's items best matching the query (core: itself when it shares a word)."""
        if region == CORE:
            return [Entry("core", self.core)] if self.core and bm25_top(query, [self.core], 1) else []
        entries = self.entries(region)
        if method == "text-embedding" and self.embedding_search is not None:
            ids = self.embedding_search(self, region, query, k)
            return [self.items[region][i] for i in ids if i in self.items[region]][:k]
        return [entries[i] for i in bm25_top(query, [e.text for e in entries], k)]

    # ---- edits (each returns a signal, never raises on a bad id) -----------------------------

    def set_core(self, text: str) -> bool:
        """Replace the core paragraph ('' clears it); True when it had to be truncated."""
        text = text.strip()
        if self.tokenizer.count(text) <= self.max_core_tokens:
            self.core = text
            return False
        room = self.max_core_tokens - self.tokenizer.count(TRUNCATION_MARKER)
        head = truncate_to_tokens(text, room, self.tokenizer).rstrip()
        # BPE may merge across the seam: shorten the head until head + marker fits
        while head and self.tokenizer.count(head + TRUNCATION_MARKER) > self.max_core_tokens:
            head = truncate_to_tokens(head, self.tokenizer.count(head) - 1, self.tokenizer).rstrip()
        self.core = head + TRUNCATION_MARKER
        return True

    def insert(self, region: str, text: str) -> Entry | None:
        """Add an item; None when the region already holds exactly this text."""
        text = text.strip()
        items = self.items[region]
        if any(e.text == text for e in items.values()):
            return None
        entry = Entry(short_id(text, items), text)
        items[entry.short_id] = entry
        return entry

    def update(self, region: str, item_id: str, text: str) -> Entry | None:
        """Replace an item's text (its id stays); None when there is no such item."""
        entry = self.items[region].get(item_id)
        if entry is None:
            return None
        entry.text = text.strip()
        return entry

    def delete(self, region: str, item_id: str) -> Entry | None:
        """Remove an item; the removed entry, or None when there is no such item."""
        return self.items[region].pop(item_id, None)

    def add_stored(self, region: str, item_id: str, text: str, cube_id: str | None) -> Entry:
        """Put back an item already stored elsewhere, keeping its id (backends use this to load)."""
        entry = Entry(item_id, text, cube_id)
        self.items[region][item_id] = entry
        return entry

    def copy(self) -> MemoryState:
        """An independent copy (same tokenizer and searcher)."""
        other = MemoryState(self.tokenizer, max_core_tokens=self.max_core_tokens)
        other.core = self.core
        other.core_cube_id = self.core_cube_id
        other.items = {
            region: {i: Entry(e.short_id, e.text, e.cube_id) for i, e in entries.items()}
            for region, entries in self.items.items()
        }
        other.embedding_search = self.embedding_search
        return other
