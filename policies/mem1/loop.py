"""MEM1's constant-memory agent: each turn sees the task, the previous internal state, action and observation only.

Turn t's prompt is rebuilt from scratch as

    task prompt + <state_{t-1}> + <action_{t-1}> + <observation_{t-1}>

so whatever is older than the previous turn is gone unless the model wrote it into its new internal
state. The previous turn is held by `ConstantMemoryContext` as one value that each turn replaces; the
loop keeps every turn for the returned `Episode`, but the prompt is never built from that record.
`FullHistoryContext` is the baseline MEM1 is measured against: the prompt holds the whole history.

The carried segments are re-rendered from the parsed turn (state in its tags, then the action in its
tags, as MEM1 re-wraps `<think>`), so text a model wrote around or after its action is not kept.
Each prompt goes to the model as one user message (MEM1's client sends the carried turn as a partial
assistant message instead; a chat API has no portable way to continue one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from memos.errors import UserError
from memos.llm.base import LLM, Message
from memos.policies.mem1.env import Action, Environment
from memos.policies.mem1.format import (
    ParsedTurn,
    close_stopped_action,
    parse_turn,
    render_action,
    render_observation,
    render_state,
    tags_for,
)
from memos.tokens import Tokenizer, get_tokenizer

ContextName = Literal["constant", "full"]
#: why an episode ended
StopReason = Literal["answer", "invalid", "max_turns", "done"]
#: MEM1's turn limit for QA (10 for WebShop)
DEFAULT_MAX_TURNS = 6

_TASK = """Answer the questions below by searching, one action per turn.

Every response starts with your internal state:
<{state}>
Keep everything from the current information that may help answer the questions, and a short summary of \
the searches made so far (to avoid repeating them). The current information is dropped after this turn: \
this internal state is all you will keep. Each information block tells you how many turns you have left.
</{state}>
Then exactly one action, either a search:
<{search}>QUERY</{search}>
or, when you can answer, the final answers, one per question, in order, separated by ";":
<{answer}>ANSWER 1; ANSWER 2</{answer}>

{questions}

"""


def task_prompt(questions: str, format: str = "think") -> str:
    """The fixed part of every prompt: the instructions in the format's tags, then the environment's questions."""
    tags = tags_for(format)
    return _TASK.format(state=tags.state, search=tags.search, answer=tags.answer, questions=questions.strip())


@dataclass(frozen=True)
class Carry:
    """What one turn hands to the next: its internal-state, action and observation segments."""

    state: str
    action: str
    observation: str

    @property
    def text(self) -> str:
        """The three segments as they appear in the next prompt."""
        return self.state + self.action + self.observation


class ConstantMemoryContext:
    """MEM1's prompt: the task and the latest turn only; `update` replaces the carried turn."""

    def __init__(self, task: str) -> None:
        self.task = task
        #: the previous turn (None before the first); the only history this context ever holds
        self.last: Carry | None = None

    def update(self, carry: Carry) -> None:
        """Replace the carried turn with this one."""
        self.last = carry

    def prompt(self) -> str:
        """The next turn's prompt text."""
        return self.task + (self.last.text if self.last is not None else "")


class FullHistoryContext:
    """The full-context baseline: the task and every turn so far."""

    def __init__(self, task: str) -> None:
        self.task = task
        #: every turn so far, oldest first
        self.history: list[Carry] = []

    def update(self, carry: Carry) -> None:
        """Append this turn to the history."""
        self.history.append(carry)

    def prompt(self) -> str:
        """The next turn's prompt text."""
        return self.task + "".join(c.text for c in self.history)


@dataclass(frozen=True)
class Turn:
    """One turn: the exact prompt sent, the model's output, and the segments it added to the trajectory."""

    index: int
    prompt: str
    prompt_tokens: int
    output: str
    output_tokens: int
    parsed: ParsedTurn
    #: t_j: the internal state as carried ("" for an invalid turn)
    state: str
    #: r_j: the action as carried ("" for an invalid turn)
    action: str
    #: i_j: the information block returned ("" after an answer, an invalid turn or a search on the last turn)
    observation: str
    #: what the environment reported for the action
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    """A whole run: the task, every turn, the final answers and the reward."""

    #: the environment's first observation (the questions)
    question: str
    #: the task prompt every turn starts with
    task: str
    format: str
    context: ContextName
    turns: list[Turn] = field(default_factory=list)
    #: the final answers, one per objective (None when the episode ended without an answer)
    answers: list[str] | None = None
    #: the environment's reward for the answer (MEM1 QA: how many objectives were answered correctly)
    reward: float = 0.0
    stop: StopReason = "max_turns"

    @property
    def answered(self) -> bool:
        """True when the episode ended with an answer."""
        return self.answers is not None

    def steps(self) -> list[tuple[str, str, str]]:
        """(t_j, r_j, i_j) per turn: the trajectory's segments after the task prompt q."""
        return [(t.state, t.action, t.observation) for t in self.turns]

    def transcript(self) -> str:
        """A compact record: the questions, each turn's state and action, and the outcome (no documents)."""
        lines = [self.question.strip(), ""]
        for turn in self.turns:
            body = (turn.state + turn.action).strip() or f"(invalid turn: {turn.parsed.problem})"
            lines.append(f"turn {turn.index + 1}: {body}")
        outcome = "; ".join(self.answers) if self.answers is not None else "no answer"
        lines += ["", f"answers: {outcome}", f"reward: {self.reward:g} (ended by {self.stop})"]
        return "\n".join(lines)


class MEM1Agent:
    """Runs the MEM1 loop: one model call per turn, the environment answering each search, until an answer."""

    def __init__(
        self,
        llm: LLM,
        env: Environment,
        *,
        format: str = "think",
        max_turns: int = DEFAULT_MAX_TURNS,
        context: ContextName = "constant",
        tokenizer: Tokenizer | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        if not isinstance(llm, LLM):
            raise UserError(f"MEM1 needs an LLM backend, got {type(llm).__name__}")
        self.tags = tags_for(format)
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise UserError(f"max_turns must be a positive integer, got {max_turns!r}")
        if context not in ("constant", "full"):
            raise UserError(f"context must be 'constant' (MEM1) or 'full' (the baseline), got {context!r}")
        self.llm = llm
        self.env = env
        self.format = format
        self.max_turns = max_turns
        self.context: ContextName = context
        self.tokenizer = tokenizer or get_tokenizer()
        self.max_tokens = max_tokens
        self.temperature = temperature

    def run(self) -> Episode:
        """Play one episode from the environment's reset to an answer, an invalid turn or the turn limit."""
        question = self.env.reset()
        task = task_prompt(question, self.format)
        memory = ConstantMemoryContext(task) if self.context == "constant" else FullHistoryContext(task)
        episode = Episode(question=question, task=task, format=self.format, context=self.context)
        stops = [f"</{self.tags.search}>", f"</{self.tags.answer}>"]
        for index in range(self.max_turns):
            prompt = memory.prompt()
            completion = self.llm.complete(
                [Message(role="user", content=prompt)],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                stop=stops,
            )
            # a server strips the stop sequence it stopped at; MEM1's client puts the closing tag back
            output = completion.text
            if completion.finish_reason == "stop":
                output = close_stopped_action(output, self.format)
            parsed = parse_turn(output, self.format)
            # the fields every outcome of this turn shares
            record = partial(
                Turn, index, prompt, self.tokenizer.count(prompt), output, self.tokenizer.count(output), parsed
            )
            if not parsed.valid or parsed.action is None or parsed.state is None:
                episode.turns.append(record(state="", action="", observation=""))
                episode.stop = "invalid"
                return episode
            state = render_state(parsed.state, self.format)
            action = render_action(parsed.action, parsed.content, self.format)
            turns_left = self.max_turns - index - 1
            if parsed.action == "search" and turns_left == 0:
                # a search on the last turn gets no reply: there is no turn left to read it
                episode.turns.append(record(state=state, action=action, observation=""))
                episode.stop = "max_turns"
                return episode
            text, done, info = self.env.step(Action(parsed.action, parsed.content))
            observation = render_observation(text, turns_left, self.format) if parsed.action == "search" else ""
            episode.turns.append(record(state=state, action=action, observation=observation, info=dict(info)))
            if parsed.action == "answer":
                episode.answers = parsed.answers
                episode.reward = float(info.get("reward", 0.0))
                episode.stop = "answer"
                return episode
            if done:
                episode.stop = "done"
                return episode
            memory.update(Carry(state, action, observation))
        return episode
