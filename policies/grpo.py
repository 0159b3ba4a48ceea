"""GRPO (group relative policy optimisation) for a causal LM policy, trained through a peft LoRA adapter.

For each prompt the trainer samples a group of `group_size` completions (plain temperature sampling
over the full vocabulary, so the sampling distribution is exactly the policy whose log-probabilities
are trained), scores each with `reward_fn(prompt, completion) -> float`, and turns the scores into
group-normalised advantages `(r - mean) / (std + eps)`. The loss, per completion token, is the
clipped-ratio surrogate of PPO with that advantage plus `kl_coef` times the k3 estimate of the KL
divergence to the reference policy, averaged over every completion token of the step ("token-mean",
verl's default, which Mem-α trains with). The reference is the same base model with the adapter
switched off, so it needs no second copy; AdamW updates the LoRA parameters only.

Defaults follow Mem-α's training script (group 8, clip 0.2, KL coefficient 0.001, learning rate 1e-6).

    trainer = GRPOTrainer(model, tokenizer, reward_fn, GRPOConfig(steps=100))
    stats = trainer.train(prompts)
    trainer.save("out/adapter")      # adapter_model.safetensors + adapter_config.json
    trainer.close()                  # the model is the plain base model again

torch and peft are imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import inspect
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.errors import UserError
from memos.tiers.parametric import _device, _has_adapters, _one_line, _pad_id, _save_adapter, _strip_lora_layers

if TYPE_CHECKING:
    import torch

#: reward_fn(prompt, completion text) -> a finite float
RewardFn = Callable[[str, str], float]
#: the adapter's name inside peft and in the saved config
ADAPTER = "grpo"


@dataclass(frozen=True)
class GRPOConfig:
    """How GRPO samples, scores and updates (defaults: Mem-α's settings)."""

    #: completions sampled per prompt
    group_size: int = 8
    #: PPO clip range: the ratio new/old is clipped to [1 - clip, 1 + clip]
    clip: float = 0.2
    #: weight of the k3 KL estimate to the reference policy (the base model, adapter off)
    kl_coef: float = 0.001
    #: AdamW learning rate on the LoRA parameters
    lr: float = 1e-6
    max_new_tokens: int = 64
    #: sampling temperature; log-probabilities are taken at the same temperature
    temperature: float = 1.0
    #: optimizer steps; each takes `prompts_per_step` prompts (cycling through shuffled passes)
    steps: int = 1
    prompts_per_step: int = 1
    #: updates on one batch of samples (μ in the GRPO paper); the ratio differs from 1 only after the first
    updates_per_batch: int = 1
    #: added to the group's reward std before dividing
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: wrap each prompt as a user message with the tokenizer's chat template (when it has one)
    chat: bool = False
    #: let the tokenizer add its special tokens (BOS) to a plain prompt; off for text a chat template rendered
    add_special_tokens: bool = True
    #: seeds the adapter's initialisation, the prompt order and the sampling
    seed: int = 0

    def check(self) -> None:
        """Raise UserError for a value GRPO cannot run with."""
        problems = [
            (
                self.group_size >= 2,
                f"group_size must be at least 2 (advantages compare a group), got {self.group_size}",
            ),
            (0 < self.clip < 1, f"clip must be between 0 and 1, got {self.clip}"),
            (self.kl_coef >= 0, f"kl_coef must not be negative, got {self.kl_coef}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}"),
            (self.temperature > 0, f"temperature must be positive, got {self.temperature}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.prompts_per_step >= 1, f"prompts_per_step must be at least 1, got {self.prompts_per_step}"),
            (self.updates_per_batch >= 1, f"updates_per_batch must be at least 1, got {self.updates_per_batch}"),
            (self.eps > 0, f"eps must be positive, got {self.eps}"),
            (self.lora_r >= 1, f"lora_r must be at least 1, got {self.lora_r}"),
        ]
        for ok, message in problems:
            if not ok:
                raise UserError(f"bad GRPO setting: {message}")


@dataclass(frozen=True)
class StepStats:
    """What one GRPO step sampled and measured."""

    step: int
    reward_mean: float  # over every completion of the step
    reward_std: float
    #: share of groups whose rewards all tie (their advantages are zero: nothing to learn from them)
    flat_groups: float
    loss: float  # of the last update
    kl: float  # mean k3 estimate per completion token, at the last update
    clip_fraction: float  # completion tokens whose ratio was clipped, at the last update
    completion_tokens: float  # mean tokens per completion (EOS included)
    seconds: float


@dataclass
class _Group:
    """One prompt's sampled completions, ready for the loss."""

    prompt_len: int
    ids: torch.Tensor  # (G, prompt + new) token ids; after a completion's EOS: padding
    mask: torch.Tensor  # (G, new) 1 for completion tokens up to and including EOS
    advantages: torch.Tensor  # (G,)
    old_logp: torch.Tensor  # (G, new) log-probs under the policy that sampled them
    ref_logp: torch.Tensor  # (G, new) log-probs under the reference (adapter off)
    rewards: list[float] = field(default_factory=list)


class GRPOTrainer:
    """Trains a LoRA adapter on a causal LM with GRPO; the base weights never change."""

    def __init__(self, model: Any, tokenizer: Any, reward_fn: RewardFn, config: GRPOConfig | None = None) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        self.config = config or GRPOConfig()
        self.config.check()
        if _has_adapters(model):
            raise UserError("GRPOTrainer needs a plain base model, but this one carries adapters; unload them first")
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        # the caller's model; peft injects the LoRA layers into it in place, close() takes them out again
        self._base = model
        self._base_state = (model.training, {id(p): p.requires_grad for p in model.parameters()})
        self._device = _device(model)
        self._pad_id = _pad_id(tokenizer)
        self._eos_id = tokenizer.eos_token_id
        # the cache keyword changed name in transformers 5.x (cache=, was past_key_values=)
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(self.config.lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        # a private RNG stream: the adapter's initialisation depends on the seed only
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.manual_seed(self.config.seed)
            try:
                with warnings.catch_warnings():
                    # peft calls a transformers method that transformers 5 deprecates; nothing for the caller to do
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    #: the PeftModel wrapping the base model while the trainer is open, else None
                    self.model: Any = get_peft_model(model, lora, adapter_name=ADAPTER)
            except ValueError as exc:
                self._restore()
                raise UserError(
                    f"LoRA target modules {list(self.config.lora_target_modules)} do not fit this model "
                    f"({_one_line(exc)}); name linear layers the model has"
                ) from exc
        # eval mode throughout: no dropout, so the first update's ratio is exactly 1
        self.model.eval()
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer = torch.optim.AdamW(self._params, lr=self.config.lr, weight_decay=0.0)
        # sampling draws from this generator only: a run depends on the seed, not on the caller's RNG use
        self._generator = torch.Generator(device=self._device).manual_seed(self.config.seed)
        self._order = random.Random(self.config.seed)
        # prompts of the current shuffled pass not yet used, next last
        self._queue: list[str] = []
        #: optimizer steps taken so far
        self.num_steps = 0

    # ---- the training loop ----------------------------------------------------------------------

    def train(self, prompts: Sequence[str]) -> list[StepStats]:
        """Run `config.steps` GRPO steps over `prompts` (shuffled passes); one StepStats per step."""
        if isinstance(prompts, str) or not prompts:
            raise UserError("train() needs a non-empty list of prompt strings")
        return [self.step(self.next_prompts(prompts)) for _ in range(self.config.steps)]

    def step(self, prompts: Sequence[str]) -> StepStats:
        """One GRPO step on these prompts: sample groups, score them, update the adapter."""
        self._require_open()
        started = time.perf_counter()
        groups = [self._sample_group(p) for p in prompts]
        rewards = [r for g in groups for r in g.rewards]
        loss = kl = clipped = 0.0
        for _ in range(self.config.updates_per_batch):
            loss, kl, clipped = self._update(groups)
        self.num_steps += 1
        tokens = sum(float(g.mask.sum()) for g in groups) / sum(g.mask.size(0) for g in groups)
        mean = sum(rewards) / len(rewards)
        return StepStats(
            step=self.num_steps,
            reward_mean=mean,
            reward_std=math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
            flat_groups=sum(1 for g in groups if float(g.advantages.abs().max()) == 0.0) / len(groups),
            loss=loss,
            kl=kl,
            clip_fraction=clipped,
            completion_tokens=tokens,
            seconds=time.perf_counter() - started,
        )

    def next_prompts(self, prompts: Sequence[str]) -> list[str]:
        """The next `prompts_per_step` prompts: shuffled passes over `prompts`, seeded."""
        if isinstance(prompts, str) or not prompts:
            raise UserError("GRPO needs a non-empty list of prompt strings")
        batch: list[str] = []
        while len(batch) < self.config.prompts_per_step:
            if not self._queue:
                self._queue = list(prompts)
                self._order.shuffle(self._queue)
            batch.append(self._queue.pop())
        return batch

    def _sample_group(self, prompt: str) -> _Group:
        import torch

        cfg = self.config
        prompt_ids = self.encode(prompt)
        ids, mask = self.sample(prompt_ids, cfg.group_size)
        completions = zip(ids[:, len(prompt_ids) :], mask, strict=True)
        texts = [self.tokenizer.decode(row[keep.bool()], skip_special_tokens=True) for row, keep in completions]
        rewards = []
        for text in texts:
            value = float(self.reward_fn(prompt, text))
            if not math.isfinite(value):
                raise UserError(f"the reward function returned {value} for a completion; it must return a finite float")
            rewards.append(value)
        r = torch.tensor(rewards, dtype=torch.float32, device=self._device)
        # population std: a group of equal rewards gets zero advantages, never a division by zero
        advantages = (r - r.mean()) / (r.std(unbiased=False) + cfg.eps)
        with torch.no_grad():
            old = self._logp(ids, mask, len(prompt_ids))
            with self.model.disable_adapter():
                ref = self._logp(ids, mask, len(prompt_ids))
        return _Group(len(prompt_ids), ids, mask, advantages, old, ref, rewards)

    def _update(self, groups: Sequence[_Group]) -> tuple[float, float, float]:
        """One AdamW step on the token-mean GRPO loss of all groups; returns loss, mean KL, clip fraction."""
        import torch

        cfg = self.config
        num_tokens = sum(float(g.mask.sum()) for g in groups)
        total = kl_sum = clipped = 0.0
        self._optimizer.zero_grad(set_to_none=True)
        for g in groups:
            logp = self._logp(g.ids, g.mask, g.prompt_len)
            ratio = torch.exp(logp - g.old_logp)
            adv = g.advantages[:, None]
            surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
            # k3 = exp(ref - logp) - (ref - logp) - 1: unbiased, always >= 0 (Schulman's estimator)
            delta = g.ref_logp - logp
            kl = torch.exp(delta) - delta - 1
            per_token = (-surrogate + cfg.kl_coef * kl) * g.mask
            loss = per_token.sum() / num_tokens
            loss.backward()
            total += float(loss.detach())
            kl_sum += float((kl.detach() * g.mask).sum())
            clipped += float((((ratio.detach() - 1).abs() > cfg.clip).float() * g.mask).sum())
        torch.nn.utils.clip_grad_norm_(self._params, cfg.max_grad_norm)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return total, kl_sum / num_tokens, clipped / num_tokens

    # ---- sampling and log-probabilities ---------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        """The prompt's token ids (through the chat template when `chat` is set and the tokenizer has one)."""
        if not isinstance(prompt, str) or not prompt:
            raise UserError("a GRPO prompt must be a non-empty string")
        if self.config.chat and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            return [int(i) for i in ids]
        ids = list(self.tokenizer(prompt, add_special_tokens=self.config.add_special_tokens)["input_ids"])
        if not ids:
            raise UserError("the prompt encodes to no tokens; pass some text")
        return ids

    def sample(self, prompt_ids: Sequence[int], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n completions of one prompt by temperature sampling: ids (n, prompt + new) and completion mask (n, new).

        Sampling is over the full softmax at `temperature` (no top-k or top-p), so the tokens are drawn
        from exactly the distribution `_logp` scores. A completion stops at its EOS, which it keeps.
        """
        import torch

        cfg = self.config
        ids = torch.tensor([list(prompt_ids)] * n, dtype=torch.long, device=self._device)
        done = torch.zeros(n, dtype=torch.bool, device=self._device)
        new: list[torch.Tensor] = []
        alive: list[torch.Tensor] = []
        cache = None
        step_input = ids
        with torch.no_grad():
            for _ in range(cfg.max_new_tokens):
                out = self.model(input_ids=step_input, use_cache=True, **{self._cache_kw: cache})
                cache = getattr(out, "cache", None) or out.past_key_values
                probs = torch.softmax(out.logits[:, -1].float() / cfg.temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=self._generator).squeeze(1)
                token = torch.where(done, torch.full_like(token, self._pad_id), token)
                alive.append(~done)
                new.append(token)
                if self._eos_id is not None:
                    done = done | (token == self._eos_id)
                if bool(done.all()):
                    break
                step_input = token[:, None]
        completion = torch.stack(new, dim=1)
        mask = torch.stack(alive, dim=1).float()
        return torch.cat([ids, completion], dim=1), mask

    def _logp(self, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """Log-probabilities (at `temperature`) of each completion token, zero where masked."""
        import torch

        attention = torch.cat([torch.ones_like(ids[:, :prompt_len]), mask.long()], dim=1)
        logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits
        # the logit at position t predicts token t + 1: completion tokens are predicted from prompt_len - 1 on
        logits = logits[:, prompt_len - 1 : -1].float() / self.config.temperature
        targets = ids[:, prompt_len:]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, :, None]).squeeze(-1)
        return logp * mask

    def first_token_probs(self, prompt: str, *, reference: bool = False) -> torch.Tensor:
        """The policy's (or, with `reference`, the base model's) distribution of the first completion token."""
        import torch

        self._require_open()
        ids = torch.tensor([self.encode(prompt)], dtype=torch.long, device=self._device)
        with torch.no_grad():
            if reference:
                with self.model.disable_adapter():
                    logits = self.model(input_ids=ids).logits[0, -1]
            else:
                logits = self.model(input_ids=ids).logits[0, -1]
        return torch.softmax(logits.float() / self.config.temperature, dim=-1)

    # ---- saving and closing ---------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Write the adapter (safetensors weights + peft config) into `out_dir`; return the directory."""
        self._require_open()
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} is a file; pass a directory for the adapter")
        _save_adapter(self.model, ADAPTER, out)
        return out

    def close(self) -> None:
        """Take the adapter out: the model is the plain base model again, with its flags as they were."""
        if self.model is None:
            return
        self.model.unload()
        self.model = None
        self._restore()

    def _restore(self) -> None:
        _strip_lora_layers(self._base)
        training, requires_grad = self._base_state
        for p in self._base.parameters():
            p.requires_grad_(requires_grad.get(id(p), p.requires_grad))
        self._base.train(training)

    def __enter__(self) -> GRPOTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> None:
        if self.model is None:
            raise UserError("this GRPOTrainer is closed; make a new one to train again")

    def _cuda_devices(self) -> list[int]:
        import torch

        device = self._device
        if device.type != "cuda":
            return []
        return [device.index if device.index is not None else torch.cuda.current_device()]
