"""KV-block injection benchmark: time to first token with and without the activation tier, in one run.

A random Llama-style model (~110M parameters, built from a config: nothing is downloaded) answers a
short question after a memory block of 1k, 2k, 4k and 6k tokens. The block is built the way memos
builds it (`migrate(..., to="activation")` in a real home: prefill once, safetensors blob, model
fingerprint); then, per size, the same prompt is answered with the block prefilled every time
(baseline) and with the stored KV block injected, from memory and cold from disk. Medians of
--runs runs; greedy outputs are compared token for token.

    .venv/bin/python bench/kv.py [--sizes 1024,2048,4096,6144] [--runs 5] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, command_line, kernel_version, machine, publish, table

if TYPE_CHECKING:
    from memos.cube import MemCube
    from memos.llm.hf import HFChat
    from memos.tiers.kv import KVBlock

NAMES = ["Alice", "Bob", "Carol", "Dan", "Erin", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luca"]
PLACES = ["Lisbon", "Osaka", "Nairobi", "Quito", "Tallinn", "Hobart", "Recife", "Bergen", "Pune", "Tucson"]
THINGS = ["a grey cat", "a cello", "a red bicycle", "an old camera", "a sourdough starter", "a sailboat"]
VERBS = ["adopted", "bought", "sold", "borrowed", "repaired", "painted", "lost", "found"]
QUESTION = "What did Alice buy in Lisbon, and when?"


@dataclass
class Row:
    """One block size's measurements (seconds, bytes)."""

    target: int
    tokens: int
    prompt_tokens: int
    full: float
    injected: float
    cold: float
    build: float
    nbytes: int
    identical: bool
    #: index of the first greedy token that differs (None: all equal)
    first_difference: int | None
    #: largest difference of the first token's logits, injected vs prefilled
    max_logit_delta: float


def facts(count: int, seed: int = 0) -> list[str]:
    """Generated memories: who did what with which thing, where and when."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        who, other = rng.sample(NAMES, 2)
        out.append(
            f"On {rng.randint(1, 28)} {rng.choice(['March', 'May', 'July', 'October'])} {rng.randint(2019, 2024)}, "
            f"{who} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} with {other} (note {i})."
        )
    return out


#: model shapes: (hidden, intermediate, layers, attention heads, KV heads)
SHAPES = {"100m": (768, 2560, 12, 12, 12), "8b": (4096, 14336, 32, 32, 8)}


def build_model(folder: Path, device: str, dtype: str, shape: str) -> HFChat:
    """A random Llama-style model of `shape` with a byte-level BPE trained on the memories.

    100m (~100M parameters) is saved and loaded back through the real loading code; 8b (Llama-3-8B's
    shape, GPU only) is built in GPU memory directly, since writing 16 GB of random weights buys nothing.
    """
    import torch

    from memos.llm.hf import HFChat
    from memos.llm.testing import random_llama, random_tokenizer

    tokenizer = random_tokenizer(facts(3000, seed=99), vocab_size=4000)
    hidden, intermediate, layers, heads, kv_heads = SHAPES[shape]
    sizes = {"hidden": hidden, "intermediate": intermediate, "layers": layers, "heads": heads, "kv_heads": kv_heads}
    build = partial(random_llama, tokenizer, **sizes, max_positions=16384, initializer_range=0.2, seed=0)
    if shape == "8b":
        target = torch.bfloat16 if dtype == "auto" else getattr(torch, dtype)
        torch.set_default_dtype(target)
        with torch.device("cuda" if device == "auto" else device):
            model = build()
        torch.set_default_dtype(torch.float32)
        model.eval()
        return HFChat(model=model, tokenizer=tokenizer)
    model = build()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return HFChat(folder, device=device, dtype=dtype)


def median_time(fn: Callable[[], object], runs: int) -> float:
    """Median seconds of `runs` calls after one warm-up call (GPU work is waited for)."""
    import torch

    def once() -> float:
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(runs))


def answer_cold(llm: HFChat, messages: list[dict[str, str]], blob: Path, block_type: type) -> None:
    """One answer whose KV block is first read from its blob on disk."""
    llm.complete(messages, max_tokens=1, kv=block_type.load(blob, device=llm.device))


def block_in_home(llm: HFChat, texts: list[str], home: Path, target: int) -> tuple[list[MemCube], KVBlock, Path, float]:
    """Write the memories into a real home and build its block with `migrate(..., to="activation")`."""
    from memos import ManualClock, MemOS

    settings = {"activation_block_tokens": target * 2, "activation_budget_bytes": 64 * 1024**3}
    with MemOS.open(home, embedder="hash", clock=ManualClock(), llm=llm, auto_paging=False, **settings) as mos:
        alice = mos.as_user("alice")
        cubes = alice.write_many("alice/chat", [{"text": t, "level": "long"} for t in texts])
        start = time.perf_counter()
        [cube] = alice.migrate([c.id for c in cubes], to="activation")
        build = time.perf_counter() - start
        block = mos.activation.kv(cube)
        return cubes, block, mos.blobs.path(cube.blob or ""), build


def in_memory(texts: list[str]) -> list[MemCube]:
    """Plaintext cubes for these texts as a fresh home would write them (same clock, same owner)."""
    from datetime import UTC, datetime

    from memos.cube import ACL, Header, MemCube
    from memos.ids import new_id

    now = datetime(2024, 1, 1, tzinfo=UTC)
    header = Header(created_at=now, updated_at=now, acl=ACL(owner="alice"))
    return [MemCube(id=new_id(), namespace=("alice", "chat"), content=t, header=header) for t in texts]


def block_direct(llm: HFChat, texts: list[str], home: Path, target: int) -> tuple[list[MemCube], KVBlock, Path, float]:
    """The same block built on the model alone (prefill, then the safetensors file), without a home."""
    from memos.tiers.activation import system_text

    cubes = in_memory(texts)
    home.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    block = llm.build_block(llm.stable_prefix(system_text(cubes)))
    block.save(home / "block.safetensors")
    return cubes, block, home / "block.safetensors", time.perf_counter() - start


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, str]]:
    """Build the model and home, then measure every block size."""
    import torch

    from memos.tiers.activation import system_text
    from memos.tiers.kv import KVBlock

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="memos-kv-bench-"))
    llm = build_model(work / "model", args.device, args.dtype, args.shape)
    params = sum(p.numel() for p in llm.model.parameters())
    cfg = llm.model.config
    info = {
        "model": f"random Llama-style model, {params / 1e6:,.1f}M parameters, {cfg.num_hidden_layers} layers, "
        f"hidden {cfg.hidden_size}, {cfg.num_key_value_heads} KV heads, "
        f"{str(llm.model.dtype).replace('torch.', '')} on {llm.device}",
        "attention": str(getattr(llm.model.config, "_attn_implementation", "?")),
    }
    pool = facts(4000)
    rows: list[Row] = []
    for target in args.sizes:
        # add memories until the block (rendered exactly as memos renders it) reaches the target size
        step = 8
        count = step
        while len(llm.stable_prefix(system_text(in_memory(pool[:count])))) < target:
            count += step
        chosen = pool[:count]
        measure = block_direct if args.direct else block_in_home
        sources, block, blob, build = measure(llm, chosen, work / f"home-{target}", target)
        messages = [
            {"role": "system", "content": system_text(sources)},
            {"role": "user", "content": f"Question: {QUESTION}"},
        ]
        ids = llm.encode(messages)
        assert block.matches(ids), "the block is not the prompt's prefix"
        t_full = median_time(partial(llm.complete, messages, max_tokens=1), args.runs)
        t_inj = median_time(partial(llm.complete, messages, max_tokens=1, kv=block), args.runs)
        t_cold = median_time(partial(answer_cold, llm, messages, blob, KVBlock), args.runs)
        plain = llm.generate_ids(ids, max_tokens=args.check_tokens)
        cached = llm.generate_ids(ids, max_tokens=args.check_tokens, kv=block)
        same = plain == cached
        differ = next((i for i, (a, b) in enumerate(zip(plain, cached, strict=False)) if a != b), None)
        delta = float((llm.logits(ids) - llm.logits(ids, kv=block)).abs().max())
        rows.append(
            Row(target, block.num_tokens, len(ids), t_full, t_inj, t_cold, build, block.nbytes, same, differ, delta)
        )
        print(
            f"block {block.num_tokens} tokens: full {t_full * 1000:.1f} ms, injected {t_inj * 1000:.1f} ms, "
            f"cold {t_cold * 1000:.1f} ms, build {build * 1000:.0f} ms, identical {same}",
            flush=True,
        )
    return rows, info


def render(rows: Sequence[Row], info: dict[str, str], args: argparse.Namespace) -> str:
    """The results page (markdown)."""
    header = [
        "block tokens",
        "prompt tokens",
        "TTFT, block prefilled (ms)",
        "TTFT, KV injected (ms)",
        "change",
        "TTFT, KV loaded from disk (ms)",
        "change (cold)",
        "block build (ms)",
        "block size (MB)",
        f"first {args.check_tokens} greedy tokens identical",
        "max abs logit difference",
    ]
    body = []
    for r in rows:
        body.append(
            [
                f"{r.tokens:,}",
                f"{r.prompt_tokens:,}",
                f"{r.full * 1000:.1f}",
                f"{r.injected * 1000:.1f}",
                f"{(r.injected / r.full - 1) * 100:+.1f} %",
                f"{r.cold * 1000:.1f}",
                f"{(r.cold / r.full - 1) * 100:+.1f} %",
                f"{r.build * 1000:.0f}",
                f"{r.nbytes / 1e6:.1f}",
                "yes" if r.identical else f"**no** (from token {r.first_difference})",
                f"{r.max_logit_delta:.1e}",
            ]
        )
    mach = machine()
    lines = [
        f"# KV-block injection: time to first token ({args.device_label})",
        "",
        f"Model: {info['model']}; attention `{info['attention']}`. Question: {QUESTION!r} after a block of "
        "generated memories (the prompt is the block as the system message, then the question). TTFT = from the "
        f"call until the first token is chosen, median of {args.runs} runs after a warm-up. *KV injected*: the "
        "stored block already in memory (the activation tier keeps hot blocks resident within its byte budget); "
        "*loaded from disk*: the block read from its safetensors blob first. Block build = "
        + (
            "one prefill plus writing the safetensors file (`--direct`: the model alone, no memos home)."
            if args.direct
            else "the kernel's `migrate(..., to='activation')`: one prefill plus writing the blob and the catalog row."
        ),
        "",
        *table(header, body, "rrrrrrrrrlr"),
        "",
        "Anchor: the MemOS paper reports −94.2 % TTFT for a 6k-token context on Qwen3-8B (GPU).",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in mach.items()),
        "",
        f"Measured at {kernel_version()} with `{command_line()}`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1024,2048,4096,6144", help="block sizes in tokens, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--shape", default="100m", choices=sorted(SHAPES), help="model shape (8b: GPU only)")
    parser.add_argument("--dtype", default="auto", help="auto (float32 on CPU, bfloat16 on a GPU), float32, ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--check-tokens", type=int, default=32, help="greedy tokens compared with and without")
    parser.add_argument(
        "--direct", action="store_true", help="build blocks on the model alone, without a memos home (minimal installs)"
    )
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/kv-DEVICE.md)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write it to --out."""
    import torch

    args = parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device_label = f"CUDA, {torch.cuda.get_device_name(0)}" if cuda else "CPU"
    suffix = "" if args.shape == "100m" else f"-{args.shape}"
    args.out = args.out or ROOT / "bench" / "results" / f"kv-{'cuda' if cuda else 'cpu'}{suffix}.md"
    rows, info = run(args)
    page = render(rows, info, args)
    publish(page, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
