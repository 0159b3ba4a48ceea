"""Consolidation into the parametric tier in a real home: train, serve per request, migrate back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("peft")

import torch
from support.tiny_model import build_tiny_model

from memos import ManualClock, MemOS
from memos.cube import Kind, Status
from memos.errors import UserError
from memos.llm.hf import HFChat
from memos.tiers.adapters import adapter_name
from memos.tiers.parametric import mean_loss

FACTS = [
    "Alice adopted a grey cat named Pixel in March.",
    "Bob moved to Lisbon for a job at a robotics company.",
    "Carol owns the revenue section of the quarterly report.",
    "Dan is allergic to peanuts and prefers tea to coffee.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def kernel(home: Path, clock: ManualClock, model_dir: Path) -> Iterator[MemOS]:
    m = MemOS.open(home, embedder="hash", clock=clock, llm=HFChat(model_dir), auto_paging=False)
    yield m
    m.close()


def test_consolidate_trains_an_adapter_that_ask_uses_and_migrate_undoes(kernel: MemOS) -> None:
    alice = kernel.as_user("alice")
    ids = [alice.write("alice/chat", fact, level="long").id for fact in FACTS]
    alice.write("alice/chat", "a short-term page that is not consolidated")
    llm = kernel.llm
    assert isinstance(llm, HFChat)
    probe = torch.tensor([llm.encode([{"role": "user", "content": "Who has a cat?"}])])
    base_logits = llm.model(probe).logits.detach().clone()
    base_loss = mean_loss(llm.model, llm.tokenizer, FACTS)

    done = alice.consolidate("alice/chat", to="parametric", lora={"steps": 30, "seed": 0})
    cube = done.cube
    assert (cube.kind, cube.level, cube.status) == (Kind.parametric, "long", Status.active)
    assert cube.sources == ids and done.sources == len(FACTS)
    assert cube.header.labels["model"] == llm.fingerprint
    assert cube.blob is not None and kernel.blobs.exists(cube.blob)
    assert done.report["loss_after"] < 0.7 * done.report["loss_before"]
    assert done.report["loss_before"] == pytest.approx(base_loss, rel=1e-5)
    # training left the served model as it was
    assert torch.equal(llm.model(probe).logits, base_logits)

    working = alice.context("alice/chat", "Who has a cat?", budget_tokens=200)
    assert [c.id for c in working.adapters] == [cube.id]
    answer = alice.ask("alice/chat", "Who has a cat?", max_tokens=6)
    assert answer.adapters == [adapter_name(cube)]
    assert llm.loaded_adapters == [adapter_name(cube)]
    with llm.with_adapters(answer.adapters)._adapters():
        adapted = mean_loss(llm._model(), llm.tokenizer, FACTS)
    assert adapted == pytest.approx(done.report["loss_after"], rel=1e-4)

    # a block and an adapter together: the block's base-model KV is not injected under the adapter
    alice.migrate(ids[:2], to="activation")
    both = alice.ask("alice/chat", "Who has a cat?", max_tokens=4)
    assert both.working_set.activation is not None and both.adapters and both.cached_tokens == 0

    back = alice.migrate([cube.id], to="plaintext")
    assert [c.id for c in back] == ids
    assert alice.get(cube.id).status == Status.archived and not kernel.blobs.exists(cube.blob)
    assert llm.loaded_adapters == []
    assert torch.allclose(llm.model(probe).logits, base_logits, atol=1e-6)
    assert alice.ask("alice/chat", "Who has a cat?", max_tokens=2).adapters == []


def test_consolidate_refuses_what_it_cannot_do(kernel: MemOS, mos: MemOS) -> None:
    alice = kernel.as_user("alice")
    with pytest.raises(UserError, match="no active long-term plaintext cubes"):
        alice.consolidate("alice/empty", to="parametric")
    alice.write("alice/chat", "only short-term")
    with pytest.raises(UserError, match="run `memos tick`"):
        alice.consolidate("alice/chat", to="parametric")
    with pytest.raises(UserError, match="bad LoRA setting steps"):
        alice.consolidate("alice/chat", to="parametric", level=None, lora={"steps": 0})
    with pytest.raises(UserError, match="use --to activation or --to parametric"):
        alice.consolidate("alice/chat", to="plaintext")
    bob = mos.as_user("bob")
    bob.write("bob/notes", "a fact", level="long")
    with pytest.raises(UserError, match="needs a local model"):
        bob.consolidate("bob/notes", to="parametric")
