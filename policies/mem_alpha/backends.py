"""Where a Mem-α memory is kept: cubes in the kernel (the policy), or a scratch copy (RL rollouts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from memos.cube import Level, Namespace, ns_path, parse_namespace
from memos.errors import UserError
from memos.policy import MemoryOp, OpKind, apply_ops

from .memory import CORE, LIST_REGIONS, MemoryState, Searcher, short_id

if TYPE_CHECKING:
    from memos.embed import Embedder
    from memos.kernel import Session
    from memos.tokens import Tokenizer

POLICY_NAME = "mem-alpha"
#: the cube label holding an item's short id, so ids survive a reload
ITEM_LABEL = "item"


@runtime_checkable
class MemoryBackend(Protocol):
    """Keeps a Mem-α memory between chunks: `load` a state to edit, `save` the edited state."""

    def load(self) -> MemoryState:
        """The stored memory, as an independent state the caller may edit."""
        ...

    def save(self, state: MemoryState) -> None:
        """Store an edited state (one returned by `load`, then changed)."""
        ...


class ScratchBackend:
    """A memory kept only in this process: for RL rollouts that must not touch a home."""

    def __init__(self, tokenizer: Tokenizer | None = None, *, embedder: Embedder | None = None) -> None:
        #: the saved memory; load() hands out copies so callers never edit it in place
        self.state = MemoryState(tokenizer)
        if embedder is not None:
            self.state.embedding_search = embedding_searcher(embedder)

    def load(self) -> MemoryState:
        """A copy of the saved memory."""
        return self.state.copy()

    def save(self, state: MemoryState) -> None:
        """Keep a copy of the state."""
        self.state = state.copy()


class KernelBackend:
    """A memory kept as cubes in one namespace, labelled policy=<name>, region=<region> (items: item=<id>)."""

    def __init__(
        self, session: Session, namespace: Namespace | Sequence[str] | str, *, policy: str = POLICY_NAME
    ) -> None:
        #: every read and change is made as this session's user (rights checked, changes audited)
        self.session = session
        #: the region cubes live in exactly this namespace (cubes below it are not part of the memory)
        self.namespace = parse_namespace(namespace)
        #: the `policy` label value marking this memory's cubes
        self.policy = policy

    def load(self) -> MemoryState:
        """The namespace's region cubes (this namespace only, not below it), oldest first."""
        state = MemoryState(self.session.mos.tokenizer)
        path = ns_path(self.namespace)
        # a namespace holds few region cubes, so filtering the listing here is cheap enough
        for cube in self.session.list(self.namespace):
            labels = cube.header.labels
            if ns_path(cube.namespace) != path or labels.get("policy") != self.policy:
                continue
            region = labels.get("region")
            if region == CORE:
                # one core cube is written; should there be more, the newest wins
                state.core, state.core_cube_id = cube.text, cube.id
            elif region in LIST_REGIONS:
                item_id = labels.get(ITEM_LABEL, "")
                if not item_id or item_id in state.items[region]:
                    item_id = short_id(cube.text, state.items[region])
                state.add_stored(region, item_id, cube.text, cube.id)
        state.embedding_search = self._recall
        return state

    def plan(self, before: MemoryState, after: MemoryState) -> list[MemoryOp]:
        """The operations that turn `before` (as loaded) into `after`; see `plan_ops`."""
        return plan_ops(before, after, policy=self.policy)

    def save(self, state: MemoryState) -> None:
        """Apply the difference from what is stored now, as the session's user; UserError if a change fails."""
        results = apply_ops(self.session, self.namespace, self.plan(self.load(), state), policy=self.policy)
        failed = [r for r in results if not r.ok]
        if failed:
            raise UserError(
                f"{len(failed)} of {len(results)} Mem-α memory changes failed; first: {failed[0].error}",
                namespace=ns_path(self.namespace),
            )

    def _recall(self, state: MemoryState, region: str, query: str, k: int) -> list[str]:
        # the kernel's hybrid recall, restricted to the region's cubes; sees what is stored, not pending edits
        path = ns_path(self.namespace)
        hits = self.session.recall(self.namespace, query, k, labels={"policy": self.policy, "region": region})
        return [
            h.cube.header.labels[ITEM_LABEL]
            for h in hits
            if ns_path(h.cube.namespace) == path and ITEM_LABEL in h.cube.header.labels
        ]


def plan_ops(before: MemoryState, after: MemoryState, *, policy: str = POLICY_NAME) -> list[MemoryOp]:
    """Inserts for new core/items, updates for changed texts, deletes for cleared core and removed items.

    `before` is the state as loaded (entries carry cube ids); `after` is a copy of it edited by tools.
    An item inserted and changed within one chunk becomes one insert of its final text.
    """
    ops: list[MemoryOp] = []
    base = {"policy": policy}
    if after.core_cube_id is None:
        if after.core:
            ops.append(MemoryOp(OpKind.insert, after.core, region=CORE, level=Level.long, labels=base))
    elif not after.core:
        ops.append(MemoryOp(OpKind.delete, cube_id=after.core_cube_id, region=CORE))
    elif after.core != before.core:
        ops.append(MemoryOp(OpKind.update, after.core, cube_id=after.core_cube_id, region=CORE))
    for region in LIST_REGIONS:
        stored = {e.cube_id: e for e in before.entries(region) if e.cube_id}
        kept: set[str] = set()
        for entry in after.entries(region):
            if entry.cube_id is None:
                labels = {**base, ITEM_LABEL: entry.short_id}
                ops.append(MemoryOp(OpKind.insert, entry.text, region=region, level=Level.long, labels=labels))
                continue
            kept.add(entry.cube_id)
            old = stored.get(entry.cube_id)
            if old is not None and old.text != entry.text:
                ops.append(MemoryOp(OpKind.update, entry.text, cube_id=entry.cube_id, region=region))
        ops.extend(MemoryOp(OpKind.delete, cube_id=cube_id, region=region) for cube_id in stored if cube_id not in kept)
    return ops


def embedding_searcher(embedder: Embedder) -> Searcher:
    """Dense search for a scratch memory: cosine between the query and each item, with `embedder`."""

    def search(state: MemoryState, region: str, query: str, k: int) -> list[str]:
        entries = state.entries(region)
        if not entries:
            return []
        vectors = embedder.embed([query, *(e.text for e in entries)])
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [entries[int(i)].short_id for i in order]

    return search
