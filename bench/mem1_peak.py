"""MEM1 peak tokens: the constant-memory loop against the full-context loop, from 2 to 16 objectives.

Each episode is a synthetic multi-objective QA task: k questions "What is the ATTRIBUTE of ENTITY?",
each answered by one sentence inside a 100-word passage (the length of the Wikipedia passages MEM1
retrieves from), among two other passages about the same entity and unrelated filler passages; the
search tool is the environment's BM25, top 3. A scripted model (a FunctionLLM) plays every turn: it
reads the latest information block, adds the answer it finds to its internal state, and searches the
next unanswered question; once all are found it answers "a1; a2; ...". Its internal state holds only
the answers found so far ("found: a1; a2"), so it grows by one short answer per objective: that growth
is real and is in the numbers below.

The same episodes run twice through `MEM1Agent`: with MEM1's constant memory (each prompt holds the
task and the previous turn) and with the full context (each prompt holds the whole history). Tokens
are counted with cl100k_base as MEM1's `inference/eval.py` counts them (`memos.policies.mem1.meter`).

    .venv/bin/python bench/mem1_peak.py            # prints the section (a few seconds on one core)
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM
from memos.policies.mem1 import Document, MEM1Agent, MultiObjectiveQA, measure, render_answers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import command_line, kernel_version, machine, table  # noqa: E402

OBJECTIVES = (2, 4, 8, 16)
#: words per passage: MEM1's retrieval corpus (wiki-18) is cut into 100-word passages
PASSAGE_WORDS = 100
#: unrelated passages added to every episode's corpus
NUM_FILLER_PASSAGES = 40
GOAL_RATIO = 1.2
ATTRIBUTES = ("capital", "founder", "river", "mascot", "currency", "anthem", "harbour", "festival")
#: the words filler text is drawn from
_FILLER_TEXT = (
    "the of and to in a is was for on as with by at from that which it its an were are this be has had "
    "have after also first new two their they one but not been more other city region century people "
    "during time year years state part later many most known between under area called north south east "
    "west near built early since several local small large main old long high use used well each both "
    "into over about through while when where some such because school church market road bridge valley "
    "hill station museum library island coast village county district population census record history "
    "family"
)
_FILLER = _FILLER_TEXT.split()
_SYLLABLES = ("ka", "lo", "mi", "ren", "sa", "tu", "vor", "zel", "qua", "bri", "do", "fen", "gar", "hul", "ny", "pex")


@dataclass
class Result:
    """Per number of objectives: turns, score and token figures of both loops, averaged over episodes."""

    objectives: int
    episodes: int
    turns: float
    correct: float
    mem1_peak: float
    full_peak: float
    mem1_peak_with_task: float
    full_peak_with_task: float
    mem1_dependency: float
    full_dependency: float
    state_tokens: float


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()
        if word not in used:
            used.add(word)
            return word


def _passage(rng: random.Random, sentences: Sequence[str]) -> str:
    """About PASSAGE_WORDS words: filler text with the given sentences placed at random points."""
    words = [rng.choice(_FILLER) for _ in range(PASSAGE_WORDS - sum(len(s.split()) for s in sentences))]
    for sentence in sentences:
        words.insert(rng.randrange(len(words) + 1), sentence)
    return " ".join(words)


def synthetic_env(objectives: int, seed: int) -> MultiObjectiveQA:
    """k questions, each answered in one of three passages about its entity, among filler passages."""
    rng = random.Random(seed)
    used: set[str] = set()
    questions, answers, documents = [], [], []
    for i in range(objectives):
        entity = _name(rng, used)
        asked, *others = rng.sample(ATTRIBUTES, 3)
        value = _name(rng, used)
        questions.append(f"What is the {asked} of {entity}?")
        answers.append(value)
        documents.append(Document(entity, _passage(rng, [f"The {asked} of {entity} is {value}."]), f"q{i}-fact"))
        for n, other in enumerate(others):
            sentence = f"The {other} of {entity} is {_name(rng, used)}."
            documents.append(Document(f"{entity} ({other})", _passage(rng, [sentence]), f"q{i}-other{n}"))
    for n in range(NUM_FILLER_PASSAGES):
        documents.append(Document(_name(rng, used), _passage(rng, []), f"filler{n}"))
    rng.shuffle(documents)
    return MultiObjectiveQA(documents, questions, answers)


_QUESTION = re.compile(r"^Question (\d+): What is the (\w+) of (\w+)\?$", re.MULTILINE)


def _last(tag: str, text: str) -> str | None:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found[-1] if found else None


def scripted_policy(messages: list[Message], tools: list[ToolSchema]) -> str:
    """One MEM1 turn: note the answer in the latest information, then search the next question or answer all."""
    prompt = messages[-1].content
    questions = [(attribute, entity) for _, attribute, entity in _QUESTION.findall(prompt)]
    found: list[str] = []
    info = _last("information", prompt)
    if info is not None:
        # the state kept so far, then the answer to the question just searched (questions go in order)
        state = _last("think", prompt) or ""
        found = [a.strip() for a in state.removeprefix("found:").split(";") if a.strip()]
        attribute, entity = questions[len(found)]
        match = re.search(rf"The {attribute} of {entity} is (\w+)\.", info)
        found.append(match.group(1) if match else "unknown")
    state = f"found: {'; '.join(found)}".strip()
    if len(found) == len(questions):
        return f"<think>{state}</think>\n<answer>{render_answers(found)}</answer>"
    attribute, entity = questions[len(found)]
    return f"<think>{state}</think>\n<search>What is the {attribute} of {entity}?</search>"


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def measure_objectives(objectives: int, episodes: int = 5) -> Result:
    """Run `episodes` synthetic episodes with k objectives through both loops and average their figures."""
    rows: dict[str, list[float]] = {}
    for seed in range(episodes):
        for context in ("constant", "full"):
            agent = MEM1Agent(
                FunctionLLM(scripted_policy), synthetic_env(objectives, seed), max_turns=objectives + 1, context=context
            )
            episode = agent.run()
            report = measure(episode)
            with_task = max(t.prompt_tokens + t.output_tokens for t in episode.turns)
            for key, value in (
                (f"{context}:peak", report.peak),
                (f"{context}:dependency", report.dependency),
                (f"{context}:with_task", with_task),
                (f"{context}:correct", episode.reward),
                (f"{context}:turns", len(episode.turns)),
            ):
                rows.setdefault(key, []).append(float(value))
            if context == "constant":
                last = episode.turns[-1]
                rows.setdefault("state", []).append(float(agent.tokenizer.count(last.state)))
    if rows["constant:correct"] != rows["full:correct"]:
        raise RuntimeError("the scripted policy scored differently under the two loops: the comparison is void")
    return Result(
        objectives=objectives,
        episodes=episodes,
        turns=_mean(rows["constant:turns"]),
        correct=_mean(rows["constant:correct"]),
        mem1_peak=_mean(rows["constant:peak"]),
        full_peak=_mean(rows["full:peak"]),
        mem1_peak_with_task=_mean(rows["constant:with_task"]),
        full_peak_with_task=_mean(rows["full:with_task"]),
        mem1_dependency=_mean(rows["constant:dependency"]),
        full_dependency=_mean(rows["full:dependency"]),
        state_tokens=_mean(rows["state"]),
    )


def run(objectives: Sequence[int] = OBJECTIVES, episodes: int = 5) -> str:
    """The MEM1 section of the policies benchmark (Markdown): peak tokens of both loops at each objective count."""
    results = [measure_objectives(k, episodes) for k in objectives]
    rows = [
        [
            str(r.objectives),
            f"{r.turns:.0f}",
            f"{r.correct:.1f}/{r.objectives}",
            f"{r.state_tokens:.0f}",
            f"{r.mem1_peak:.0f}",
            f"{r.full_peak:.0f}",
            f"{r.full_peak / r.mem1_peak:.2f}",
            f"{r.mem1_peak_with_task:.0f}",
            f"{r.full_peak_with_task:.0f}",
            f"{r.full_dependency / r.mem1_dependency:.2f}",
        ]
        for r in results
    ]
    header = [
        "objectives",
        "turns",
        "EM",
        "final state tokens",
        "MEM1 peak",
        "full-context peak",
        "full / MEM1",
        "MEM1 peak + task",
        "full peak + task",
        "dependency full / MEM1",
    ]
    first, last = results[0], results[-1]
    growth = last.mem1_peak / first.mem1_peak
    met = "met" if growth <= GOAL_RATIO else "not met"
    lines = [
        "## MEM1: peak tokens per turn, constant memory vs full context",
        "",
        f"Synthetic multi-objective QA, {episodes} episodes per row (means), {PASSAGE_WORDS}-word passages, "
        f"BM25 top 3, a scripted model that searches one question per turn and keeps only the answers found "
        f"(`found: a1; a2; ...`) as its internal state; max turns = objectives + 1.",
        "",
    ]
    lines += table(header, rows, "r" * len(header))
    lines += [
        "",
        "- peak: the largest turn, in cl100k tokens, without the task prompt (as MEM1's eval.py counts): MEM1 "
        "holds the previous state, action and information plus its new state and action; the full context "
        "holds every earlier turn plus the new one",
        "- + task: the same with the task prompt (instructions and the k questions, which grow with k) — "
        "what the model actually reads at its largest turn",
        "- dependency: Σ over generated segments of length × (context before it + length / 2)",
        "- MEM1's largest turn is its answering turn, which holds the answers found three times: in the "
        "previous state, the new state and the answer action (final state tokens column); the information "
        "block is the same size at every k, so the growth is the answers themselves",
        "",
        f"**Goal: MEM1's peak stays within {GOAL_RATIO}× from {first.objectives} to {last.objectives} objectives: "
        f"{met}** (peak {last.mem1_peak:.0f} / {first.mem1_peak:.0f} = {growth:.2f}×; the full context grows "
        f"{last.full_peak / first.full_peak:.2f}×).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the section, with the machine and the command."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objectives", type=int, nargs="+", default=list(OBJECTIVES))
    parser.add_argument("--episodes", type=int, default=5, help="episodes per objective count")
    args = parser.parse_args(argv)
    lines = [run(args.objectives, args.episodes), "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [f"- measured: {kernel_version()}", "", "## Command", "", f"    {command_line()}", ""]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
