"""The parametric tier in the kernel: consolidate cubes into a LoRA adapter cube, and serve adapters per request.

Training runs on the local model (MEMOS_LLM=hf:PATH). The adapter directory becomes a blob; the cube
records the plaintext cubes it was trained on (`sources`, `derived_from`), which stay as they were, so
migrating back to plaintext loses nothing. An adapter is used with the exact model it was trained on,
or on a vLLM server serving a model of the same name.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.cube import Kind, MemCube, Status, ns_path
from memos.errors import UserError
from memos.ids import new_id
from memos.log import get_logger
from memos.storage.catalog import CubeFilter
from memos.tiers import archive_derived, commit_derived, derived_cube
from memos.tiers.activation import model_key

if TYPE_CHECKING:
    from memos.kernel import MemOS
    from memos.llm.base import LLM
    from memos.tiers.parametric import LoRASettings, TrainReport

log = get_logger("adapters")


def adapter_name(cube: MemCube) -> str:
    """The name an adapter cube is loaded under on a backend."""
    return f"memos-{cube.id}"


def base_name(llm: LLM) -> str:
    """The base model's short name: the model directory's (or served model's) last path part."""
    return Path(llm.model_id.split(":", 1)[-1].rstrip("/")).name


class AdapterTier:
    """Trains, stores and serves the LoRA adapters (parametric cubes) of a kernel."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        # one training at a time: it attaches LoRA layers to the shared model while it runs
        self._train_lock = threading.Lock()

    def usable(self, ns: str) -> list[MemCube]:
        """Active adapter cubes of exactly this namespace that the active model can run, oldest first."""
        llm = self.mos.llm
        if llm is None or not llm.capabilities.adapters:
            return []
        cubes = self.mos.catalog.select(
            CubeFilter(ns=ns, kinds=[Kind.parametric.value], statuses=(Status.active.value,))
        )
        # an adapter imported from an archive has no blob here: it must be consolidated again
        return [c for c in cubes if self.fits(c, llm) and c.blob is not None and self.mos.blobs.exists(c.blob)]

    def fits(self, cube: MemCube, llm: LLM) -> bool:
        """Whether this adapter may run on this backend: same model fingerprint, or a server of that base model."""
        labels = cube.header.labels
        if getattr(llm, "fingerprint", None):
            return labels.get("model") == model_key(llm)
        return labels.get("base") == base_name(llm)

    def consolidate(
        self, user: str, ns: str, source_ids: Sequence[str], settings: LoRASettings | None = None
    ) -> tuple[MemCube, TrainReport]:
        """Train an adapter on these active plaintext cubes of `ns` and store it as a parametric cube."""
        from memos.tiers.parametric import LoRASettings, train_lora

        mos = self.mos
        llm = mos.llm
        from memos.llm.hf import HFChat

        if not isinstance(llm, HFChat):
            raise UserError(
                "training an adapter needs a local model: set MEMOS_LLM=hf:/path/to/model "
                "(a vLLM server can then serve the adapter for the same base model)"
            )
        ids = list(dict.fromkeys(source_ids))
        if not ids:
            raise UserError(f"{ns} has no long-term plaintext cubes to consolidate; write or promote some first")
        found = mos.catalog.get(ids)
        sources: list[MemCube] = []
        for cube_id in ids:
            cube = found.get(cube_id)
            if cube is None or cube.kind != Kind.plaintext or cube.status != Status.active:
                raise UserError(f"cube {cube_id} is not an active plaintext cube; only those can be consolidated")
            if ns_path(cube.namespace) != ns:
                raise UserError(f"cube {cube_id} is in {ns_path(cube.namespace)}, not {ns}")
            sources.append(cube)
        lora = settings or LoRASettings()
        cube_id = new_id()
        ref = f"parametric/{cube_id}"
        report: dict[str, Any] = {}

        def train(folder: Path) -> None:
            with warnings.catch_warnings():
                # peft calls a transformers method that warns of its own renaming: noise for our users
                warnings.simplefilter("ignore", FutureWarning)
                report["value"] = train_lora(llm.model, llm.tokenizer, [s.text for s in sources], lora, folder)

        with self._train_lock, llm.exclusive():
            # loaded adapters wrap the same modules: take them off while the new one trains
            for name in llm.loaded_adapters:
                llm.unload_adapter(name)
            size = mos.blobs.write_dir(ref, train)
        result: TrainReport = report["value"]
        now = mos.clock.now()
        labels = {
            "model": model_key(llm),
            "base": base_name(llm),
            "bytes": str(size),
            "loss_before": f"{result.loss_before:.4f}",
            "loss_after": f"{result.loss_after:.4f}",
            "rank": str(lora.r),
        }
        cube = derived_cube(
            cube_id, Kind.parametric, sources, user=user, now=now, blob=ref, labels=labels, tokens=result.num_tokens
        )
        detail = {"sources": len(sources), "steps": result.steps, "loss_after": result.loss_after}
        commit_derived(mos, user, cube, action="consolidate", detail=detail)
        log.info("adapter trained", ns=ns, cubes=len(sources), seconds=round(result.seconds, 2))
        return cube, result

    def serve(self, llm: LLM, cubes: Sequence[MemCube]) -> tuple[LLM, list[str]]:
        """`llm` answering through these adapters (the newest the backend can combine), and their names."""
        # cubes come oldest first: a backend that takes fewer adapters per request gets the most recent training
        chosen = list(cubes)[-llm.max_adapters :] if llm.max_adapters > 0 else []
        if not chosen:
            return llm, []
        names = []
        for cube in chosen:
            if cube.blob is None:
                raise UserError(f"parametric cube {cube.id} has no adapter blob")
            name = adapter_name(cube)
            llm.load_adapter(name, str(self.mos.blobs.path(cube.blob)))
            names.append(name)
        return llm.with_adapters(names), names

    def retire(self, user: str, cube: MemCube) -> MemCube:
        """Archive an adapter cube, unload it and free its blob; its plaintext sources are untouched."""
        llm = self.mos.llm
        if cube.kind == Kind.parametric and llm is not None and adapter_name(cube) in llm.loaded_adapters:
            llm.unload_adapter(adapter_name(cube))
        return archive_derived(self.mos, user, cube, Kind.parametric, "deconsolidate")
