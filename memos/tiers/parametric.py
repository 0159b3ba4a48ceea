"""The parametric tier: LoRA adapters trained on memory texts, and one base model serving them per request.

`train_lora` teaches a transformers causal LM a set of texts through a peft LoRA adapter, saves the adapter
and hands the model back exactly as it came. `AdapterHost` loads saved adapters onto one base model and
switches them per request (`with host.active([...]):`). torch and peft are imported inside the functions
so that importing this module stays cheap.
"""

from __future__ import annotations

import copy
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos.errors import UserError, first_problem

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: adapter names become peft adapter keys and module attribute names: keep them plain
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: windows per forward pass when measuring loss (memory grows with batch x window x vocabulary)
_EVAL_BATCH = 8
#: gradients are clipped to this norm so a high learning rate cannot blow a small adapter up
_MAX_GRAD_NORM = 1.0
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class LoRASettings(BaseModel):
    """How a LoRA adapter is shaped and trained."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="rank of the low-rank update")
    alpha: float = Field(16, gt=0, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input while training")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the linear layers that get an adapter",
    )
    steps: int = Field(60, ge=1, description="optimizer steps")
    learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate (decays linearly to a tenth)")
    batch_size: int = Field(4, ge=1, description="windows per optimizer step")
    max_tokens: int = Field(256, ge=8, description="window length; longer texts are split, never truncated")
    seed: int = Field(0, ge=0, description="seeds the adapter's initialisation, dropout and the batch order")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            where, problem = first_problem(exc, "lora")
            raise UserError(f"bad LoRA setting {where}: {problem} (fix the LoRA settings you pass)") from exc


@dataclass(frozen=True)
class TrainReport:
    """What one `train_lora` run did and measured."""

    num_texts: int  # non-empty texts trained on
    num_windows: int  # training windows they were split into (>= num_texts)
    num_tokens: int  # tokens of those texts, BOS/EOS included
    steps: int
    seconds: float  # the optimisation loop alone
    loss_before: float  # mean_loss on the texts before training
    loss_after: float  # mean_loss on the texts with the adapter
    trainable_params: int
    adapter_bytes: int  # size of the saved weights file


@dataclass(frozen=True)
class _Windows:
    """Token windows cut from texts: consecutive windows of one text share a token (see `_windows`)."""

    windows: list[list[int]]
    num_texts: int
    num_tokens: int


def mean_loss(model: Any, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_tokens: int = 256) -> float:
    """Token-weighted mean causal-LM cross-entropy of `model` over `texts` (EOS appended, long texts windowed)."""
    if max_tokens < 8:
        raise UserError(f"max_tokens must be at least 8, got {max_tokens}; pass a larger window")
    return _mean_loss(model, _windows(tokenizer, texts, max_tokens), _pad_id(tokenizer))


def train_lora(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: LoRASettings,
    out_dir: str | Path,
    *,
    name: str = "memos",
) -> TrainReport:
    """Train a LoRA adapter on `texts`, save it under `out_dir`, and leave `model` exactly as it was."""
    import torch
    from peft import LoraConfig, get_peft_model

    _check_name(name)
    if _has_adapters(model):
        raise UserError("train_lora needs a plain base model, but this one carries adapters; unload them first")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; pass a directory for the adapter")
    data = _windows(tokenizer, texts, settings.max_tokens)
    pad_id = _pad_id(tokenizer)
    loss_before = _mean_loss(model, data, pad_id)

    device = _device(model)
    was_training = model.training
    # peft freezes every base parameter; the caller's flags come back afterwards
    requires_grad = {id(p): p.requires_grad for p in model.parameters()}
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    rng_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    peft_model: Any = None
    # a private RNG stream: the adapter's init and dropout depend on the seed only, the caller's RNG is untouched
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(settings.seed)
        try:
            try:
                peft_model = get_peft_model(model, config, adapter_name=name)
            except ValueError as exc:
                raise UserError(
                    f"LoRA target_modules {settings.target_modules} do not fit this model ({_one_line(exc)}); "
                    "name linear layers the model has"
                ) from exc
            params = [p for p in peft_model.parameters() if p.requires_grad]
            started = time.perf_counter()
            _optimise(peft_model, data.windows, params, settings, pad_id, device)
            seconds = time.perf_counter() - started
            loss_after = _mean_loss(peft_model, data, pad_id)
            adapter_bytes = _save_adapter(peft_model, name, out)
        finally:
            # unload() swaps every LoRA layer back for the original module object: the base weights never moved
            if peft_model is not None:
                peft_model.unload()
            _strip_lora_layers(model)  # whatever an injection that raised half-way left behind
            for p in model.parameters():
                p.requires_grad_(requires_grad[id(p)])
            model.train(was_training)
    return TrainReport(
        num_texts=data.num_texts,
        num_windows=len(data.windows),
        num_tokens=data.num_tokens,
        steps=settings.steps,
        seconds=seconds,
        loss_before=loss_before,
        loss_after=loss_after,
        trainable_params=sum(p.numel() for p in params),
        adapter_bytes=adapter_bytes,
    )


class AdapterHost:
    """One base model serving several named LoRA adapters, activated per request."""

    def __init__(self, model: Any) -> None:
        # the caller's transformers model; peft injects LoRA layers into it in place, so it is also what runs
        self._base = model
        # the PeftModel wrapping _base while at least one adapter is loaded, else None
        self._peft: Any = None
        # loaded adapter names in load order; equal to the peft config keys whenever _peft is set
        self._names: list[str] = []
        # adapters active right now; () means base behaviour, which is the state outside every `active` block
        self._active: tuple[str, ...] = ()
        # _base's training mode and parameter flags before the first load, put back when the last adapter goes
        self._base_state: tuple[bool, dict[int, bool]] | None = None
        # serialises loads, unloads and whole `active` blocks; re-entrant so one thread may nest blocks
        self._lock = threading.RLock()

    @property
    def names(self) -> list[str]:
        """Loaded adapter names, in load order."""
        # a copy, read without the lock so asking does not wait for a running request
        return list(self._names)

    @property
    def model(self) -> Any:
        """The module to run forward/generate on: the base model, carrying the LoRA layers of loaded adapters."""
        return self._base

    def load(self, name: str, path: str | Path) -> None:
        """Load the adapter saved in directory `path` under `name` (inactive until named in `active`)."""
        from peft import PeftModel

        _check_name(name)
        where = Path(path)
        if not (where / ADAPTER_CONFIG).is_file():
            raise UserError(
                f"{where} holds no LoRA adapter ({ADAPTER_CONFIG} missing); pass a directory train_lora wrote"
            )
        with self._lock:
            if name in self._names:
                raise UserError(f"adapter {name!r} is already loaded; unload it first or pick another name")
            first = self._peft is None
            if first:
                self._base_state = (self._base.training, {id(p): p.requires_grad for p in self._base.parameters()})
            try:
                if first:
                    self._peft = PeftModel.from_pretrained(self._base, str(where), adapter_name=name)
                else:
                    self._peft.load_adapter(str(where), adapter_name=name)
            except (ValueError, RuntimeError, OSError, KeyError, TypeError) as exc:
                self._undo_failed_load(name, first)
                raise UserError(
                    f"the adapter in {where} does not fit this base model ({_one_line(exc)}); "
                    "load an adapter trained on this model"
                ) from exc
            self._names.append(name)
            self._apply(self._active)

    def unload(self, name: str) -> None:
        """Drop adapter `name`; when the last one goes the base model is restored exactly."""
        with self._lock:
            self._require([name])
            if name in self._active:
                raise UserError(f"adapter {name!r} is active in a running request; unload it after the block ends")
            if len(self._names) == 1:
                self._restore_base()
            else:
                # point peft at the survivors first: deleting its active adapter makes it pick one and warn
                self._peft.base_model.set_adapter([n for n in self._names if n != name], inference_mode=True)
                self._peft.delete_adapter(name)
            self._names.remove(name)
            if self._peft is not None:
                self._apply(self._active)

    @contextmanager
    def active(self, names: Sequence[str]) -> Iterator[Any]:
        """Activate exactly `names` for the block ([] = base behaviour), yield the model, restore after."""
        if isinstance(names, str):
            raise UserError(f"active() takes a list of adapter names, got the string {names!r}; wrap it in a list")
        wanted = tuple(dict.fromkeys(names))
        with self._lock:
            self._require(wanted)
            previous = self._active
            self._apply(wanted)
            self._active = wanted
            try:
                yield self._base
            finally:
                self._apply(previous)
                self._active = previous

    def _require(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._names]
        if unknown:
            loaded = ", ".join(self._names) or "none"
            raise UserError(f"no adapter named {unknown[0]!r} is loaded (loaded: {loaded}); load it first")

    def _apply(self, names: tuple[str, ...]) -> None:
        """Put the LoRA layers in the state `names` asks for."""
        if self._peft is None:
            return
        tuner = self._peft.base_model
        if not names:
            tuner.disable_adapter_layers()
            return
        # enabling re-marks active adapters trainable, so inference mode is set after it
        tuner.enable_adapter_layers()
        # a LoRA layer sums the updates of every active adapter: several names stack their deltas
        tuner.set_adapter(list(names), inference_mode=True)

    def _restore_base(self) -> None:
        """Remove every LoRA layer and put the base model's mode and parameter flags back."""
        if self._peft is not None:
            self._peft.unload()
            self._peft = None
        _strip_lora_layers(self._base)  # also what a first load that raised half-way injected
        if self._base_state is not None:
            training, requires_grad = self._base_state
            for p in self._base.parameters():
                p.requires_grad_(requires_grad.get(id(p), p.requires_grad))
            self._base.train(training)
            self._base_state = None

    def _undo_failed_load(self, name: str, first: bool) -> None:
        """Leave the model as it was before a load that raised half-way."""
        if first:
            self._restore_base()
        elif name in self._peft.peft_config:
            self._peft.delete_adapter(name)
            self._apply(self._active)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"bad adapter name {name!r}: use 1-64 letters, digits, '_' or '-'")


def _strip_lora_layers(model: Any) -> None:
    """Swap any LoRA layer left in `model` for the module it wraps, and drop peft's bookkeeping attribute."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(parent, child_name, child.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _has_adapters(model: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # padded positions are masked out of attention and loss, so any valid id will do
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _windows(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> _Windows:
    """Tokenise each text as BOS + text + EOS and cut it into windows of at most `max_tokens` tokens.

    Consecutive windows of a text overlap by one token, so every token after the first is a prediction
    target exactly once: a long text is split, nothing is dropped.
    """
    if isinstance(texts, str):
        raise UserError("texts must be a list of strings, got one string; wrap it in a list")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    windows: list[list[int]] = []
    num_texts = num_tokens = 0
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"texts must be strings, got {type(text).__name__}; pass plain text")
        if not text.strip():
            continue
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        seq = ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])
        if len(seq) < 2:
            continue
        num_texts += 1
        num_tokens += len(seq)
        for start in range(0, len(seq) - 1, max_tokens - 1):
            windows.append(seq[start : start + max_tokens])
    if not windows:
        raise UserError("no text to learn from: pass at least one non-empty text")
    return _Windows(windows=windows, num_texts=num_texts, num_tokens=num_tokens)


def _batch(windows: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask."""
    import torch

    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
        mask[row, : len(window)] = 1
    return ids.to(device), mask.to(device)


def _loss_sum(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the unpadded positions, and how many there are."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    # fp32 for the softmax: half-precision logits lose the small differences the loss is made of
    logits = logits[:, :-1].float()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return total, int((targets != -100).sum())


def _mean_loss(model: Any, data: _Windows, pad_id: int) -> float:
    import torch

    device = _device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    # batching windows of similar length wastes little compute on padding; the mean does not depend on order
    windows = sorted(data.windows, key=len)
    try:
        with torch.no_grad():
            for at in range(0, len(windows), _EVAL_BATCH):
                ids, mask = _batch(windows[at : at + _EVAL_BATCH], pad_id, device)
                batch_total, batch_count = _loss_sum(model, ids, mask)
                total += float(batch_total)
                count += batch_count
    finally:
        model.train(was_training)
    return total / count


def _optimise(
    model: Any,
    windows: list[list[int]],
    params: list[torch.nn.Parameter],
    settings: LoRASettings,
    pad_id: int,
    device: torch.device,
) -> None:
    """AdamW on the adapter, seeded batch order, learning rate decaying linearly to a tenth."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=0.1, total_iters=max(settings.steps - 1, 1)
    )
    # fp16 gradients through the frozen base can underflow; bf16 and fp32 need no scaling
    scaler = torch.amp.GradScaler(device.type, enabled=next(model.parameters()).dtype == torch.float16)
    order = _batch_order(len(windows), settings.batch_size, settings.steps, settings.seed)
    model.train()
    for indices in order:
        ids, mask = _batch([windows[i] for i in indices], pad_id, device)
        total, count = _loss_sum(model, ids, mask)
        scaler.scale(total / count).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()


def _batch_order(num_windows: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Window indices per step: shuffled passes over all windows (a pass's last batch may be smaller)."""
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = list(range(num_windows))
        rng.shuffle(order)
        batches += [order[at : at + batch_size] for at in range(0, num_windows, batch_size)]
    return batches[:steps]


def _save_adapter(peft_model: Any, name: str, out: Path) -> int:
    """Write the adapter's weights (safetensors) and config into `out` itself; return the weights' size."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / ADAPTER_WEIGHTS
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(weights), metadata={"format": "pt"})
    # peft's own save_pretrained nests non-default adapter names in a subfolder; this keeps one flat directory
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    config.base_model_name_or_path = getattr(peft_model.base_model.model, "name_or_path", None) or None
    config.save_pretrained(str(out))
    return weights.stat().st_size
