"""`HFChat`: a local Hugging Face causal LM, with KV-block injection and LoRA adapters.

The model is loaded from a local directory only (nothing is downloaded). Prompts go through the
model's chat template; generation is an incremental decode over a DynamicCache, so a pre-computed
KV block whose tokens are exactly the prompt's prefix is used instead of prefilling those tokens.
torch and transformers are imported when a model is loaded, never by `import memos`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import BackendError, UserError
from memos.llm.base import (
    LLM,
    Capabilities,
    Completion,
    MessageLike,
    ToolLike,
    Usage,
    normalise_stop,
    validate_messages,
    validate_sampling,
    validate_tools,
)
from memos.tiers.kv import KVBlock, block_from_cache

#: answers are capped here when the caller gives no max_tokens
DEFAULT_MAX_TOKENS = 256
_DTYPES = ("auto", "float32", "bfloat16", "float16")
# two user messages that differ in their first character: the tokens both renderings share are the
# part of the prompt that does not depend on the question (the stable prefix a KV block may cover)
_PROBES = ("A", "Z")


@dataclass(frozen=True)
class GenerationStats:
    """Timings and token counts of the last request a backend served."""

    prompt_tokens: int
    #: prompt tokens served from an injected KV block instead of being prefilled
    injected_tokens: int
    completion_tokens: int
    #: seconds from the call to the first generated token being known
    ttft_s: float
    total_s: float


class HFChat(LLM):
    """A causal LM from a local directory (any model `AutoModelForCausalLM` loads), served in-process."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise UserError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
        if model is None:
            if path is None:
                raise UserError("HFChat needs a local model directory (MEMOS_LLM=hf:/path/to/model)")
            model, tokenizer = _load(Path(path).expanduser(), device, dtype)
        elif tokenizer is None:
            raise UserError("HFChat(model=...) needs the model's tokenizer too")
        self.model = model
        self.tokenizer = tokenizer
        name = str(path) if path is not None else str(getattr(model.config, "_name_or_path", "") or "in-memory")
        self.model_id = f"hf:{name}"
        #: model id + config hash + tokenizer hash + a sample of the weights: a KV block or adapter built for
        #: another fingerprint is never used with this model
        self.fingerprint = fingerprint(model, tokenizer)
        self.capabilities = Capabilities(
            stream=True, tools=False, kv_injection=_supports_injection(model.config), adapters=True
        )
        #: timings of the last request, for benchmarks and `memos ask --explain`
        self.last_stats: GenerationStats | None = None
        # the cache keyword changed name in transformers 5.x (cache=, was past_key_values=)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # one request at a time: adapter switches and the model's modules are shared state
        self._lock = threading.RLock()
        self._host: Any = None  # AdapterHost, created when the first adapter is loaded
        self._active: tuple[str, ...] = ()

    # ---- tokens -----------------------------------------------------------------------------

    @property
    def device(self) -> Any:
        """The device the model's weights are on."""
        return next(self.model.parameters()).device

    def encode(self, messages: Sequence[MessageLike], *, add_generation_prompt: bool = True) -> list[int]:
        """The prompt's token ids, rendered with the model's chat template."""
        checked = validate_messages(messages)
        return self._encode([m.to_openai() for m in checked], add_generation_prompt)

    def _encode(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
        plain = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                plain, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        else:
            # a base model without a template: a plain transcript the model can continue
            text = "".join(f"{m['role']}: {m['content']}\n" for m in plain)
            text += "assistant:" if add_generation_prompt else ""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def stable_prefix(self, system: str) -> list[int]:
        """The tokens every prompt that starts with this system message begins with, whatever follows."""
        a, b = (
            self._encode([{"role": "system", "content": system}, {"role": "user", "content": probe}], True)
            for probe in _PROBES
        )
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]

    def count(self, text: str) -> int:
        """Tokens in `text` by this model's tokenizer."""
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    # ---- KV blocks --------------------------------------------------------------------------

    def build_block(self, token_ids: Sequence[int]) -> KVBlock:
        """Prefill `token_ids` once and freeze the resulting KV cache into a block for this model."""
        import torch
        from transformers import DynamicCache

        ids = [int(t) for t in token_ids]
        if not ids:
            raise UserError("a KV block needs at least one token")
        if not self.capabilities.kv_injection:
            raise UserError(f"{self.model_id} uses sliding-window attention; its KV cache cannot be injected")
        with self._lock, torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            self._model().eval()
            self._forward(torch.tensor([ids], device=self.device), cache, logits_to_keep=1)
            return block_from_cache(ids, cache, self.fingerprint)

    # ---- adapters ---------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter directory under `name` (kept loaded until unload_adapter)."""
        from memos.tiers.parametric import AdapterHost

        with self._lock:
            if self._host is None:
                self._host = AdapterHost(self.model)
            if name not in self._host.names:
                with warnings.catch_warnings():
                    # peft calls a transformers method that warns of its own renaming: noise for our users
                    warnings.simplefilter("ignore", FutureWarning)
                    self._host.load(name, str(path))

    def unload_adapter(self, name: str) -> None:
        """Unload an adapter; with none left the base model is restored exactly."""
        with self._lock:
            if self._host is not None and name in self._host.names:
                self._host.unload(name)

    def exclusive(self) -> Any:
        """A lock held while nothing else may run on the model (training an adapter on its modules)."""
        return self._lock

    @property
    def loaded_adapters(self) -> list[str]:
        """Names of the adapters loaded now."""
        return sorted(self._host.names) if self._host is not None else []

    def with_adapters(self, adapters: Sequence[str]) -> HFChat:
        """A view of this backend that answers through the named (loaded) adapters."""
        names = tuple(adapters)
        if not names:
            return self
        missing = [n for n in names if n not in self.loaded_adapters]
        if missing:
            raise UserError(f"adapter(s) {', '.join(missing)} are not loaded; load_adapter them first")
        view = object.__new__(HFChat)
        view.__dict__.update(self.__dict__)
        view._active = names
        return view

    # ---- generation -------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        kv: KVBlock | None = None,
    ) -> Completion:
        """Answer a conversation; `kv` is a block injected when its tokens are the prompt's exact prefix."""
        pieces = list(self._generate(messages, tools, max_tokens, temperature, stop, kv))
        stats = self.last_stats
        assert stats is not None
        finish = "length" if stats.completion_tokens >= (max_tokens or DEFAULT_MAX_TOKENS) else "stop"
        return Completion(
            text="".join(pieces),
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                cached_tokens=stats.injected_tokens,
            ),
            model=self.model_id,
        )

    def stream(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        kv: KVBlock | None = None,
    ) -> Iterator[str]:
        """Answer as text pieces, one per decoded token that completes printable text."""
        return self._generate(messages, tools, max_tokens, temperature, stop, kv)

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.0,
        kv: KVBlock | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Generated token ids for raw prompt ids (greedy at temperature 0), with optional KV injection."""
        return list(self._decode([int(t) for t in prompt_ids], max_tokens, temperature, kv, seed, time.perf_counter()))

    def logits(self, prompt_ids: Sequence[int], *, kv: KVBlock | None = None) -> Any:
        """Next-token logits after the prompt (float32, on CPU), with optional KV injection."""
        import torch

        ids = [int(t) for t in prompt_ids]
        with self._lock, torch.inference_mode(), self._adapters():
            cache, start = self._start_cache(ids, kv)
            out = self._forward(torch.tensor([ids[start:]], device=self.device), cache, logits_to_keep=1)
            return out.logits[0, -1].float().cpu()

    def _generate(
        self,
        messages: Sequence[MessageLike],
        tools: Sequence[ToolLike] | None,
        max_tokens: int | None,
        temperature: float | None,
        stop: str | Sequence[str] | None,
        kv: KVBlock | None,
    ) -> Iterator[str]:
        started = time.perf_counter()
        checked = validate_messages(messages)
        if validate_tools(tools):
            raise UserError(f"{self.model_id} does not take tool schemas; describe the tools in the prompt instead")
        validate_sampling(max_tokens, temperature)
        stops = normalise_stop(stop) or []
        ids = self._encode([m.to_openai() for m in checked], True)
        limit = max_tokens or DEFAULT_MAX_TOKENS
        tokens = self._decode(ids, limit, temperature or 0.0, kv, 0, started)
        return _detokenize(self.tokenizer, tokens, stops)

    def _decode(
        self, ids: list[int], max_tokens: int, temperature: float, kv: KVBlock | None, seed: int, started: float
    ) -> Iterator[int]:
        """Yield generated token ids one by one; sets last_stats when done (or stopped early)."""
        import torch

        if not ids:
            raise UserError("the prompt is empty")
        eos = _eos_ids(self.model, self.tokenizer)
        generator = torch.Generator(device="cpu").manual_seed(seed)

        def run() -> Iterator[int]:
            produced = 0
            first_at = 0.0
            injected = 0
            try:
                with self._lock, torch.inference_mode(), self._adapters():
                    cache, injected = self._start_cache(ids, kv)
                    step = torch.tensor([ids[injected:]], device=self.device)
                    while produced < max_tokens:
                        out = self._forward(step, cache, logits_to_keep=1)
                        token = _pick(out.logits[0, -1], temperature, generator)
                        if produced == 0:
                            first_at = time.perf_counter()
                        produced += 1
                        if token in eos:
                            break
                        yield token
                        step = torch.tensor([[token]], device=self.device)
            finally:
                end = time.perf_counter()
                self.last_stats = GenerationStats(
                    prompt_tokens=len(ids),
                    injected_tokens=injected,
                    completion_tokens=produced,
                    ttft_s=(first_at or end) - started,
                    total_s=end - started,
                )

        return run()

    def _start_cache(self, ids: list[int], kv: KVBlock | None) -> tuple[Any, int]:
        """The cache to decode with and how many prompt tokens it already holds."""
        from transformers import DynamicCache

        # a block holds the base model's keys and values; adapters change them, so none is injected then
        if kv is None or not kv.matches(ids) or self._active:
            return DynamicCache(config=self.model.config), 0
        kv.check(self.fingerprint)
        # at least one prompt token must be fed to get the next token's logits
        used = min(kv.num_tokens, len(ids) - 1)
        if used == 0:
            return DynamicCache(config=self.model.config), 0
        block = kv if _same_device(kv, self.device) else kv.to(self.device)
        return block.cache(used, self.model.config), used

    def _forward(self, input_ids: Any, cache: Any, *, logits_to_keep: int) -> Any:
        kwargs = {self._cache_kw: cache, "use_cache": True, "logits_to_keep": logits_to_keep}
        return self._model()(input_ids=input_ids, **kwargs)

    def _model(self) -> Any:
        return self._host.model if self._host is not None else self.model

    def _adapters(self) -> Any:
        import contextlib

        if self._host is None:
            if self._active:
                raise UserError("no adapters are loaded on this model")
            return contextlib.nullcontext()
        return self._host.active(self._active)


def fingerprint(model: Any, tokenizer: Any) -> str:
    """sha256 over the model's config, its dtype, a sample of its weights and its tokenizer."""
    import torch

    digest = hashlib.sha256()
    config = model.config.to_dict()
    # where the model was loaded from does not change what it computes
    config.pop("_name_or_path", None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(str(next(model.parameters()).dtype).encode())
    with torch.no_grad():
        for name, param in sorted(model.state_dict().items())[:: max(1, len(model.state_dict()) // 16)]:
            sample = param.detach().flatten()[:64].float().cpu()
            digest.update(name.encode())
            digest.update(sample.numpy().tobytes())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab()).encode())
    digest.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return digest.hexdigest()


def _load(path: Path, device: str, dtype: str) -> tuple[Any, Any]:
    if not path.is_dir():
        raise UserError(f"no local model directory at {path}: MEMOS_LLM=hf: needs a directory saved by transformers")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise UserError("a local model needs torch and transformers: pip install 'memos[local]'") from exc
    from transformers.utils import logging as hf_logging

    # progress bars and load reports go to stderr, where the CLI promises one line per error
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    # fp32 on CPU: bf16 matmuls are slow there and exact comparisons need full precision
    auto = torch.float32 if target == "cpu" else torch.bfloat16
    torch_dtype = auto if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        model.to(target)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a causal LM from {path}: {exc}") from exc
    except RuntimeError as exc:
        raise BackendError(f"loading the model at {path} onto {target} failed: {exc}") from exc
    model.eval()
    return model, tokenizer


def _supports_injection(config: Any) -> bool:
    """False for models with sliding-window layers, whose caches drop old tokens."""
    layer_types = getattr(config, "layer_types", None) or []
    return "sliding_attention" not in layer_types and not getattr(config, "sliding_window", None)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(int(v) for v in value)
    return found


def _pick(logits: Any, temperature: float, generator: Any) -> int:
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _same_device(block: KVBlock, device: Any) -> bool:
    return not block.layers or block.layers[0][0].device == device


def _detokenize(tokenizer: Any, tokens: Iterator[int], stops: list[str]) -> Iterator[str]:
    """Turn token ids into text pieces; a piece is released once it decodes cleanly; stop strings end it."""
    ids: list[int] = []
    sent = ""
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        # a token that ends inside a multi-byte character decodes to U+FFFD: wait for the next one
        if text.endswith("\ufffd"):
            continue
        for s in stops:
            cut = text.find(s)
            if cut >= 0:
                if cut > len(sent):
                    yield text[len(sent) : cut]
                close = getattr(tokens, "close", None)
                if close is not None:
                    close()
                return
        if len(text) > len(sent):
            yield text[len(sent) :]
            sent = text
