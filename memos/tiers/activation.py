"""The activation tier: per namespace, one block of hot plaintext cubes served as a stable prompt prefix.

On a backend with KV injection (a local model) the block's KV cache is computed once and stored as a
safetensors blob for the model's exact fingerprint; a request whose prompt starts with exactly the
block's tokens decodes from a copy of that cache instead of prefilling them. On a server with
automatic prefix caching (vLLM) the block is the same stable prefix, warmed after each build.

Cubes that keep appearing in working sets are promoted into the block (`promote`, run by tick). A
block built for another model, or whose sources changed, is stale: it is rebuilt, never injected.
Stored blocks share a byte budget; over it the coldest block is retired (its sources stay).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memos.cube import Kind, MemCube, Status, ns_path
from memos.errors import UserError
from memos.ids import new_id
from memos.log import get_logger
from memos.scheduler import render_line
from memos.storage.catalog import CubeFilter
from memos.tiers import archive_derived, commit_derived, derived_cube
from memos.tiers.kv import KVBlock

if TYPE_CHECKING:
    from memos.kernel import MemOS
    from memos.llm.base import LLM

log = get_logger("activation")

SYSTEM_PROMPT = (
    "You are an assistant with a long-term memory. Answer from the memories you are given when they are "
    "relevant, and say so when they do not hold the answer."
)
BLOCK_TITLE = "## Long-lived memories"


def block_order(cubes: Sequence[MemCube]) -> list[MemCube]:
    """The order cubes take inside a block: by when they happened, then when written, then id."""
    return sorted(
        cubes,
        key=lambda c: ((c.header.event_time or c.header.created_at).timestamp(), c.header.created_at.timestamp(), c.id),
    )


def system_text(cubes: Sequence[MemCube]) -> str:
    """The system message a block stands for: the fixed instructions, then one dated line per cube."""
    lines = [render_line(c) for c in block_order(cubes)]
    return SYSTEM_PROMPT + (f"\n\n{BLOCK_TITLE}\n" + "\n".join(lines) if lines else "")


def backend_of(llm: LLM | None) -> str | None:
    """'kv' for a backend that injects KV blocks, 'prefix' for a prefix-caching server, else None."""
    if llm is None:
        return None
    if llm.capabilities.kv_injection:
        return "kv"
    if llm.capabilities.prefix_caching:
        return "prefix"
    return None


def model_key(llm: LLM) -> str:
    """What a block is bound to: the exact model fingerprint for KV blocks, the model id for a server."""
    return str(getattr(llm, "fingerprint", "") or llm.model_id)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ActivationTier:
    """Builds, stores, serves, promotes and evicts the activation blocks of a kernel."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        #: loaded KV blocks by blob reference, least recently used first; invariant: total bytes within
        #: settings.activation_budget_bytes and every key names the blob of an active activation cube
        self._resident: OrderedDict[str, KVBlock] = OrderedDict()
        self._lock = threading.Lock()

    # ---- lookup -------------------------------------------------------------------------------

    def current(self, ns: str) -> MemCube | None:
        """The active activation cube of exactly this namespace path, if any."""
        found = self.mos.catalog.select(
            CubeFilter(ns=ns, kinds=[Kind.activation.value], statuses=(Status.active.value,)), order="recent", limit=1
        )
        return found[0] if found else None

    def usable(self, ns: str) -> tuple[MemCube, list[MemCube], str] | None:
        """(block cube, its sources in block order, the system text) when the block fits the active model now."""
        llm = self.mos.llm
        backend = backend_of(llm)
        if backend is None or llm is None:
            return None
        cube = self.current(ns)
        if cube is None:
            return None
        if cube.blob is not None and not self.mos.blobs.exists(cube.blob):
            # imported from an archive (which carries no blobs) or lost: tick builds it again
            return None
        sources = self._sources(cube)
        if sources is None:
            return None
        text = system_text(sources)
        labels = cube.header.labels
        if (
            labels.get("model") != model_key(llm)
            or labels.get("backend") != backend
            or labels.get("digest") != _digest(text)
        ):
            # stale: another model, another backend, or sources edited since the build; tick rebuilds it
            return None
        return cube, sources, text

    def kv(self, cube: MemCube) -> KVBlock:
        """The KV block of an activation cube, loaded from its blob onto the model's device when not resident."""
        llm = self.mos.llm
        if cube.blob is None or llm is None:
            raise UserError(f"activation cube {cube.id} has no KV blob (it is served by a server's prefix cache)")
        with self._lock:
            block = self._resident.get(cube.blob)
            if block is not None:
                self._resident.move_to_end(cube.blob)
                return block
        block = KVBlock.load(self.mos.blobs.path(cube.blob), device=getattr(llm, "device", "cpu"))
        block.check(model_key(llm))
        self._keep(cube.blob, block)
        return block

    def _keep(self, ref: str, block: KVBlock) -> None:
        budget = self.mos.settings.activation_budget_bytes
        with self._lock:
            self._resident[ref] = block
            self._resident.move_to_end(ref)
            while sum(b.nbytes for b in self._resident.values()) > budget and len(self._resident) > 1:
                self._resident.popitem(last=False)

    def _drop(self, ref: str | None) -> None:
        if ref is not None:
            with self._lock:
                self._resident.pop(ref, None)

    def _sources(self, cube: MemCube) -> list[MemCube] | None:
        found = self.mos.catalog.get(list(cube.sources))
        sources = [found.get(i) for i in cube.sources]
        if any(s is None or s.status != Status.active for s in sources):
            return None
        return block_order([s for s in sources if s is not None])

    # ---- building -----------------------------------------------------------------------------

    def build(self, user: str, ns: str, source_ids: Sequence[str]) -> MemCube:
        """Make `source_ids` (active plaintext cubes of `ns`) the namespace's block on the active model."""
        mos = self.mos
        llm = mos.llm
        backend = backend_of(llm)
        if backend is None or llm is None:
            raise UserError(
                "activation blocks need a model that reuses KV caches: MEMOS_LLM=hf:/path/to/model (KV injection) "
                "or vllm:http://HOST:PORT/v1#MODEL (prefix caching)"
            )
        ids = list(dict.fromkeys(source_ids))
        if not ids:
            raise UserError("an activation block needs at least one plaintext cube")
        found = mos.catalog.get(ids)
        for cube_id in ids:
            cube = found.get(cube_id)
            if cube is None:
                raise UserError(f"no cube with id {cube_id} to put in an activation block")
            if cube.kind != Kind.plaintext or cube.status != Status.active or ns_path(cube.namespace) != ns:
                raise UserError(
                    f"cube {cube_id} is not an active plaintext cube of {ns}; only those can join its activation block"
                )
        sources = block_order([found[i] for i in ids])
        text = system_text(sources)
        block: KVBlock | None = None
        if backend == "kv":
            prefix = llm.stable_prefix(text)  # type: ignore[attr-defined]
            limit = mos.settings.activation_block_tokens
            if len(prefix) > limit:
                raise UserError(
                    f"these cubes make a block of {len(prefix)} tokens, over MEMOS_ACTIVATION_BLOCK_TOKENS={limit}; "
                    "choose fewer cubes or raise the limit"
                )
            # the prefill runs outside the write lock: writers are not held up while the model works
            block = llm.build_block(prefix)  # type: ignore[attr-defined]
            tokens = block.num_tokens
        else:
            tokens = mos.tokenizer.count(text)
        cube = self._commit(user, ns, sources, text, backend, tokens, block)
        if backend == "prefix":
            llm.warm([{"role": "system", "content": text}])  # type: ignore[attr-defined]
        self.enforce_budget(user)
        return cube

    def _commit(
        self,
        user: str,
        ns: str,
        sources: list[MemCube],
        text: str,
        backend: str,
        tokens: int,
        block: KVBlock | None,
    ) -> MemCube:
        mos = self.mos
        assert mos.llm is not None
        now = mos.clock.now()
        with mos._write_lock:
            previous = self.current(ns)
            version = previous.header.version + 1 if previous is not None else 1
            cube_id = previous.id if previous is not None else new_id()
            ref = f"activation/{cube_id}.v{version}.safetensors" if block is not None else None
            size = mos.blobs.write_file(ref, block.save) if ref is not None and block is not None else 0
            labels = {"model": model_key(mos.llm), "backend": backend, "digest": _digest(text), "bytes": str(size)}
            cube = derived_cube(
                cube_id,
                Kind.activation,
                sources,
                user=user,
                now=now,
                blob=ref,
                labels=labels,
                tokens=tokens,
                previous=previous,
            )
            detail = {"sources": len(sources), "tokens": tokens, "backend": backend}
            commit_derived(mos, user, cube, action="activate", detail=detail, previous=previous)
        if previous is not None and previous.blob is not None and previous.blob != ref:
            self._drop(previous.blob)
            mos.blobs.delete(previous.blob)
        if ref is not None and block is not None:
            self._keep(ref, block)
        log.info("activation block built", ns=ns, cubes=len(sources), tokens=tokens, backend=backend)
        return cube

    def retire(self, user: str, cube: MemCube, reason: str) -> MemCube:
        """Archive an activation cube and free its blob; its plaintext sources are untouched."""
        self._drop(cube.blob)
        return archive_derived(self.mos, user, cube, Kind.activation, "deactivate", {"reason": reason})

    # ---- policy -------------------------------------------------------------------------------

    def candidates(self, ns: str) -> list[MemCube]:
        """The cubes of `ns` used often enough to join its block, most used first, within the token limit."""
        mos = self.mos
        settings = mos.settings
        used = mos.catalog.select(
            CubeFilter(
                ns=ns,
                kinds=[Kind.plaintext.value],
                statuses=(Status.active.value,),
                min_uses=settings.activation_min_uses,
            ),
            order="used",
            limit=512,
        )
        # leave room for the instructions, the title and the chat template's own tokens
        room = settings.activation_block_tokens - mos.tokenizer.count(SYSTEM_PROMPT + BLOCK_TITLE) - 32
        chosen: list[MemCube] = []
        for cube in used:
            cost = mos.tokenizer.count(render_line(cube)) + 1
            if cost <= room:
                chosen.append(cube)
                room -= cost
        return chosen

    def promote(self, user: str, namespaces: Sequence[str]) -> int:
        """Rebuild the block of each namespace whose hot cubes changed, or whose block is stale; return builds."""
        if backend_of(self.mos.llm) is None:
            return 0
        built = 0
        for ns in namespaces:
            chosen = self.candidates(ns)
            current = self.current(ns)
            if not chosen:
                continue
            if current is not None and set(current.sources) == {c.id for c in chosen} and self.usable(ns) is not None:
                continue
            self.build(user, ns, [c.id for c in chosen])
            built += 1
        return built

    def enforce_budget(self, user: str) -> list[str]:
        """Retire the coldest stored blocks until their blobs fit the activation budget; return retired ids."""
        mos = self.mos
        blocks = mos.catalog.select(CubeFilter(kinds=[Kind.activation.value], statuses=(Status.active.value,)))
        total = sum(int(c.header.labels.get("bytes", "0")) for c in blocks)
        retired: list[str] = []
        epoch = datetime.min.replace(tzinfo=mos.clock.now().tzinfo)
        # coldest first: fewest uses, then least recently used
        for cube in sorted(blocks, key=lambda c: (c.header.usage.access_count, c.header.usage.last_access or epoch)):
            if total <= mos.settings.activation_budget_bytes:
                break
            self.retire(user, cube, "over the activation budget")
            total -= int(cube.header.labels.get("bytes", "0"))
            retired.append(cube.id)
        return retired

    def resident_bytes(self) -> int:
        """Bytes of KV blocks held in memory now."""
        with self._lock:
            return sum(b.nbytes for b in self._resident.values())

    def stats(self) -> dict[str, Any]:
        """Blocks resident in memory and their bytes."""
        with self._lock:
            return {"resident": len(self._resident), "resident_bytes": sum(b.nbytes for b in self._resident.values())}
