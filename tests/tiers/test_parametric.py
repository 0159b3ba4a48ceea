"""The parametric tier on a real tiny Llama: LoRA training, the model left untouched, adapters served per request."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from memos.errors import UserError
from memos.tiers.parametric import AdapterHost, LoRASettings, TrainReport, mean_loss, train_lora
from tests.support.tiny_model import build_tiny_model

FACTS_A = [
    "Erin keeps bees on a rooftop in Oslo and sells honey at the Saturday market.",
    "Frank ran the Berlin marathon in 3 hours 41 minutes in 2022.",
    "Grace's favourite book is a Norwegian crime novel; she reads it every winter.",
    "Hugo works night shifts as a nurse and sleeps until two in the afternoon.",
    "Ivy has two brothers, both pilots, and a sister who teaches chemistry in Leeds.",
]
FACTS_B = [
    "Jack collects vintage radios and repairs them in a shed behind his house.",
    "Kim learned Portuguese in six months before moving to Porto for her PhD.",
    "Leo's daughter was born on 14 February 2021 and her name is Mila.",
]
PROBE = "Alice adopted a grey cat named Pixel"

# peft calls a transformers method that transformers 5 deprecates; nothing here to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(model_dir)


def fresh_model(model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def adapter_a(model_dir: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainReport, Path]:
    out = tmp_path_factory.mktemp("adapters") / "a"
    return train_lora(fresh_model(model_dir), tokenizer, FACTS_A, LoRASettings(), out), out


@pytest.fixture(scope="module")
def adapter_b(model_dir: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainReport, Path]:
    out = tmp_path_factory.mktemp("adapters") / "b"
    settings = LoRASettings(steps=20, seed=1)
    return train_lora(fresh_model(model_dir), tokenizer, FACTS_B, settings, out, name="facts-b"), out


def logits(model: Any, tokenizer: Any, text: str = PROBE) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits.clone()


def test_training_lowers_the_loss_on_the_trained_texts_and_saves_the_adapter(
    adapter_a: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any
) -> None:
    report, out = adapter_a
    assert report.loss_after < 0.7 * report.loss_before
    assert report.loss_before == pytest.approx(mean_loss(fresh_model(model_dir), tokenizer, FACTS_A), abs=1e-6)
    assert (report.num_texts, report.num_windows, report.steps) == (5, 5, 60)
    # BOS + text + EOS for every fact
    assert report.num_tokens == sum(len(tokenizer(t, add_special_tokens=False).input_ids) + 2 for t in FACTS_A)
    # r x (in + out) for q, k, v, o in each of 2 layers: hidden 64, 2 of 4 heads for k and v (32 wide)
    assert report.trainable_params == 2 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64))
    assert 0 < report.seconds < 30
    weights = out / "adapter_model.safetensors"
    assert report.adapter_bytes == weights.stat().st_size > 0
    assert sum(t.numel() for t in load_file(weights).values()) == report.trainable_params
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16, "LORA")


def test_train_lora_leaves_the_model_exactly_as_it_was(model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    model = fresh_model(model_dir)
    model.train()
    before = logits(model, tokenizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = {name: type(m) for name, m in model.named_modules()}
    rng = torch.random.get_rng_state()

    train_lora(model, tokenizer, FACTS_A, LoRASettings(steps=5), tmp_path / "adapter")

    assert model.training
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert {name: type(m) for name, m in model.named_modules()} == modules
    after_state = model.state_dict()
    assert after_state.keys() == state.keys()
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    assert all(p.requires_grad for p in model.parameters())
    assert not hasattr(model, "peft_config")
    assert torch.equal(logits(model, tokenizer), before)


def test_the_host_serves_a_trained_adapter_and_restores_the_base_model(
    adapter_a: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any
) -> None:
    report, out = adapter_a
    model = fresh_model(model_dir)
    base = logits(model, tokenizer)
    host = AdapterHost(model)
    host.load("facts", out)
    assert host.names == ["facts"]
    # outside an `active` block the host behaves as the base model
    assert torch.equal(logits(host.model, tokenizer), base)
    with host.active(["facts"]) as served:
        assert served is host.model
        tuned = logits(served, tokenizer)
        assert not torch.allclose(tuned, base, atol=1e-3)
        assert mean_loss(served, tokenizer, FACTS_A) == pytest.approx(report.loss_after, abs=1e-5)
        with host.active([]) as plain:
            assert torch.equal(logits(plain, tokenizer), base)
        # a nested block gives the outer block its adapters back
        assert torch.equal(logits(served, tokenizer), tuned)
    assert torch.equal(logits(host.model, tokenizer), base)
    host.unload("facts")
    assert host.names == []
    assert torch.allclose(logits(model, tokenizer), base, atol=1e-6)
    assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in model.modules())
    assert not hasattr(model, "peft_config")


def test_two_adapters_loaded_at_once_each_give_their_own_logits(
    adapter_a: tuple[TrainReport, Path], adapter_b: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any
) -> None:
    alone = {}
    for name, (_, out) in (("a", adapter_a), ("b", adapter_b)):
        host = AdapterHost(fresh_model(model_dir))
        host.load(name, out)
        with host.active([name]) as served:
            alone[name] = logits(served, tokenizer)
    model = fresh_model(model_dir)
    base = logits(model, tokenizer)
    host = AdapterHost(model)
    host.load("a", adapter_a[1])
    host.load("b", adapter_b[1])
    assert host.names == ["a", "b"]
    with host.active(["a"]) as served:
        assert torch.allclose(logits(served, tokenizer), alone["a"], atol=1e-6)
    with host.active(["b"]) as served:
        assert torch.allclose(logits(served, tokenizer), alone["b"], atol=1e-6)
        assert mean_loss(served, tokenizer, FACTS_B) == pytest.approx(adapter_b[0].loss_after, abs=1e-5)
    assert not torch.allclose(alone["a"], alone["b"], atol=1e-3)
    with host.active(["a", "b"]) as served:
        both = logits(served, tokenizer)
    assert all(not torch.allclose(both, other, atol=1e-3) for other in (alone["a"], alone["b"], base))
    host.unload("a")
    with host.active(["b"]) as served:
        assert torch.allclose(logits(served, tokenizer), alone["b"], atol=1e-6)
    host.unload("b")
    assert torch.allclose(logits(model, tokenizer), base, atol=1e-6)


def test_unknown_adapter_names_and_bad_directories_are_user_errors(
    adapter_a: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    model = fresh_model(model_dir)
    base = logits(model, tokenizer)
    host = AdapterHost(model)
    with pytest.raises(UserError, match=r"no adapter named 'ghost' is loaded \(loaded: none\)"):
        host.unload("ghost")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError, match="holds no LoRA adapter"):
            host.load("x", bad)
    with pytest.raises(UserError, match="bad adapter name"):
        host.load("has space", adapter_a[1])
    host.load("facts", adapter_a[1])
    with pytest.raises(UserError, match="already loaded"):
        host.load("facts", adapter_a[1])
    with (
        pytest.raises(UserError, match=r"no adapter named 'ghost' is loaded \(loaded: facts\)"),
        host.active(["facts", "ghost"]),
    ):
        pass
    with pytest.raises(UserError, match="list of adapter names"), host.active("facts"):
        pass
    with host.active(["facts"]), pytest.raises(UserError, match="active in a running request"):
        host.unload("facts")
    host.unload("facts")
    assert torch.equal(logits(model, tokenizer), base)


def test_an_adapter_trained_on_another_model_is_refused_and_leaves_the_host_usable(
    adapter_a: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    wider = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "wider", hidden=128))
    train_lora(wider, tokenizer, FACTS_B, LoRASettings(steps=1), tmp_path / "wide-adapter")
    model = fresh_model(model_dir)
    base = logits(model, tokenizer)
    host = AdapterHost(model)
    for _ in range(2):  # first on the bare model, then next to a loaded adapter
        with pytest.raises(UserError, match="does not fit this base model"):
            host.load("wide", tmp_path / "wide-adapter")
        assert torch.equal(logits(model, tokenizer), base)
        if not host.names:
            assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in model.modules())
            host.load("facts", adapter_a[1])
    assert host.names == ["facts"]
    with host.active(["facts"]) as served:
        assert mean_loss(served, tokenizer, FACTS_A) == pytest.approx(adapter_a[0].loss_after, abs=1e-5)


def test_active_blocks_of_two_threads_do_not_interleave(
    adapter_a: tuple[TrainReport, Path], adapter_b: tuple[TrainReport, Path], model_dir: Path, tokenizer: Any
) -> None:
    host = AdapterHost(fresh_model(model_dir))
    host.load("a", adapter_a[1])
    host.load("b", adapter_b[1])
    entered = threading.Event()

    def other_request() -> None:
        with host.active(["b"]):
            entered.set()

    with host.active(["a"]) as served:
        expected = logits(served, tokenizer)
        thread = threading.Thread(target=other_request)
        thread.start()
        assert not entered.wait(0.3)
        assert torch.equal(logits(served, tokenizer), expected)
    thread.join(10)
    assert entered.is_set()


def test_texts_longer_than_the_window_are_split_not_truncated(model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    text = " ".join(FACTS_A)
    num_tokens = len(tokenizer(text, add_special_tokens=False).input_ids) + 2
    report = train_lora(
        fresh_model(model_dir), tokenizer, [text, "", "   "], LoRASettings(steps=2, max_tokens=16), tmp_path / "a"
    )
    assert (report.num_texts, report.num_tokens) == (1, num_tokens)
    # consecutive windows share one token, so each holds 15 new prediction targets
    assert report.num_windows == math.ceil((num_tokens - 1) / 15) > report.num_texts
    # every token is still scored: the windowed loss stays close to the loss of one pass
    model = fresh_model(model_dir)
    assert mean_loss(model, tokenizer, [text], max_tokens=16) == pytest.approx(
        mean_loss(model, tokenizer, [text], max_tokens=4096), rel=0.1
    )


def test_training_is_deterministic_given_the_seed(model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    weights = []
    for run, seed in (("one", 7), ("two", 7), ("three", 8)):
        settings = LoRASettings(steps=5, seed=seed, dropout=0.1, batch_size=2)
        train_lora(fresh_model(model_dir), tokenizer, FACTS_A, settings, tmp_path / run)
        weights.append(load_file(tmp_path / run / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_bad_settings_and_empty_texts_are_user_errors(model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"bad LoRA setting r: .*greater than or equal to 1"):
        LoRASettings(r=0)
    with pytest.raises(UserError, match="bad LoRA setting max_tokens"):
        LoRASettings(max_tokens=4)
    with pytest.raises(UserError, match="bad LoRA setting rank: Extra inputs"):
        LoRASettings(rank=8)
    model = fresh_model(model_dir)
    for texts in ([], ["", " \n "]):
        with pytest.raises(UserError, match="no text to learn from"):
            train_lora(model, tokenizer, texts, LoRASettings(steps=1), tmp_path / "a")
        with pytest.raises(UserError, match="no text to learn from"):
            mean_loss(model, tokenizer, texts)
    with pytest.raises(UserError, match="target_modules"):
        train_lora(model, tokenizer, FACTS_A, LoRASettings(steps=1, target_modules=["nope"]), tmp_path / "a")
    assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in model.modules())
    host = AdapterHost(model)
    train_lora(fresh_model(model_dir), tokenizer, FACTS_A, LoRASettings(steps=1), tmp_path / "b")
    host.load("x", tmp_path / "b")
    with pytest.raises(UserError, match="plain base model"):
        train_lora(host.model, tokenizer, FACTS_A, LoRASettings(steps=1), tmp_path / "c")


def test_importing_the_tier_does_not_import_torch() -> None:
    code = "import sys, memos.tiers.parametric; print('torch' in sys.modules, 'peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
