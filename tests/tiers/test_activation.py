"""The activation tier in a real home with a tiny local model: build, serve, promote, go stale, evict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from support.tiny_model import FACTS, build_tiny_model

from memos import ManualClock, MemOS
from memos.cube import Kind, Status
from memos.errors import UserError
from memos.llm.hf import HFChat
from memos.prompt import messages_for
from memos.tiers.activation import SYSTEM_PROMPT


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return build_tiny_model(root / "a", seed=0), build_tiny_model(root / "b", seed=1)


@pytest.fixture(scope="module")
def llm(model_dirs: tuple[Path, Path]) -> HFChat:
    return HFChat(model_dirs[0])


@pytest.fixture
def kernel(home: Path, clock: ManualClock, llm: HFChat) -> Iterator[MemOS]:
    m = MemOS.open(home, embedder="hash", clock=clock, llm=llm, auto_paging=False, activation_min_uses=2)
    yield m
    m.close()


def _write(kernel: MemOS, ns: str = "alice/chat", facts: list[str] = FACTS) -> list[str]:
    session = kernel.as_user("alice")
    return [session.write(ns, fact, level="long").id for fact in facts]


def test_migrate_builds_a_block_that_is_injected_with_identical_output(kernel: MemOS, llm: HFChat) -> None:
    alice = kernel.as_user("alice")
    ids = _write(kernel)
    [block] = alice.migrate(ids[:3], to="activation")
    assert (block.kind, block.level, block.status) == (Kind.activation, "long", Status.active)
    assert block.sources == ids[:3] and block.header.provenance.derived_from == ids[:3]
    assert block.header.labels["model"] == llm.fingerprint and block.header.labels["backend"] == "kv"
    assert block.blob is not None and kernel.blobs.exists(block.blob)
    assert int(block.header.labels["bytes"]) == kernel.blobs.size(block.blob)

    working = alice.context("alice/chat", "What is the name of Alice's cat?", budget_tokens=400)
    assert working.activation is not None and working.activation.id == block.id
    assert [item.cube.id for item in working.items[:3]] == ids[:3]
    assert {item.section for item in working.items[:3]} == {"activation"}
    assert working.system.startswith(SYSTEM_PROMPT) and FACTS[0] in working.system
    # the block's cubes are not repeated after it
    assert not {item.cube.id for item in working.items[3:]} & set(ids[:3])
    assert working.tokens <= 400

    answer = alice.ask("alice/chat", "What is the name of Alice's cat?", max_tokens=12)
    assert answer.cached_tokens == block.header.tokens > 0
    # the same prompt prefilled in full gives the same tokens
    plain = llm.complete(messages_for(answer.working_set, "What is the name of Alice's cat?"), max_tokens=12)
    assert plain.usage is not None and plain.usage.cached_tokens == 0
    assert answer.text == plain.text


def test_promotion_follows_the_cubes_working_sets_keep_using(kernel: MemOS, clock: ManualClock) -> None:
    alice = kernel.as_user("alice")
    ids = _write(kernel)
    assert alice.tick()["activated"] == 0  # nothing used yet
    for _ in range(2):
        alice.context("alice/chat", "Alice cat Pixel", budget_tokens=30)
        clock.advance(minutes=1)
    used = [c.id for c in alice.list("alice/chat") if c.header.usage.access_count >= 2]
    assert used and set(used) <= set(ids)
    assert alice.tick()["activated"] == 1
    block = kernel.activation.current("alice/chat")
    assert block is not None and set(block.sources) == set(used)
    assert alice.tick()["activated"] == 0  # unchanged: not rebuilt

    for _ in range(2):
        alice.context("alice/chat", "Dan peanuts tea coffee", budget_tokens=60)
    assert alice.tick()["activated"] == 1
    rebuilt = kernel.activation.current("alice/chat")
    assert rebuilt is not None and rebuilt.id == block.id and rebuilt.header.version == 2
    assert set(block.sources) < set(rebuilt.sources)
    # the old version's blob is gone, the new one is there
    assert block.blob is not None and not kernel.blobs.exists(block.blob)
    assert rebuilt.blob is not None and kernel.blobs.exists(rebuilt.blob)


def test_a_block_for_another_model_is_rebuilt_never_injected(
    home: Path, clock: ManualClock, model_dirs: tuple[Path, Path]
) -> None:
    first = HFChat(model_dirs[0])
    with MemOS.open(home, embedder="hash", clock=clock, llm=first, auto_paging=False) as kernel:
        ids = _write(kernel)
        [old] = kernel.as_user("alice").migrate(ids, to="activation")
    other = HFChat(model_dirs[1])
    with MemOS.open(home, embedder="hash", clock=clock, llm=other, auto_paging=False, activation_min_uses=1) as kernel:
        alice = kernel.as_user("alice")
        working = alice.context("alice/chat", "Where did Bob move?", budget_tokens=400)
        assert working.activation is None and working.system == ""
        answer = alice.ask("alice/chat", "Where did Bob move?", max_tokens=4)
        assert answer.cached_tokens == 0
        assert alice.tick()["activated"] == 1
        new = kernel.activation.current("alice/chat")
        assert new is not None and new.id == old.id
        assert new.header.labels["model"] == other.fingerprint != old.header.labels["model"]
        assert alice.context("alice/chat", "Where did Bob move?", budget_tokens=400).activation is not None


def test_an_edited_source_makes_the_block_stale(kernel: MemOS) -> None:
    alice = kernel.as_user("alice")
    ids = _write(kernel)
    alice.migrate(ids[:2], to="activation")
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is not None
    alice.update(ids[0], "Alice adopted a black cat named Pixel in March.")
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is None
    [again] = alice.migrate(ids[:2], to="activation")
    assert again.header.version == 2
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is not None
    # a budget the block does not fit in gets no block, only ranked items
    small = alice.context("alice/chat", "cat", budget_tokens=12)
    assert small.activation is None and small.tokens <= 12


def test_migrating_back_to_plaintext_keeps_every_source(kernel: MemOS) -> None:
    alice = kernel.as_user("alice")
    ids = _write(kernel)
    [block] = alice.migrate(ids, to="activation")
    back = alice.migrate([block.id], to="plaintext")
    assert [c.id for c in back] == ids and all(c.status == Status.active for c in back)
    assert alice.get(block.id).status == Status.archived
    assert block.blob is not None and not kernel.blobs.exists(block.blob)
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is None
    assert [h.cube.id for h in alice.recall("alice/chat", "grey cat Pixel", k=1)] == [ids[0]]


def test_the_coldest_block_is_evicted_over_the_byte_budget(kernel: MemOS) -> None:
    alice = kernel.as_user("alice")
    [first] = alice.migrate(_write(kernel, "alice/one"), to="activation")
    size = int(first.header.labels["bytes"])
    kernel.settings.activation_budget_bytes = size * 2 - 1
    alice.context("alice/one", "cat", budget_tokens=400)  # the first block is now used once
    [second] = alice.migrate(_write(kernel, "alice/two"), to="activation")
    # both cannot stay: the unused second block is colder than the first
    assert alice.get(second.id).status == Status.archived
    assert alice.get(first.id).status == Status.active
    assert len(alice.list("alice/two")) == len(FACTS)


def test_orphan_blobs_are_swept_and_bad_requests_refused(kernel: MemOS, llm: HFChat) -> None:
    alice = kernel.as_user("alice")
    ids = _write(kernel)
    [block] = alice.migrate(ids, to="activation")
    stray = kernel.blobs.root / "activation" / "stray.safetensors"
    stray.write_bytes(b"left by a crash")
    alice.tick()
    assert not stray.exists() and block.blob is not None and kernel.blobs.exists(block.blob)
    # a block whose blob is gone (an archive carries none) is not used; it is built again
    kernel.blobs.delete(block.blob)
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is None
    [again] = alice.migrate(ids, to="activation")
    assert again.blob is not None and kernel.blobs.exists(again.blob)
    assert alice.context("alice/chat", "cat", budget_tokens=400).activation is not None

    with pytest.raises(UserError, match="only plaintext cubes can be written"):
        alice.write("alice/chat", "x", kind="activation")
    with pytest.raises(UserError, match="separate calls"):
        alice.migrate([ids[0], again.id], to="parametric")
    with pytest.raises(UserError, match="one namespace"):
        alice.migrate([ids[0], _write(kernel, "alice/other")[0]], to="activation")
    with pytest.raises(UserError, match="plaintext already"):
        alice.migrate(ids[:1], to="plaintext")
    kernel.settings.activation_block_tokens = 16
    with pytest.raises(UserError, match="ACTIVATION_BLOCK_TOKENS"):
        alice.migrate(ids, to="activation")


def test_without_a_local_model_activation_is_refused(mos: MemOS) -> None:
    alice = mos.as_user("alice")
    ids = _write(mos)
    with pytest.raises(UserError, match="need a model that reuses KV caches"):
        alice.migrate(ids, to="activation")
    with pytest.raises(UserError, match="no LLM is configured"):
        alice.ask("alice/chat", "cat?")
    assert alice.tick()["activated"] == 0
