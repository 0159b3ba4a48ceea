"""LoRA consolidation benchmark: how much a parametric-tier adapter lowers the loss on the texts it learnt.

One conversation's turns (a LoCoMo-format file) or, without --data, ~200 generated fact sentences are
split 80/20, interleaved: every 5th text is held out, the rest are consolidated (trained on) by
`train_lora`. The base model is the baseline: the table shows the mean token loss (nats) on the
consolidated and on the held-out texts before and after, the adapter served through `AdapterHost` (so the
"after" figures come from the saved adapter as a request would see it), per LoRA rank.

The base model is a random Llama-style model of ~21M parameters built from a config, with a byte-level
BPE trained on the benchmark's own texts, unless --model names a local transformers model directory.
A random model knows no language, so its held-out loss falls only as far as the adapter learns the
texts' vocabulary and phrasing; the gap between the two "after" losses is what memorising the texts buys.

    .venv/bin/python bench/lora.py                                   # synthetic facts, ~2 min on 2 idle cores
    .venv/bin/python bench/lora.py --data PATH/TO/locomo10.json      # one LoCoMo conversation
    .venv/bin/python bench/lora.py --model PATH/TO/model --device cuda --ranks 8,64

Writes bench/results/lora.md (or --out) with the table, the machine and the command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from memos.tiers.parametric import AdapterHost, LoRASettings, TrainReport, mean_loss, train_lora

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import command_line, kernel_version, machine, publish, table  # noqa: E402

#: every HOLD_OUT-th text is held out: an interleaved 80/20 split
HOLD_OUT = 5

NAMES = [
    "Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Gustav", "Hana", "Ivan", "Jonas",
    "Keiko", "Lars", "Maya", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
]  # fmt: skip
CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Krakow", "Austin", "Hanoi", "Porto", "Dublin", "Quito", "Riga"]
JOBS = ["nurse", "welder", "pilot", "baker", "librarian", "architect", "chemist", "plumber", "judge", "florist"]
PETS = ["cats", "parrots", "goldfish", "dogs", "rabbits", "tortoises", "hamsters", "ferrets"]
HOBBIES = ["the cello", "chess", "rock climbing", "pottery", "salsa", "kite surfing", "birdwatching", "origami"]
FOODS = ["mango", "lentil soup", "sushi", "goat cheese", "plantain", "dumplings", "paprika", "rye bread"]
RELATIVES = ["sister", "brother", "daughter", "son", "cousin", "uncle", "aunt", "grandmother"]
TEMPLATES = [
    "{name} lives in {city} and works as a {job}.",
    "{name} has {n} {pet} and feeds them at {hour} every morning.",
    "{name}'s {relative} was born in {city} in {year}.",
    "{name} has played {hobby} since {year} and practises {n} times a week.",
    "{name} is allergic to {food} and keeps {n} spare pills in a blue tin.",
    "{name} paid {money} dollars for a flat in {city} in {year}.",
    "On {day} {month} {year} {name} ran {n} kilometres along the river in {city}.",
    "{name}'s favourite food is {food}, cooked by a {job} friend from {city}.",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]


@dataclass
class Row:
    """One rank's measurements."""

    rank: int
    report: TrainReport
    held_before: float
    held_after: float
    served_after: float  # consolidated loss through AdapterHost; equals report.loss_after when serving is exact


def synthetic_facts(count: int = 200, seed: int = 0) -> list[str]:
    """`count` distinct fact sentences about people, places and numbers, the same for a given seed."""
    rng = random.Random(seed)
    facts: list[str] = []
    seen: set[str] = set()
    while len(facts) < count:
        fact = rng.choice(TEMPLATES).format(
            name=rng.choice(NAMES),
            city=rng.choice(CITIES),
            job=rng.choice(JOBS),
            pet=rng.choice(PETS),
            hobby=rng.choice(HOBBIES),
            food=rng.choice(FOODS),
            relative=rng.choice(RELATIVES),
            n=rng.randint(2, 19),
            hour=f"{rng.randint(5, 9)}:{rng.choice(['00', '15', '30', '45'])}",
            year=rng.randint(1961, 2023),
            money=f"{rng.randint(40, 900) * 1000:,}",
            day=rng.randint(1, 28),
            month=rng.choice(MONTHS),
        )
        if fact not in seen:
            seen.add(fact)
            facts.append(fact)
    return facts


def locomo_turns(path: Path, conversation: int) -> tuple[str, list[str]]:
    """The sample id and the turns ('speaker: text', session order) of one conversation of a LoCoMo-format file."""
    doc = json.loads(path.read_text())
    samples = doc if isinstance(doc, list) else [doc]
    if not 0 <= conversation < len(samples):
        raise SystemExit(f"--conversation {conversation}: the file has {len(samples)} conversations (0-based)")
    sample = samples[conversation]
    sessions = sample.get("conversation", {})
    keys = sorted((k for k in sessions if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1]))
    turns = [
        f"{turn.get('speaker', '?')}: {turn['text'].strip()}"
        for key in keys
        for turn in sessions[key]
        if isinstance(turn, dict) and str(turn.get("text", "")).strip()
    ]
    return str(sample.get("sample_id", conversation)), turns


def split(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(consolidated, held out): every HOLD_OUT-th text is held out."""
    kept = [t for i, t in enumerate(texts) if i % HOLD_OUT != HOLD_OUT - 1]
    held = [t for i, t in enumerate(texts) if i % HOLD_OUT == HOLD_OUT - 1]
    return kept, held


def random_model(texts: Sequence[str], device: str, seed: int) -> tuple[Any, Any, str]:
    """A random ~21M-parameter Llama and a byte-level BPE trained on `texts`; and a line describing them."""
    from memos.llm.testing import random_llama, random_tokenizer

    # the vocabulary is what the texts allow (up to 8192): no rows for tokens the data never produces
    tokenizer = random_tokenizer(texts, vocab_size=8192)
    model = random_llama(tokenizer, hidden=512, intermediate=1536, layers=6, heads=8, max_positions=2048, seed=seed).to(
        device
    )
    params = sum(p.numel() for p in model.parameters())
    about = (
        f"random Llama ({params / 1e6:.1f}M parameters: 6 layers, hidden 512, 8 heads, MLP 1536, tied embeddings, "
        f"fp32), byte-level BPE trained on the benchmark texts ({len(tokenizer)} tokens)"
    )
    return model, tokenizer, about


def local_model(path: Path, device: str) -> tuple[Any, Any, str]:
    """A transformers causal LM and its tokenizer from a local directory; and a line describing it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    params = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return model, tokenizer, f"`{path.name}` ({type(model).__name__}, {params / 1e6:.1f}M parameters, {dtype})"


def pick_device(wanted: str) -> str:
    """cpu or cuda; auto takes cuda when there is one."""
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def device_name(device: str) -> str:
    """The device as a reader would name it."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


def run(args: argparse.Namespace, kept: list[str], held: list[str], model: Any, tokenizer: Any) -> list[Row]:
    """Train one adapter per rank on `kept`, serve it, measure the loss on `kept` and `held`."""
    rows = []
    held_before = mean_loss(model, tokenizer, held, max_tokens=args.max_tokens)
    for rank in args.ranks:
        # alpha stays at its default: alpha = 2 x rank with this learning rate diverged at rank 32
        settings = LoRASettings(r=rank, steps=args.steps, max_tokens=args.max_tokens, seed=args.seed)
        with tempfile.TemporaryDirectory(prefix="memos-lora-") as tmp:
            report = train_lora(model, tokenizer, kept, settings, Path(tmp) / "adapter")
            host = AdapterHost(model)
            host.load("bench", Path(tmp) / "adapter")
            with host.active(["bench"]) as served:
                served_after = mean_loss(served, tokenizer, kept, max_tokens=args.max_tokens)
                held_after = mean_loss(served, tokenizer, held, max_tokens=args.max_tokens)
            host.unload("bench")
        rows.append(Row(rank, report, held_before, held_after, served_after))
        print(
            f"rank {rank}: consolidated {report.loss_before:.3f} -> {report.loss_after:.3f}, "
            f"held out {held_before:.3f} -> {held_after:.3f}, {report.seconds:.1f} s",
            flush=True,
        )
    return rows


def render(args: argparse.Namespace, rows: list[Row], data: str, about: str, device: str, seconds: float) -> str:
    """The results page (markdown)."""
    first = rows[0].report
    defaults = LoRASettings()
    lines = [
        "# LoRA consolidation benchmark",
        "",
        f"- date: {args.started:%Y-%m-%d %H:%M} UTC, whole run {seconds:.0f} s (model build included)",
        f"- load average (1 min) before the run: {args.load[0]:.1f} ({len(os.sched_getaffinity(0))} usable cores; "
        "other work running beside the benchmark makes its times longer)",
        f"- data: {data}",
        f"- model: {about}",
        f"- device: {device}",
        f"- training: AdamW, learning rate {defaults.learning_rate:g} decaying linearly to a tenth, batch "
        f"{defaults.batch_size} windows of at most {args.max_tokens} tokens, alpha {defaults.alpha:g}, "
        f"LoRA on {', '.join(defaults.target_modules)}, seed {args.seed}",
        "",
        "Mean token loss in nats (lower is better; the base model is the baseline, the adapter is served by "
        "`AdapterHost` from the saved directory):",
        "",
    ]
    header = [
        "rank",
        "texts consolidated / held out",
        "tokens consolidated",
        "consolidated: before → after",
        "held out: before → after",
        "gap after",
        "train s",
        "steps",
        "trainable params",
        "adapter",
        "device",
    ]
    body = []
    for row in rows:
        r = row.report
        body.append(
            [
                str(row.rank),
                f"{r.num_texts} / {args.num_held}",
                f"{r.num_tokens:,}",
                f"{r.loss_before:.3f} → {r.loss_after:.3f} ({r.loss_after / r.loss_before:.2f}x)",
                f"{row.held_before:.3f} → {row.held_after:.3f} ({row.held_after / row.held_before:.2f}x)",
                f"{row.held_after - r.loss_after:.3f}",
                f"{r.seconds:.1f}",
                str(r.steps),
                f"{r.trainable_params:,}",
                f"{r.adapter_bytes / 1024:,.0f} KiB",
                device,
            ]
        )
    lines += table(header, body, "rrrrrrrrrrl")
    drift = max(abs(row.served_after - row.report.loss_after) for row in rows)
    # each rank measures its 'before' loss afresh, so equal values show training left the base model as it was
    befores = {row.report.loss_before for row in rows}
    untouched = "untouched (every rank measured the same 'before' loss)" if len(befores) == 1 else "CHANGED"
    lines += [
        "",
        f"- {first.num_windows} training windows from {first.num_texts} texts; 'train s' is the optimisation loop "
        "alone (loss measurements and saving excluded)",
        f"- served vs trained: the consolidated loss through `AdapterHost` differs from the one `train_lora` "
        f"measured on its own model by at most {drift:.1e}",
        "- 'gap after' = held-out loss minus consolidated loss with the adapter: what it memorised beyond what "
        "it learnt about texts of this kind",
        f"- the base model after each rank: {untouched}",
        "",
        "## Machine",
        "",
    ]
    facts = machine()
    facts["libraries"] += f", peft {importlib.metadata.version('peft')}"
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    command = command_line()
    # data and model live wherever the user keeps them: name them, not their folders
    for path in (args.data, args.model):
        if path is not None:
            command = command.replace(str(path), f"PATH/TO/{path.name}")
    lines += [f"- measured: {kernel_version()}", "", "## Command", "", f"    {command}", ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a LoCoMo-format JSON file (default: ~200 generated facts)")
    parser.add_argument("--conversation", type=int, default=0, help="which conversation of --data (0-based)")
    parser.add_argument("--model", type=Path, help="a local transformers model directory (default: a random Llama)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per adapter")
    parser.add_argument("--ranks", default="8,32", help="LoRA ranks to compare, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=256, help="training window length in tokens")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lora.md")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if args.model is not None and not args.model.is_dir():
        parser.error(f"--model {args.model}: no such directory")
    try:
        args.ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--ranks {args.ranks}: give whole numbers separated by commas")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write it to --out."""
    args = parse_args(argv)
    args.started = datetime.now(UTC)
    args.load = os.getloadavg()
    clock = time.perf_counter()
    if args.data is not None:
        sample_id, texts = locomo_turns(args.data, args.conversation)
        data = f"`{args.data.name}`, conversation {sample_id} ({len(texts)} turns, 'speaker: text')"
    else:
        texts = synthetic_facts()
        data = f"{len(texts)} generated fact sentences (names, places, numbers; seed 0)"
    kept, held = split(texts)
    if not held:
        raise SystemExit(f"only {len(texts)} texts: need at least {HOLD_OUT} to hold one out")
    args.num_held = len(held)
    data += f", every {HOLD_OUT}th held out"
    device = pick_device(args.device)
    if args.model is not None:
        model, tokenizer, about = local_model(args.model, device)
    else:
        model, tokenizer, about = random_model(texts, device, args.seed)
    print(f"{about}; {len(kept)} texts to consolidate, {len(held)} held out, device {device}", flush=True)
    rows = run(args, kept, held, model, tokenizer)
    page = render(args, rows, data, about, device_name(device), time.perf_counter() - clock)
    publish(page, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
