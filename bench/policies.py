"""Memory-policy benchmarks: learned admission under a storage budget on LoCoMo, and MEM1's peak tokens.

Admission. The first 6 conversations of a LoCoMo-format file train the admission scorer (REINFORCE on
evidence recall@10, `memos.policies.admission.train`); the remaining ones evaluate it. Each policy
decides, turn by turn, which turns to store under a budget of 25 % or 50 % of the turns (the same
`BudgetGate` for every scorer: at every point at most that share stored). Then every question of the
conversation is asked of one BM25 index over the stored turns only (the same retriever for all), and
turn-level evidence recall@10 is measured. Compared in one run on the same questions:

* store everything (the reference: recall with no budget);
* the trained policy (one training run per budget and seed; mean and spread over seeds);
* the heuristic (a fixed hand-written score of the same features: novelty, entity, number and date
  counts, length, minus a question mark);
* random admission (random scores through the same gate; mean over seeds);
* for scale, an oracle that admits the turns some question needs (no policy can see this).

MEM1. When `bench/mem1_peak.py` is present, its section (peak tokens of the constant-memory loop
against the full context) is appended.

    .venv/bin/python bench/policies.py --data PATH/TO/locomo_dev.json      # ~1 min on 2 cores

Writes bench/results/policies.md (or --out) with the tables, the machine, the command and the commit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from memos.policies.admission.model import AdmissionModel, gate
from memos.policies.admission.train import (
    Episode,
    K,
    TrainConfig,
    evaluate,
    load_locomo,
    prepare,
    random_recall,
    recall_upper_bound,
    reinforce,
    split,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import command_line, kernel_version, machine, publish, table  # noqa: E402

BUDGETS = (0.25, 0.5)
#: the goal at the 25 % budget: the trained policy keeps this share of store-everything's recall ...
GOAL_SHARE = 0.85
#: ... and beats the heuristic by this many recall points
GOAL_MARGIN = 5.0


@dataclass
class BudgetResult:
    """Everything measured at one budget."""

    budget: float
    everything: float
    trained: list[float] = field(default_factory=list)  # eval recall per training seed
    trained_train: list[float] = field(default_factory=list)  # train recall per seed
    train_seconds: list[float] = field(default_factory=list)
    stored_share: list[float] = field(default_factory=list)  # share of eval turns the trained policy stored
    heuristic: float = 0.0
    heuristic_share: float = 0.0
    random: tuple[float, float] = (0.0, 0.0)
    oracle: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)  # seed 0's linear weights


def stored_share(model: AdmissionModel, episodes: Sequence[Episode], budget: float) -> float:
    """Share of all turns of the episodes the gate stores with this model's scores."""
    stored = sum(int(gate(model.score(ep.features), budget, model.window).sum()) for ep in episodes)
    return stored / sum(ep.num_turns for ep in episodes)


def run(args: argparse.Namespace) -> tuple[list[BudgetResult], dict[str, int | float]]:
    """Train and evaluate every policy at every budget."""
    started = time.perf_counter()
    train, held_out = split(load_locomo(args.data), args.train_conversations)
    train_eps, eval_eps = prepare(train), prepare(held_out)
    info: dict[str, int | float] = {
        "train_conversations": len(train_eps),
        "train_turns": sum(ep.num_turns for ep in train_eps),
        "eval_conversations": len(eval_eps),
        "eval_turns": sum(ep.num_turns for ep in eval_eps),
        "eval_questions": sum(len(ep.evidence) for ep in eval_eps),
        "prepare_seconds": time.perf_counter() - started,
    }
    heuristic = AdmissionModel.heuristic()
    results = []
    for budget in args.budgets:
        result = BudgetResult(budget=budget, everything=evaluate(None, eval_eps, budget))
        for seed in range(args.seeds):
            config = TrainConfig(budget=budget, epochs=args.epochs, samples=args.samples, seed=seed)
            model, report = reinforce(train_eps, config)
            result.trained.append(evaluate(model.score, eval_eps, budget, window=model.window))
            result.trained_train.append(report.final)
            result.train_seconds.append(report.seconds)
            result.stored_share.append(stored_share(model, eval_eps, budget))
            if seed == 0:
                result.weights = model.weights()
            print(f"budget {budget:.0%} seed {seed}: eval recall {result.trained[-1]:.3f}", file=sys.stderr)
        window = TrainConfig().window
        result.heuristic = evaluate(heuristic.score, eval_eps, budget, window=window)
        result.heuristic_share = stored_share(heuristic, eval_eps, budget)
        result.random = random_recall(eval_eps, budget, seeds=range(args.random_seeds), window=window)
        result.oracle = recall_upper_bound(eval_eps, budget, window)
        results.append(result)
    info["seconds"] = time.perf_counter() - started
    return results, info


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render(results: Sequence[BudgetResult], info: dict[str, int | float], args: argparse.Namespace) -> str:
    """The results page (markdown)."""
    lines = [
        "# Memory-policy benchmarks",
        "",
        "## Learned admission under a storage budget (LoCoMo)",
        "",
        f"Data: `{args.data.name}`; training on the first {info['train_conversations']} conversations "
        f"({info['train_turns']} turns), evaluation on the other {info['eval_conversations']} "
        f"({info['eval_turns']} turns, {info['eval_questions']} questions, categories 1-5). Every policy decides "
        "turn by turn through the same budget gate (at every point at most the budget's share of the turns seen "
        f"is stored); every question then searches one BM25 index over the stored turns only. Turn-level evidence "
        f"recall@{K} in percent (a question without evidence counts as recalled); share = recall as a share of "
        "store-everything's. Trained: REINFORCE, "
        f"{args.epochs} passes x {args.samples} sampled admissions per conversation, mean ± spread (population std) "
        f"over {args.seeds} training seeds; random: mean ± spread over {args.random_seeds} seeds.",
        "",
    ]
    header = ["policy", "budget", "eval turns stored", f"R@{K} (eval)", "share of store-everything", f"R@{K} (train)"]
    rows = []
    for r in results:
        budget = f"{r.budget:.0%}"
        trained = statistics.mean(r.trained)
        spread = statistics.pstdev(r.trained)
        rows += [
            ["store everything", budget, "100 %", _pct(r.everything), "100 %", ""],
            [
                "trained (REINFORCE)",
                budget,
                f"{100 * statistics.mean(r.stored_share):.1f} %",
                f"{_pct(trained)} ± {_pct(spread)}",
                f"{trained / r.everything:.0%}",
                _pct(statistics.mean(r.trained_train)),
            ],
            [
                "heuristic",
                budget,
                f"{100 * r.heuristic_share:.1f} %",
                _pct(r.heuristic),
                f"{r.heuristic / r.everything:.0%}",
                "",
            ],
            [
                "random",
                budget,
                f"{100 * r.budget:.1f} %",
                f"{_pct(r.random[0])} ± {_pct(r.random[1])}",
                f"{r.random[0] / r.everything:.0%}",
                "",
            ],
            [
                "oracle (sees the questions)",
                budget,
                f"{100 * r.budget:.1f} %",
                _pct(r.oracle),
                f"{r.oracle / r.everything:.0%}",
                "",
            ],
        ]
    lines += table(header, rows, "llrrrr")
    lines += [
        "",
        "Trained policy per seed (eval R@10): "
        + "; ".join(f"{r.budget:.0%}: " + ", ".join(_pct(v) for v in r.trained) for r in results)
        + ".",
    ]
    quarter = next((r for r in results if abs(r.budget - 0.25) < 1e-9), None)
    if quarter is not None:
        trained = statistics.mean(quarter.trained)
        share = trained / quarter.everything
        margin = 100 * (trained - quarter.heuristic)
        met = share >= GOAL_SHARE and margin >= GOAL_MARGIN
        lines += [
            "",
            f"**Goal at the 25 % budget: the trained policy keeps >= {GOAL_SHARE:.0%} of store-everything's recall "
            f"and beats the heuristic by >= {GOAL_MARGIN:.0f} points: {'met' if met else 'NOT met'}** "
            f"(it keeps {share:.1%}: {'met' if share >= GOAL_SHARE else 'not met'}; it beats the heuristic by "
            f"{margin:+.1f} points: {'met' if margin >= GOAL_MARGIN else 'not met'}).",
        ]
    weights = results[0].weights if results else {}
    if weights:
        lines += [
            "",
            f"What the trained scorer learned at {results[0].budget:.0%} (seed 0; weight per raw feature unit): "
            + ", ".join(f"{name} {w:+.2f}" for name, w in sorted(weights.items(), key=lambda kv: -abs(kv[1])))
            + ".",
        ]
    seconds = [s for r in results for s in r.train_seconds]
    lines += [
        "",
        f"- training: {statistics.mean(seconds):.1f} s per run on average ({len(seconds)} runs); features and BM25 "
        f"statistics for all conversations computed once in {info['prepare_seconds']:.1f} s; whole admission "
        f"benchmark {info['seconds']:.0f} s",
        "- the gate admits a turn when the budget has room at this point and its score ranks in the top share of "
        "the last 100 scores (`memos.policies.admission.model.BudgetGate`); training samples the best turns of each "
        "100-turn block instead (Plackett-Luce), so the stored share is at most the budget, slightly under it "
        "where a stretch of low-scoring turns leaves credit unused",
        "- 2 evaluation conversations are few: recall moves by 1-3 points from seed to seed, see the spread",
        "",
    ]
    mem1 = _mem1_section(args)
    if mem1:
        lines += [mem1.strip(), ""]
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    command = command_line().replace(str(args.data), f"PATH/TO/{args.data.name}")
    lines += [f"- measured: {kernel_version()}", "", "## Command", "", f"    {command}", ""]
    return "\n".join(lines)


def _mem1_section(args: argparse.Namespace) -> str:
    """MEM1's peak-token section from bench/mem1_peak.py, or '' when that benchmark is not there."""
    if args.skip_mem1:
        return ""
    try:
        from bench import mem1_peak
    except ImportError:
        return ""
    return mem1_peak.run()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a LoCoMo-format JSON file")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="storage budgets (0-1]")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per budget")
    parser.add_argument("--random-seeds", type=int, default=5, help="seeds of random admission")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="REINFORCE passes")
    parser.add_argument("--samples", type=int, default=TrainConfig().samples, help="samples per conversation")
    parser.add_argument("--train-conversations", type=int, default=6, help="conversations to train on")
    parser.add_argument("--skip-mem1", action="store_true", help="leave out the MEM1 section")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policies.md")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if args.seeds < 1 or args.random_seeds < 1:
        parser.error("--seeds and --random-seeds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the page and write it to --out."""
    args = parse_args(argv)
    results, info = run(args)
    page = render(results, info, args)
    publish(page, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
