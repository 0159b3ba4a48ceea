"""The tier commands end to end: consolidate, migrate and ask, with a tiny local model as MEMOS_LLM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from support.cli import Cli
from support.tiny_model import FACTS, build_tiny_model

from memos import MemOS
from memos.cube import MemCube
from memos.llm.hf import HFChat
from memos.tiers.activation import system_text

NS = "alice/chat"
QUESTION = "What did Alice name her cat?"
NO_LLM = (
    "error: no LLM is configured: set MEMOS_LLM to hf:/path/to/model, vllm:http://HOST:PORT/v1#MODEL or openai:MODEL"
)
BAD_ID = "error: 'nope' is not a cube id (ids look like 01890a5d-ac96-774b-bcce-b302099a8057)"
TRAINED = re.compile(
    r"trained adapter (?P<id>[0-9a-f-]{36}) on 5 cubes \(5 steps\) in \d+\.\d s: "
    r"loss (?P<before>\d+\.\d\d) -> (?P<after>\d+\.\d\d) \(adapter (?P<kb>\d+) KB\)"
)

# peft calls a transformers method that transformers 5 deprecates; nothing here to act on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved as a local model directory, shared by the module's tests."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> HFChat:
    """The same model loaded in the test process, to compute what the commands should report."""
    return HFChat(model_dir)


@pytest.fixture
def env(model_dir: Path) -> dict[str, str]:
    """The environment that makes the tiny model the home's LLM."""
    return {"MEMOS_LLM": f"hf:{model_dir}"}


@pytest.fixture
def ids(cli: Cli) -> list[str]:
    """Five long-term memories of alice/chat, in the order written (written without loading the model)."""
    return [cli("add", NS, fact, "--level", "long").stdout.strip() for fact in FACTS]


def cubes_of(cli: Cli, ids: list[str]) -> list[MemCube]:
    """The cubes with these ids, read from the home directly."""
    with MemOS.open(cli.home, embedder="hash") as mos:
        alice = mos.as_user("alice")
        return [alice.get(i) for i in ids]


def show(cli: Cli, cube_id: str) -> dict[str, Any]:
    value = cli.json("show", cube_id)
    assert isinstance(value, dict)
    return value


def kind_counts(cli: Cli) -> dict[tuple[str, str, str], int]:
    """(kind, level, status) -> cubes, from `memos stats --json`."""
    stats = cli.json("stats")
    assert isinstance(stats, dict)
    return {(c["kind"], c["level"], c["status"]): c["count"] for c in stats["counts"]}


def test_an_activation_block_is_built_used_by_ask_and_migrated_back(
    cli: Cli, ids: list[str], env: dict[str, str], llm: HFChat
) -> None:
    tokens = len(llm.stable_prefix(system_text(cubes_of(cli, ids))))

    built = cli("consolidate", NS, "--to", "activation", env=env).stdout
    block_id = built.split()[3].rstrip(":")
    assert built == f"built activation block {block_id}: 5 cubes, {tokens} tokens\n"
    block = show(cli, block_id)
    assert (block["kind"], block["level"], block["sources"]) == ("activation", "long", ids)
    assert block["header"]["labels"]["backend"] == "kv" and block["header"]["tokens"] == tokens

    reply = json.loads(cli("ask", QUESTION, "--ns", NS, "--max-tokens", "4", "--json", env=env).stdout)
    assert reply["cached_tokens"] == tokens > 0
    assert reply["activation"] == {"id": block_id, "tokens": tokens}
    assert reply["usage"]["cached_tokens"] == tokens < reply["usage"]["prompt_tokens"]
    assert 1 <= reply["usage"]["completion_tokens"] <= 4
    assert reply["adapters"] == []
    assert reply["items"] == [{"id": i, "section": "activation"} for i in ids]
    assert (reply["namespace"], reply["question"], reply["budget_tokens"]) == (NS, QUESTION, 1500)

    explained = cli("ask", QUESTION, "--ns", NS, "--max-tokens", "4", "--explain", env=env).stdout
    usage = reply["usage"]
    # greedy decoding of the same prompt: the same answer as the JSON run
    assert explained.splitlines() == [
        reply["text"],
        f"-- activation block {block_id}: {tokens} tokens, {tokens} prompt tokens cached",
        "-- adapters: none",
        f"-- usage: {usage['prompt_tokens']} prompt tokens, {usage['completion_tokens']} completion tokens",
        f"-- working set: 5 items, {reply['tokens']}/1500 tokens",
        *[f"   activation {i} {fact}" for i, fact in zip(ids, FACTS, strict=True)],
    ]

    # back to plaintext needs no model: the block is retired and its sources are listed
    assert cli("migrate", block_id, "--to", "plaintext").stdout.splitlines() == [f"{i} plaintext long" for i in ids]
    assert show(cli, block_id)["header"]["lifecycle"]["status"] == "archived"
    assert kind_counts(cli) == {("activation", "long", "archived"): 1, ("plaintext", "long", "active"): 5}


def test_consolidate_trains_an_adapter_that_ask_then_uses(cli: Cli, ids: list[str], env: dict[str, str]) -> None:
    line = cli("consolidate", NS, "--to", "parametric", "--steps", "5", "--rank", "4", env=env).stdout
    match = TRAINED.fullmatch(line.rstrip("\n"))
    assert match is not None, line
    adapter_id = match["id"]
    adapter = show(cli, adapter_id)
    labels = adapter["header"]["labels"]
    assert (adapter["kind"], adapter["level"], adapter["sources"]) == ("parametric", "long", ids)
    assert labels["rank"] == "4" and labels["base"] == "tiny"
    # the line rounds the losses the labels keep to four places
    assert abs(float(match["before"]) - float(labels["loss_before"])) <= 0.006
    assert abs(float(match["after"]) - float(labels["loss_after"])) <= 0.006
    weights = cli.home / "blobs" / adapter["blob"] / "adapter_model.safetensors"
    assert match["kb"] == f"{weights.stat().st_size / 1024:.0f}"
    assert kind_counts(cli) == {("parametric", "long", "active"): 1, ("plaintext", "long", "active"): 5}

    reply = json.loads(cli("ask", QUESTION, "--ns", NS, "--max-tokens", "2", "--json", env=env).stdout)
    assert reply["adapters"] == [f"memos-{adapter_id}"]
    assert reply["activation"] is None and reply["cached_tokens"] == 0

    listed = cli("migrate", adapter_id, "--to", "plaintext", "--json").stdout
    assert [c["id"] for c in json.loads(listed)] == ids
    assert show(cli, adapter_id)["header"]["lifecycle"]["status"] == "archived"


def rejected(cli: Cli, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a bad command and check it wrote nothing; return its one error line."""
    before = cli.total()
    line = cli.user_error(*args, env=env)
    assert cli.total() == before
    return line


def test_bad_input_is_one_line_and_exit_code_2(cli: Cli, ids: list[str], env: dict[str, str]) -> None:
    assert rejected(cli, "consolidate", NS, "--to", "plaintext") == (
        "error: invalid --to 'plaintext': use parametric or activation"
    )
    assert rejected(cli, "migrate", ids[0], "--to", "kv") == (
        "error: invalid --to 'kv': use plaintext, activation or parametric"
    )
    assert rejected(cli, "consolidate", NS, "--to", "activation", "--level", "forever") == (
        "error: invalid --level 'forever': use long, mid, short or all"
    )
    assert rejected(cli, "consolidate", NS, "--to", "activation", "--steps", "5") == (
        "error: --steps, --rank and --learning-rate apply to --to parametric only"
    )
    assert rejected(cli, "consolidate", NS, "--to", "parametric", "--steps", "0") == (
        "error: --steps must be at least 1, got 0"
    )
    assert rejected(cli, "consolidate", NS, "--to", "parametric", "--learning-rate", "-1") == (
        "error: --learning-rate must be above 0, got -1"
    )
    assert rejected(cli, "migrate", ids[0], "nope", "--to", "activation") == BAD_ID
    assert rejected(cli, "migrate", ids[0], "--to", "plaintext") == "error: these cubes are plaintext already"
    assert rejected(cli, "ask", QUESTION, "--ns", NS) == NO_LLM
    # checked before the model loads, so nothing but the error reaches stderr
    assert rejected(cli, "ask", QUESTION, "--ns", "alice/bad ns", env=env).startswith(
        "error: invalid namespace segment 'bad ns'"
    )
    assert rejected(cli, "ask", "  ", "--ns", NS, env=env) == "error: the question is empty: give some words"
    assert rejected(cli, "ask", QUESTION, "--ns", NS, "--max-tokens", "0") == (
        "error: --max-tokens must be at least 1, got 0"
    )
    # without a model the kernel says which model each kind needs
    assert rejected(cli, "consolidate", NS, "--to", "activation").startswith(
        "error: activation blocks need a model that reuses KV caches: MEMOS_LLM=hf:"
    )
    assert rejected(cli, "consolidate", NS, "--to", "parametric").startswith(
        "error: training an adapter needs a local model: set MEMOS_LLM=hf:"
    )
    assert rejected(cli, "consolidate", "alice/empty", "--to", "parametric") == (
        "error: alice/empty has no active long-term plaintext cubes to consolidate; "
        "run `memos tick` to promote some, or pass --level all"
    )
