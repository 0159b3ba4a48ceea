"""An RL environment for Mem-α: one instance (chunks, then questions), its memory kept in a scratch copy.

env = MemAlphaEnv(instance, answerer=my_answerer)
messages = env.reset()
while messages is not None:
    result = env.step(policy_model(messages))   # the model's raw reply text (✿ calls)
    messages = result.messages
env.reward().total
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.errors import UserError
from memos.llm.base import LLM, Message

from .backends import ScratchBackend
from .parse import STOP, parse_text_calls
from .prompt import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, MAX_RECENT_ITEMS, chunk_messages
from .reward import BETA, GAMMA, Answerer, Gold, RewardBreakdown, TypeJudge, compute_reward, heuristic_type_judge
from .tools import ChunkStats, run_calls

if TYPE_CHECKING:
    from memos.embed import Embedder
    from memos.tokens import Tokenizer


@dataclass(frozen=True)
class Instance:
    """One training or test instance: chunks to memorise, then questions with their gold answers."""

    chunks: tuple[str, ...]
    questions: tuple[str, ...] = ()
    #: one gold answer per question: a string, or several accepted strings
    answers: tuple[Gold, ...] = ()

    def __post_init__(self) -> None:
        if not self.chunks:
            raise UserError("an instance needs at least one chunk")
        if len(self.questions) != len(self.answers):
            raise UserError(f"an instance has {len(self.questions)} questions but {len(self.answers)} answers")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Instance:
        """An instance from {"chunks": [...], "questions": [...], "answers": [...]}; UserError if malformed."""
        if not isinstance(data, Mapping):
            raise UserError(f"an instance is a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - {"chunks", "questions", "answers"})
        if unknown:
            raise UserError(f"unknown instance fields {unknown}; use chunks, questions, answers")
        chunks, questions, answers = (data.get(key, []) for key in ("chunks", "questions", "answers"))
        for key, values in (("chunks", chunks), ("questions", questions)):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise UserError(f"{key} must be a list of strings")
        if not isinstance(answers, list) or not all(_is_gold(a) for a in answers):
            raise UserError("answers must be a list of strings (or of lists of accepted strings)")
        golds = tuple(a if isinstance(a, str) else tuple(a) for a in answers)
        return cls(tuple(chunks), tuple(questions), golds)


def _is_gold(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def load_instances(path: str | Path) -> list[Instance]:
    """Instances from a JSONL file, one JSON object per line (blank lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read instances from {path}: {exc.strerror}", path=str(path)) from exc
    out: list[Instance] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(Instance.from_dict(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number} is not valid JSON: {exc.msg}", path=str(path), line=number) from exc
        except UserError as exc:
            raise UserError(f"{path}:{number}: {exc.message}", path=str(path), line=number) from exc
    return out


@dataclass(frozen=True)
class StepResult:
    """After one chunk: the next chunk's prompt (None after the last), whether done, and the chunk's stats."""

    messages: list[Message] | None
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class MemAlphaEnv:
    """Feeds an instance's chunks one by one, applies the model's ✿ tool calls, and scores the end memory."""

    def __init__(
        self,
        instance: Instance,
        *,
        answerer: Answerer | LLM,
        judge: TypeJudge = heuristic_type_judge,
        tokenizer: Tokenizer | None = None,
        embedder: Embedder | None = None,
        beta: float = BETA,
        gamma: float = GAMMA,
        text_tools: bool = True,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        max_recent: int = MAX_RECENT_ITEMS,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        self.instance = instance
        self.answerer = answerer
        self.judge = judge
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.beta = beta
        self.gamma = gamma
        #: True: the tools are described in the system prompt and calls are read as ✿ text
        self.text_tools = text_tools
        self.max_prompt_tokens = max_prompt_tokens
        self.max_recent = max_recent
        self.max_new_tokens = max_new_tokens
        #: the memory of this episode, in this process only; replaced by reset()
        self.memory = ScratchBackend(tokenizer, embedder=embedder)
        #: index of the chunk the last prompt showed; -1 before reset()
        self.index = -1
        #: one entry per chunk stepped through, oldest first
        self.stats: list[ChunkStats] = []

    @property
    def done(self) -> bool:
        """True once every chunk has been stepped through."""
        return len(self.stats) == len(self.instance.chunks)

    def reset(self) -> list[Message]:
        """Start over with empty memory; the prompt for chunk 0."""
        self.memory = ScratchBackend(self.tokenizer, embedder=self.embedder)
        self.stats = []
        self.index = 0
        return self._messages()

    def step(self, output: str) -> StepResult:
        """Apply the model's reply to the current chunk; the next chunk's prompt, or None when done."""
        if self.index < 0:
            raise UserError("call reset() before step()")
        if self.done:
            raise UserError("every chunk has been stepped through; call reward(), or reset() to start over")
        state = self.memory.load()
        chunk = self.instance.chunks[self.index]
        stats = run_calls(state, parse_text_calls(output), index=self.index, chunk_tokens=state.tokenizer.count(chunk))
        self.memory.save(state)
        self.stats.append(stats)
        info = stats.as_info()
        if self.done:
            return StepResult(None, True, info)
        self.index += 1
        return StepResult(self._messages(), False, info)

    def reward(self) -> RewardBreakdown:
        """The instance's reward once every chunk is done (the answerer reads the final memory)."""
        if not self.done:
            raise UserError(f"reward comes after the last chunk; {len(self.stats)} of {len(self.instance.chunks)} done")
        return compute_reward(
            self.memory.load(),
            self.stats,
            self.instance.questions,
            self.instance.answers,
            answerer=self.answerer,
            judge=self.judge,
            beta=self.beta,
            gamma=self.gamma,
        )

    def render(self) -> str:
        """The memory as it stands, rendered in full."""
        return self.memory.load().render()

    def _messages(self) -> list[Message]:
        return chunk_messages(
            self.memory.state,
            self.instance.chunks[self.index],
            text_tools=self.text_tools,
            max_prompt_tokens=self.max_prompt_tokens,
            max_recent=self.max_recent,
            max_new_tokens=self.max_new_tokens,
        )


def run_episode(env: MemAlphaEnv, model: Sequence[str] | LLM) -> RewardBreakdown:
    """Run a whole episode with scripted replies (one per chunk) or an LLM, and return its reward."""
    llm = model if isinstance(model, LLM) else None
    replies = iter(model) if llm is None else iter(())
    messages: list[Message] | None = env.reset()
    while messages is not None:
        # a script shorter than the instance leaves the remaining chunks unanswered (no calls)
        output = llm.complete(messages, stop=[STOP]).text if llm is not None else next(replies, "")
        messages = env.step(output).messages
    return env.reward()
