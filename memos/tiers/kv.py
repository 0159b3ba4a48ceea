"""KV blocks: the key/value cache of one token prefix on one exact model, saved as safetensors.

A block is immutable once built: every use gets a fresh cache object over the block's tensors (a
view cropped to the length used), so decoding appends to new tensors and the block stays as built.
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import Conflict, UserError

#: format tag written into every block file; a file without it is not loaded
FORMAT = "memos-kv-1"


class StaleBlock(Conflict):
    """A KV block was built for another model (fingerprint mismatch): rebuild it, never inject it."""


@dataclass(frozen=True)
class KVBlock:
    """The KV cache of `token_ids` on the model whose fingerprint is `fingerprint`."""

    token_ids: tuple[int, ...]
    #: per layer (keys, values), each [batch=1, kv_heads, tokens, head_dim]
    layers: tuple[tuple[Any, Any], ...]
    fingerprint: str

    @property
    def num_tokens(self) -> int:
        """How many tokens the block covers."""
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        """Bytes the block's tensors occupy."""
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)

    def matches(self, prompt_ids: Sequence[int]) -> bool:
        """True when the prompt starts with exactly this block's tokens (the only case it may be injected)."""
        n = len(self.token_ids)
        return n > 0 and len(prompt_ids) >= n and tuple(prompt_ids[:n]) == self.token_ids

    def check(self, fingerprint: str) -> None:
        """Raise StaleBlock unless the block was built for the model with this fingerprint."""
        if fingerprint != self.fingerprint:
            raise StaleBlock(
                "this KV block was built for another model (fingerprint "
                f"{self.fingerprint[:12]}, active model {fingerprint[:12]}); rebuild it from its source cubes",
                block=self.fingerprint,
                model=fingerprint,
            )

    def cache(self, num_tokens: int, config: Any) -> Any:
        """A new DynamicCache holding the block's first `num_tokens` tokens; the block is never written."""
        from transformers import DynamicCache

        if not 0 < num_tokens <= self.num_tokens:
            raise UserError(f"a block of {self.num_tokens} tokens cannot give a cache of {num_tokens}")
        # slices are views; the cache's update concatenates into new tensors, so the block stays intact
        data = [(k[:, :, :num_tokens, :], v[:, :, :num_tokens, :]) for k, v in self.layers]
        cache = DynamicCache(config=config)
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) != len(data):
            return DynamicCache(ddp_cache_data=data, config=config)
        # DynamicCache(ddp_cache_data=...) would copy every tensor once more (a concatenation onto an
        # empty one); the views go in as they are, and the first forward's concatenation is the only copy
        for layer, (k, v) in zip(layers, data, strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        return cache

    def to(self, device: Any) -> KVBlock:
        """The same block with its tensors on `device`."""
        layers = tuple((k.to(device), v.to(device)) for k, v in self.layers)
        return KVBlock(self.token_ids, layers, self.fingerprint)

    def save(self, path: str | Path) -> int:
        """Write the block as one safetensors file; return its size (the blob store makes the write atomic)."""
        import torch
        from safetensors.torch import save_file

        target = Path(path)
        tensors: dict[str, Any] = {"token_ids": torch.tensor(self.token_ids, dtype=torch.int64)}
        for i, (k, v) in enumerate(self.layers):
            tensors[f"k.{i}"] = k.detach().contiguous().cpu()
            tensors[f"v.{i}"] = v.detach().contiguous().cpu()
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "num_layers": str(len(self.layers))}
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(target), metadata=meta)
        return target.stat().st_size

    @classmethod
    def load(cls, path: str | Path, device: Any = "cpu") -> KVBlock:
        """Read a block written by `save` onto `device`; UserError if the file is not one."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        target = Path(path)
        try:
            from safetensors import safe_open

            with safe_open(str(target), framework="pt") as handle:
                meta = handle.metadata() or {}
            tensors = load_file(str(target), device=str(device))
        except (OSError, SafetensorError) as exc:
            raise UserError(f"cannot read the KV block {target}: {exc}; rebuild it", path=str(target)) from exc
        if meta.get("format") != FORMAT or "fingerprint" not in meta:
            raise UserError(f"{target} is not a memos KV block ({json.dumps(meta)[:80]}); rebuild it")
        num_layers = int(meta["num_layers"])
        layers = tuple((tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(num_layers))
        ids = tuple(int(t) for t in tensors["token_ids"].tolist())
        return cls(ids, layers, meta["fingerprint"])


def block_from_cache(token_ids: Sequence[int], cache: Any, fingerprint: str) -> KVBlock:
    """Freeze a DynamicCache that holds exactly `token_ids` into a block (tensors cloned)."""
    layers = tuple((layer.keys.detach().clone(), layer.values.detach().clone()) for layer in cache.layers)
    length = int(layers[0][0].shape[-2]) if layers else 0
    if length != len(token_ids):
        raise UserError(f"the cache holds {length} tokens, not the {len(token_ids)} given")
    return KVBlock(tuple(int(t) for t in token_ids), layers, fingerprint)
