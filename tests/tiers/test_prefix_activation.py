"""The activation and parametric tiers on a vLLM server: blocks as warmed prompt prefixes, one adapter per request.

The server is the fake on 127.0.0.1, which counts prefix-cache hits in whole blocks per model as vLLM does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_openai import PREFIX_BLOCK_SIZE, FakeOpenAIServer, cached_tokens, prompt_tokens
from support.tiny_model import FACTS

from memos import ManualClock, MemOS
from memos.cube import Kind, Status
from memos.errors import UserError
from memos.llm.vllm import VLLMChat
from memos.tiers.activation import system_text

NS = "alice/chat"
#: the name the fake server serves, and the tiny local model's directory name: adapters fit by base name
MODEL = "tiny"
CHAT = "/v1/chat/completions"

# peft calls a transformers method that transformers 5 deprecates; nothing here to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake vLLM server serving MODEL, answering 404 for models (adapters) it does not serve."""
    with FakeOpenAIServer(model=MODEL, check_models=True) as fake:
        yield fake


def make_vllm(server: FakeOpenAIServer) -> VLLMChat:
    """A VLLMChat pointed at the fake server, with short limits so a failure cannot hang."""
    return VLLMChat(MODEL, base_url=server.url, api_key="sk-test", timeout_s=5.0, max_retries=0)


@pytest.fixture
def kernel(home: Path, clock: ManualClock, server: FakeOpenAIServer) -> Iterator[MemOS]:
    """A real home (hashing embedder, manual clock, paging only on tick) whose LLM is the vLLM server."""
    m = MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, llm=make_vllm(server))
    yield m
    m.close()


def chats(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    """The JSON bodies of the chat requests the server received, oldest first."""
    return [r.json for r in server.requests if r.path == CHAT]


def write(kernel: MemOS) -> list[str]:
    alice = kernel.as_user("alice")
    return [alice.write(NS, fact, level="long").id for fact in FACTS]


def test_a_block_is_a_warmed_prefix_that_every_ask_starts_with(kernel: MemOS, server: FakeOpenAIServer) -> None:
    alice = kernel.as_user("alice")
    ids = write(kernel)
    llm = kernel.llm
    assert isinstance(llm, VLLMChat)
    server.enqueue_chat(".")

    [block] = alice.migrate(ids, to="activation")

    text = system_text([alice.get(i) for i in ids])
    system = {"role": "system", "content": text}
    assert (block.kind, block.level, block.status, block.blob) == (Kind.activation, "long", Status.active, None)
    assert block.sources == ids
    labels = block.header.labels
    assert (labels["backend"], labels["model"], labels["bytes"]) == ("prefix", f"vllm:{MODEL}", "0")
    assert block.header.tokens == kernel.tokenizer.count(text)
    # the build warmed the server's cache with the system message alone, for one token
    assert chats(server) == [{"model": MODEL, "messages": [system], "max_tokens": 1}]
    warmed = llm.prefix_cache_stats()
    assert warmed.hits == 0

    questions = ["What did Alice name her cat?", "What is Dan allergic to?"]
    for _ in questions:
        server.enqueue_chat("an answer")
    answers = [alice.ask(NS, question, max_tokens=32) for question in questions]
    after = llm.prefix_cache_stats()

    asked = chats(server)[1:]
    assert len(asked) == 2
    for request, answer in zip(asked, answers, strict=True):
        # the block's system message opens every prompt, byte for byte
        assert request["messages"][0] == system
        assert request["model"] == MODEL and request["max_tokens"] == 32
        assert answer.text == "an answer"
        assert answer.working_set.activation is not None and answer.working_set.activation.id == block.id
        assert [item.section for item in answer.working_set.items] == ["activation"] * len(ids)
    # what the server's cache finds: the fake's own accounting, request by request
    prompts = [prompt_tokens(request["messages"]) for request in chats(server)]
    expected = [cached_tokens(prompts[n], prompts[:n]) for n in (1, 2)]
    assert after.hits - warmed.hits == sum(expected)
    assert after.queries - warmed.queries == len(prompts[1]) + len(prompts[2])
    # the first ask hits exactly the warmed prefix's full blocks, no more
    warm_prompt = prompt_tokens([system])
    assert prompts[1].startswith(warm_prompt)
    assert expected[0] == len(warm_prompt) // PREFIX_BLOCK_SIZE * PREFIX_BLOCK_SIZE > 0
    assert expected[1] >= expected[0]


def test_a_block_goes_back_to_plaintext_without_touching_the_server(kernel: MemOS, server: FakeOpenAIServer) -> None:
    alice = kernel.as_user("alice")
    ids = write(kernel)
    server.enqueue_chat(".")
    [block] = alice.migrate(ids, to="activation")
    before = len(server.requests)

    back = alice.migrate([block.id], to="plaintext")

    assert [c.id for c in back] == ids
    assert alice.get(block.id).status == Status.archived
    assert len(server.requests) == before
    server.enqueue_chat("no block now")
    answer = alice.ask(NS, "Where did Bob move?")
    assert answer.working_set.activation is None
    assert chats(server)[-1]["messages"][0]["content"] != system_text([alice.get(i) for i in ids])


def test_an_adapter_cannot_be_trained_on_a_vllm_server(kernel: MemOS, server: FakeOpenAIServer) -> None:
    alice = kernel.as_user("alice")
    ids = write(kernel)
    needs_local = r"^training an adapter needs a local model: set MEMOS_LLM=hf:"
    with pytest.raises(UserError, match=needs_local):
        alice.consolidate(NS, to="parametric")
    with pytest.raises(UserError, match=needs_local):
        alice.migrate(ids, to="parametric")
    assert server.requests == []
    assert [c.kind for c in alice.list(NS, statuses=list(Status))] == [Kind.plaintext] * len(ids)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved under the name the fake server serves."""
    pytest.importorskip("peft")
    from support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / MODEL)


def test_vllm_gets_only_the_newest_adapter(
    home: Path, clock: ManualClock, server: FakeOpenAIServer, model_dir: Path
) -> None:
    from memos.llm.hf import HFChat

    # trained on the local copy of the model, then served by the server running the same base model
    with MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, llm=HFChat(model_dir)) as local:
        alice = local.as_user("alice")
        write(local)
        older = alice.consolidate(NS, to="parametric", lora={"steps": 2}).cube
        clock.advance(minutes=1)
        newer = alice.consolidate(NS, to="parametric", lora={"steps": 2, "seed": 1}).cube
        assert local.llm is not None and local.llm.max_adapters > 1

    with MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, llm=make_vllm(server)) as kernel:
        llm = kernel.llm
        assert isinstance(llm, VLLMChat) and llm.max_adapters == 1
        usable = kernel.adapters.usable(NS)
        assert [c.id for c in usable] == [older.id, newer.id]
        name = f"memos-{newer.id}"
        assert newer.blob is not None

        served, names = kernel.adapters.serve(llm, usable)

        assert isinstance(served, VLLMChat) and served.adapter == name and names == [name]
        assert server.adapters == {name: str(kernel.blobs.path(newer.blob))}

        server.enqueue_chat("through the newest adapter")
        answer = kernel.as_user("alice").ask(NS, "What did Alice name her cat?")
        assert answer.text == "through the newest adapter" and answer.adapters == [name]
        assert chats(server)[-1]["model"] == name
        assert server.adapters == {name: str(kernel.blobs.path(newer.blob))}
