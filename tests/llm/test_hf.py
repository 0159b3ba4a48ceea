"""The local Hugging Face backend on a tiny random Llama: KV-block injection is exact and never mutates."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch
from support.tiny_model import build_tiny_model

from memos.config import Settings
from memos.errors import UserError
from memos.llm import make_llm
from memos.llm.hf import HFChat
from memos.tiers.kv import KVBlock, StaleBlock

SYSTEM = "You remember: Alice adopted a grey cat named Pixel in March. Bob moved to Lisbon for a robotics job."
QUESTION = "What did Alice name her cat?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> HFChat:
    return HFChat(model_dir)


def _messages(question: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def _snapshot(block: KVBlock) -> list[torch.Tensor]:
    return [t.clone() for pair in block.layers for t in pair]


def test_make_llm_loads_a_local_directory(model_dir: Path) -> None:
    llm = make_llm(Settings(home=model_dir.parent / "home", llm=f"hf:{model_dir}"))
    assert isinstance(llm, HFChat)
    assert llm.model_id == f"hf:{model_dir}"
    assert llm.capabilities.kv_injection and llm.capabilities.adapters and llm.capabilities.stream


def test_missing_directory_and_bad_dtype_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no local model directory"):
        HFChat(tmp_path / "nope")
    with pytest.raises(UserError, match="unknown dtype"):
        HFChat(tmp_path, dtype="float8")
    with pytest.raises(UserError, match="no local model directory"):
        make_llm(Settings(home=tmp_path / "home", llm=f"hf:{tmp_path / 'nope'}"))


def test_stable_prefix_is_the_shared_start_of_any_question(llm: HFChat) -> None:
    prefix = llm.stable_prefix(SYSTEM)
    for question in (QUESTION, "Where does Bob work?", "1"):
        ids = llm.encode(_messages(question))
        assert ids[: len(prefix)] == prefix
    assert llm.tokenizer.decode(prefix).endswith("<|end|><|user|>")


def test_injected_block_gives_the_same_tokens_and_logits(llm: HFChat) -> None:
    block = llm.build_block(llm.stable_prefix(SYSTEM))
    ids = llm.encode(_messages())
    assert block.matches(ids)
    before = _snapshot(block)

    plain = llm.generate_ids(ids, max_tokens=24)
    assert llm.last_stats is not None and llm.last_stats.injected_tokens == 0
    injected = llm.generate_ids(ids, max_tokens=24, kv=block)
    assert llm.last_stats.injected_tokens == block.num_tokens
    again = llm.generate_ids(ids, max_tokens=24, kv=block)
    assert plain == injected == again
    assert len(set(plain)) > 5  # a varied sequence, not one repeated token

    # transformers' own generate, without any cache given, agrees with our decode loop
    reference = llm.model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None)
    assert reference[0, len(ids) :].tolist() == plain

    full = llm.logits(ids)
    cached = llm.logits(ids, kv=block)
    assert torch.allclose(full, cached, atol=1e-4)
    # the block was read, never written: its tensors are bit-identical after three uses
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(block), strict=True))


def test_sampled_output_is_also_identical_with_the_same_seed(llm: HFChat) -> None:
    block = llm.build_block(llm.stable_prefix(SYSTEM))
    ids = llm.encode(_messages())
    a = llm.generate_ids(ids, max_tokens=16, temperature=0.8, seed=3)
    b = llm.generate_ids(ids, max_tokens=16, temperature=0.8, seed=3, kv=block)
    assert a == b


def test_a_block_that_is_not_the_prompt_prefix_is_not_injected(llm: HFChat) -> None:
    other = llm.build_block(llm.stable_prefix("You remember nothing at all."))
    ids = llm.encode(_messages())
    assert not other.matches(ids)
    assert llm.generate_ids(ids, max_tokens=8, kv=other) == llm.generate_ids(ids, max_tokens=8)
    assert llm.last_stats is not None and llm.last_stats.injected_tokens == 0


def test_a_block_covering_the_whole_prompt_still_feeds_one_token(llm: HFChat) -> None:
    ids = llm.encode(_messages())
    block = llm.build_block(ids)
    plain = llm.generate_ids(ids, max_tokens=8)
    assert llm.generate_ids(ids, max_tokens=8, kv=block) == plain
    assert llm.last_stats is not None and llm.last_stats.injected_tokens == len(ids) - 1


def test_fingerprint_mismatch_is_refused(llm: HFChat, model_dir: Path, tmp_path: Path) -> None:
    other_dir = build_tiny_model(tmp_path / "other", seed=1)
    other = HFChat(other_dir)
    assert other.fingerprint != llm.fingerprint
    # the same weights loaded from another place have the same fingerprint
    assert HFChat(model_dir).fingerprint == llm.fingerprint
    block = other.build_block(other.stable_prefix(SYSTEM))
    ids = llm.encode(_messages())
    assert block.matches(ids)
    with pytest.raises(StaleBlock, match="built for another model"):
        llm.generate_ids(ids, max_tokens=4, kv=block)


def test_blocks_round_trip_through_safetensors(llm: HFChat, tmp_path: Path) -> None:
    block = llm.build_block(llm.stable_prefix(SYSTEM))
    size = block.save(tmp_path / "block.safetensors")
    assert size > block.nbytes
    loaded = KVBlock.load(tmp_path / "block.safetensors")
    assert loaded.token_ids == block.token_ids and loaded.fingerprint == block.fingerprint
    ids = llm.encode(_messages())
    assert llm.generate_ids(ids, max_tokens=12, kv=loaded) == llm.generate_ids(ids, max_tokens=12)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="cannot read the KV block"):
        KVBlock.load(tmp_path / "junk.safetensors")


def test_complete_and_stream_report_injection(llm: HFChat) -> None:
    block = llm.build_block(llm.stable_prefix(SYSTEM))
    done = llm.complete(_messages(), max_tokens=12, kv=block)
    assert done.usage is not None
    assert done.usage.cached_tokens == block.num_tokens
    assert done.usage.completion_tokens == 12 and done.finish_reason == "length"
    streamed = "".join(llm.stream(_messages(), max_tokens=12))
    assert streamed == done.text
    with pytest.raises(UserError, match="does not take tool schemas"):
        llm.complete(_messages(), tools=[{"name": "search"}])
    with pytest.raises(UserError, match="messages is empty"):
        llm.complete([])


def test_stop_strings_end_the_answer(llm: HFChat) -> None:
    full = llm.complete(_messages(), max_tokens=24).text
    assert len(full) > 4
    cut = full[2:4]
    stopped = llm.complete(_messages(), max_tokens=24, stop=cut).text
    assert stopped == full[: full.find(cut)]


def test_a_home_opened_with_a_local_model_counts_tokens_with_its_tokenizer(model_dir: Path, tmp_path: Path) -> None:
    from memos import MemOS

    with MemOS.open(tmp_path / "home", embedder="hash", llm=f"hf:{model_dir}", auto_paging=False) as mos:
        assert isinstance(mos.llm, HFChat)
        assert mos.tokenizer.name == f"hf:{model_dir}"
        cube = mos.as_user("alice").write("alice/chat", "Alice adopted a grey cat named Pixel.")
        assert cube.header.tokens == mos.llm.count("Alice adopted a grey cat named Pixel.")
