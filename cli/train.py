"""`memos train`: train memory policies — the admission policy (REINFORCE) and Mem-α (GRPO on a LoRA adapter).

Options are checked before data or a model is loaded. numpy, torch and the policies are imported inside
the commands, so `memos --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memos.errors import UserError

from .common import load_settings

if TYPE_CHECKING:
    from memos.policies.grpo import StepStats

app = typer.Typer(help="Train memory policies.", no_args_is_help=True)

#: Mem-α's weight of the compression term (β in r = r1 + r2 + β·r3 + γ·r4)
_MEM_ALPHA_BETA = 0.05


@app.command("admission")
def admission(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="A LoCoMo-format JSON file (first 6 conversations train).")],
    budget: Annotated[float, typer.Option("--budget", help="Share of turns the policy may store (0-1].")] = 0.25,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training conversations.")] = 30,
    samples: Annotated[int, typer.Option("--samples", help="Sampled admissions per conversation and pass.")] = 16,
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden units (0: a linear, logistic scorer).")] = 0,
    train_conversations: Annotated[
        int, typer.Option("--train-conversations", help="How many conversations, from the first, to train on.")
    ] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the sampling and the conversation order.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to save the model (default: <home>/policies/admission.json, used by `--policy admission`).",
        ),
    ] = None,
) -> None:
    """Train the admission policy with REINFORCE on evidence recall@10; print train and eval recall."""
    from memos.policies.admission.model import AdmissionModel, check_budget
    from memos.policies.admission.policy import HOME_MODEL
    from memos.policies.admission.train import (
        EpochStats,
        TrainConfig,
        evaluate,
        load_locomo,
        prepare,
        reinforce,
        split,
    )

    check_budget(budget)
    config = TrainConfig(budget=budget, epochs=epochs, samples=samples, hidden=hidden, seed=seed)
    config.check()
    if train_conversations < 1:
        raise UserError(f"--train-conversations must be at least 1, got {train_conversations}")
    target = out if out is not None else load_settings(ctx).home / HOME_MODEL
    train, held_out = split(load_locomo(data), train_conversations)
    train_eps, eval_eps = prepare(train), prepare(held_out)
    turns = sum(ep.num_turns for ep in train_eps)
    typer.echo(
        f"training on {len(train_eps)} conversations ({turns} turns), evaluating on {len(eval_eps)}; "
        f"budget {budget:.0%} of turns"
    )

    def progress(stats: EpochStats) -> None:
        if stats.epoch == 1 or stats.epoch % 5 == 0 or stats.epoch == epochs:
            typer.echo(
                f"epoch {stats.epoch}/{epochs}: sampled recall {stats.reward:.3f}, gate recall {stats.greedy:.3f}"
            )

    model, report = reinforce(train_eps, config, progress=progress)
    saved = model.save(target)
    heuristic = AdmissionModel.heuristic()
    rows = [
        ("train", train_eps, report.final),
        ("eval", eval_eps, evaluate(model.score, eval_eps, budget, window=model.window)),
    ]
    for name, eps, trained in rows:
        everything = evaluate(None, eps, budget)
        heur = evaluate(heuristic.score, eps, budget, window=model.window)
        typer.echo(
            f"{name} recall@10: trained {trained:.3f} ({trained / everything:.0%} of store-everything "
            f"{everything:.3f}), heuristic {heur:.3f}"
        )
    typer.echo(f"saved the admission model to {saved} ({report.seconds:.1f} s of training)")


@app.command("mem-alpha")
def mem_alpha(
    data: Annotated[Path, typer.Option("--data", help="Instances as JSONL: {chunks, questions, answers} per line.")],
    model: Annotated[Path, typer.Option("--model", help="A local causal LM directory (transformers format).")],
    steps: Annotated[int, typer.Option("--steps", help="GRPO steps.")] = 20,
    group_size: Annotated[int, typer.Option("--group-size", help="Completions sampled per prompt.")] = 8,
    prompts_per_step: Annotated[int, typer.Option("--prompts-per-step", help="Chunk prompts per step.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate on the LoRA parameters.")] = 1e-6,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Most tokens per completion.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the adapter, the prompt order and sampling.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Directory for the trained LoRA adapter.")] = Path(
        "mem-alpha-adapter"
    ),
) -> None:
    """GRPO on Mem-α's chunk prompts: reward = tool-call success + 0.05 x compression, per chunk."""
    from memos.policies.grpo import GRPOConfig

    config = GRPOConfig(
        group_size=group_size,
        lr=lr,
        max_new_tokens=max_new_tokens,
        steps=steps,
        prompts_per_step=prompts_per_step,
        add_special_tokens=False,
        seed=seed,
    )
    config.check()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory for the adapter")
    try:
        mem_alpha_pkg = importlib.import_module("memos.policies.mem_alpha")
    except ImportError:
        raise UserError(
            "the Mem-α policy (memos.policies.mem_alpha) is not installed; `memos train mem-alpha` needs it"
        ) from None
    from memos.llm.hf import _load
    from memos.policies.grpo import GRPOTrainer

    instances = mem_alpha_pkg.load_instances(data)
    if not instances:
        raise UserError(f"{data} holds no instances; write one JSON object per line")
    llm, tokenizer = _load(model, "auto", "auto")
    task = _MemAlphaTask(mem_alpha_pkg, tokenizer)
    with GRPOTrainer(llm, tokenizer, task.reward, config) as trainer:
        prompts = task.rollout_prompts(instances, trainer)
        typer.echo(f"{len(prompts)} chunk prompts from {len(instances)} instances; {steps} GRPO steps")
        for stats in (trainer.step(trainer.next_prompts(prompts)) for _ in range(steps)):
            typer.echo(_step_line(stats))
        trainer.save(out)
    typer.echo(f"saved the LoRA adapter to {out}")


class _MemAlphaTask:
    """Mem-α's chunk step as a GRPO task: one prompt per chunk, a completion scored by applying its tool calls.

    The prompts are fixed once, by stepping each instance's environment with one sampled completion of
    the untrained policy per chunk, so later chunks see the memory a real rollout builds. A completion
    for chunk i is then scored on a copy of the memory its prompt showed: tool-call success (successful
    calls / calls, 0 without a call, Mem-α's r2) plus 0.05 x compression (1 - tokens the completion added
    to memory / chunk tokens, clipped to [0, 1]; Mem-α's β·r3 for one chunk). The QA and type-fit terms
    need an answering LLM and a judge after the last chunk, so they are left out.
    """

    def __init__(self, pkg: Any, tokenizer: Any) -> None:
        self.pkg = pkg
        self.tokenizer = tokenizer
        # prompt text -> (the environment whose memory it showed, as a copy; chunk index; chunk tokens)
        self.states: dict[str, tuple[Any, int, int]] = {}

    def render(self, messages: list[Any]) -> str:
        """Chat messages as the prompt text the model continues."""
        plain = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}:\n{m['content']}\n\n" for m in plain) + "assistant:\n"

    def rollout_prompts(self, instances: list[Any], trainer: Any) -> list[str]:
        """Every chunk's prompt, along one sampled rollout per instance."""
        prompts: list[str] = []
        for instance in instances:
            env = self.pkg.MemAlphaEnv(instance, answerer=lambda question, memory: "")
            messages = env.reset()
            while messages is not None:
                prompt = self.render(messages)
                state = env.memory.load()
                chunk = instance.chunks[env.index]
                self.states[prompt] = (state, env.index, state.tokenizer.count(chunk))
                prompts.append(prompt)
                ids, mask = trainer.sample(trainer.encode(prompt), 1)
                reply = self.tokenizer.decode(ids[0, -mask.size(1) :][mask[0].bool()], skip_special_tokens=True)
                messages = env.step(self.cut(reply)).messages
        return prompts

    def cut(self, completion: str) -> str:
        """The completion up to Mem-α's result marker, where generation stops."""
        return completion.split(self.pkg.parse.STOP, 1)[0]

    def reward(self, prompt: str, completion: str) -> float:
        """Tool-call success + β x compression of this completion on its chunk."""
        state, index, chunk_tokens = self.states[prompt]
        memory = state.copy()
        before = memory.num_tokens()
        stats = self.pkg.run_calls(
            memory, self.pkg.parse_text_calls(self.cut(completion)), index=index, chunk_tokens=chunk_tokens
        )
        success = stats.num_ok / stats.num_calls if stats.num_calls else 0.0
        added = max(0, stats.memory_tokens - before)
        compression = min(1.0, max(0.0, 1.0 - added / chunk_tokens)) if chunk_tokens else 0.0
        return success + _MEM_ALPHA_BETA * compression


def _step_line(stats: StepStats) -> str:
    return (
        f"step {stats.step}: reward {stats.reward_mean:.3f} ± {stats.reward_std:.3f}, kl {stats.kl:.4f}, "
        f"clipped {stats.clip_fraction:.1%}, {stats.completion_tokens:.0f} tokens/completion, {stats.seconds:.1f} s"
    )


def register(root: typer.Typer) -> None:
    """Add `memos train ...` to the app."""
    root.add_typer(app, name="train")
