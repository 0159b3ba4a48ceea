"""GRPO on a real tiny random Llama: the rewarded token gets likelier, the reference stays put, runs repeat exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from support.cli import Cli
from support.tiny_model import build_tiny_model

from memos.errors import UserError
from memos.llm.testing import random_llama, random_tokenizer
from memos.policies.grpo import GRPOConfig, GRPOTrainer
from memos.tiers.parametric import AdapterHost

CORPUS = ["the cat sat on the mat and the dog ran to the park"] * 5 + ["alpha beta gamma delta epsilon"] * 5
PROMPT = "the cat sat"
# peft calls a transformers method that transformers 5 deprecates (loading the saved adapter); nothing to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

#: fast settings for a ~30k-parameter model: a high learning rate, short completions
FAST = GRPOConfig(group_size=8, lr=2e-2, max_new_tokens=6, steps=15, seed=0)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return random_tokenizer(CORPUS, vocab_size=300)


def tiny(tokenizer: Any) -> Any:
    # a wide initialisation gives a peaked, prompt-dependent first-token distribution
    return random_llama(tokenizer, hidden=32, layers=2, heads=4, initializer_range=0.2, seed=0)


def token_reward(tokenizer: Any, token: int) -> Any:
    """The share of a completion's tokens that are `token`."""

    def reward(prompt: str, completion: str) -> float:
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        return sum(1 for i in ids if i == token) / max(len(ids), 1)

    return reward


def sixth_likeliest(model: Any, tokenizer: Any) -> int:
    """A token the untrained model samples now and then at the first position (not its favourite)."""
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1], dim=-1)
    return int(torch.argsort(probs, descending=True)[5])


def test_grpo_makes_the_rewarded_token_likelier_and_leaves_the_reference_alone(tokenizer: Any) -> None:
    model = tiny(tokenizer)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    token = sixth_likeliest(model, tokenizer)
    with GRPOTrainer(model, tokenizer, token_reward(tokenizer, token), FAST) as trainer:
        before = float(trainer.first_token_probs(PROMPT)[token])
        reference_before = trainer.first_token_probs(PROMPT, reference=True)
        stats = trainer.train([PROMPT])
        after = float(trainer.first_token_probs(PROMPT)[token])
        reference_after = trainer.first_token_probs(PROMPT, reference=True)
        lora = [name for name, p in trainer.model.named_parameters() if p.requires_grad]

    assert 0.01 < before < 0.05
    assert after > 0.3
    assert after > 10 * before
    # the reference is the base model with the adapter off: exactly what it was
    assert torch.equal(reference_before, reference_after)
    assert all(torch.equal(p, base[name]) for name, p in model.named_parameters())
    assert lora and all("lora_" in name for name in lora)
    # close() took the adapter out and put the flags back
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())

    assert [s.step for s in stats] == list(range(1, 16))
    assert all(0.0 <= s.reward_mean <= 1.0 and s.reward_std >= 0.0 for s in stats)
    assert all(s.kl >= 0.0 and 0.0 <= s.clip_fraction <= 1.0 for s in stats)
    assert all(1.0 <= s.completion_tokens <= FAST.max_new_tokens for s in stats)
    assert stats[0].kl == 0.0  # adapter B starts at zero: the policy is the reference
    early, late = stats[:5], stats[-5:]
    assert sum(s.reward_mean for s in late) > sum(s.reward_mean for s in early) + 0.5


def test_the_same_seed_gives_the_same_run_and_the_saved_adapter_serves_the_trained_policy(
    tokenizer: Any, tmp_path: Path
) -> None:
    config = GRPOConfig(group_size=4, lr=2e-2, max_new_tokens=4, steps=3, seed=7)
    token = sixth_likeliest(tiny(tokenizer), tokenizer)
    runs = []
    for _ in range(2):
        with GRPOTrainer(tiny(tokenizer), tokenizer, token_reward(tokenizer, token), config) as trainer:
            stats = trainer.train([PROMPT, "alpha beta"])
            probs = trainer.first_token_probs(PROMPT)
            trainer.save(tmp_path / f"adapter{len(runs)}")
        runs.append((stats, probs))
    (stats_a, probs_a), (stats_b, probs_b) = runs
    assert [(s.reward_mean, s.loss, s.kl) for s in stats_a] == [(s.reward_mean, s.loss, s.kl) for s in stats_b]
    assert torch.equal(probs_a, probs_b)

    assert sorted(p.name for p in (tmp_path / "adapter0").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    host = AdapterHost(tiny(tokenizer))
    host.load("grpo", tmp_path / "adapter0")
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with host.active(["grpo"]) as served, torch.no_grad():
        logits = served(input_ids=ids).logits[0, -1]
    assert torch.allclose(torch.softmax(logits, dim=-1), probs_a, atol=1e-6)


def test_a_flat_reward_teaches_nothing(tokenizer: Any) -> None:
    with GRPOTrainer(tiny(tokenizer), tokenizer, lambda p, c: 1.0, GRPOConfig(steps=2, max_new_tokens=3)) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        stats = trainer.train([PROMPT])
        after = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    # equal rewards give zero advantages; the policy equals the reference, so the KL gradient is zero too
    assert [(s.flat_groups, s.reward_std, s.kl, s.loss) for s in stats] == [(1.0, 0.0, 0.0, 0.0)] * 2
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_bad_settings_and_rewards_are_user_errors(tokenizer: Any) -> None:
    with pytest.raises(UserError, match="group_size must be at least 2"):
        GRPOTrainer(tiny(tokenizer), tokenizer, lambda p, c: 0.0, GRPOConfig(group_size=1))
    with pytest.raises(UserError, match="clip must be between 0 and 1"):
        GRPOConfig(clip=1.5).check()
    model = tiny(tokenizer)
    with GRPOTrainer(model, tokenizer, lambda p, c: float("nan"), GRPOConfig(max_new_tokens=2)) as trainer:
        with pytest.raises(UserError, match="finite float"):
            trainer.train([PROMPT])
        with pytest.raises(UserError, match="non-empty list"):
            trainer.train([])
    with pytest.raises(UserError, match="target modules"):
        GRPOTrainer(model, tokenizer, lambda p, c: 0.0, GRPOConfig(lora_target_modules=("no_such_layer",)))
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_memos_train_mem_alpha_runs_grpo_on_chunk_prompts_and_saves_the_adapter(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "model")
    data = tmp_path / "instances.jsonl"
    instance = {"chunks": ["Alice adopted a grey cat named Pixel."], "questions": ["Cat?"], "answers": ["Pixel"]}
    data.write_text(json.dumps(instance) + "\n")
    out = tmp_path / "adapter"
    cli = Cli(tmp_path / "home")
    args = ["--data", str(data), "--model", str(model_dir), "--steps", "1", "--group-size", "2"]
    result = cli("train", "mem-alpha", *args, "--max-new-tokens", "3", "--out", str(out))
    lines = result.stdout.splitlines()
    assert lines[0] == "1 chunk prompts from 1 instances; 1 GRPO steps"
    assert lines[1].startswith("step 1: reward ")
    assert lines[-1] == f"saved the LoRA adapter to {out}"
    assert (out / "adapter_model.safetensors").is_file()

    line = cli.user_error("train", "mem-alpha", *args, "--group-size", "1")
    assert "group_size must be at least 2" in line


def test_memos_train_mem_alpha_without_the_mem_alpha_package_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "memos.policies.mem_alpha", None)  # makes the import fail
    line = Cli(tmp_path / "home").user_error(
        "train", "mem-alpha", "--data", str(tmp_path / "x.jsonl"), "--model", str(tmp_path)
    )
    assert (
        line == "error: the Mem-α policy (memos.policies.mem_alpha) is not installed; `memos train mem-alpha` needs it"
    )
