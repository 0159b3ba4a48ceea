"""Mem-α's reward r = r1 + r2 + β·r3 + γ·r4, computed after the last chunk of an instance.

- r1 (qa): mean score of an answerer's replies, each read from the final memory; scored by normalised
  substring match (SQuAD-style normalisation, whole words), the paper's metric for SQuAD/HotpotQA.
- r2 (tool_success): successful calls / calls, over every chunk (0 when the model made no call).
- r3 (compression): 1 − memory tokens / chunk tokens, clipped to [0, 1] (the paper leaves it unclipped,
  so a memory longer than its input scores below 0 there and 0 here).
- r4 (type_fit): share of writes (inserts and updates) a judge finds fit for their memory type
  (0 without writes). The default judge is a cheap heuristic, not the paper's LLM judge; see
  `heuristic_type_judge`, or pass `llm_type_judge(llm)`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memos.errors import UserError
from memos.llm.base import LLM, Message

from .memory import CORE, EPISODIC, LIST_REGIONS, SEMANTIC, MemoryState
from .tools import ChunkStats

BETA = 0.05
GAMMA = 0.1
#: above this, the answerer sees BM25 top hits per region instead of the whole memory (the paper's 30,720)
ANSWER_CONTEXT_TOKENS = 30720
ANSWER_TOP_K = 15

#: answerer(memory_text, question) -> answer
Answerer = Callable[[str, str], str]
#: judge([(region, text), ...]) -> whether each write fits its memory type
TypeJudge = Callable[[Sequence[tuple[str, str]]], Sequence[bool]]
Gold = str | Sequence[str]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_TIME = re.compile(
    r"\b(\d{4}|\d{1,2}[:/.\-]\d{1,2}(?:[:/.\-]\d{2,4})?|\d{1,2}(?:st|nd|rd|th)|\d{1,2}(?::\d{2})?\s*[ap]\.?m\.?"
    rf"|(?:{_MONTHS})\.?|(?:mon|tues|wednes|thurs|fri|satur|sun)day"
    r"|yesterday|today|tonight|tomorrow|ago|morning|afternoon|evening|night|noon|midnight"
    r"|week|weekend|month|year|timestamp|date|time|session|turn|when|then|later|earlier)\b",
    re.IGNORECASE,
)
_EVENT_OPENING = re.compile(
    r"\s*(at|on|in|during|yesterday|today|tonight|tomorrow|last|this|earlier|recently)\b", re.IGNORECASE
)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def substring_score(prediction: str, gold: Gold) -> float:
    """1.0 when a normalised gold answer occurs in the normalised prediction as whole words, else 0.0."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    predicted = normalize_answer(prediction)
    wanted = [normalize_answer(g) for g in golds]
    if not any(wanted):
        # a gold answer with no words (punctuation, an article) matches only an equally empty reply
        return 1.0 if not predicted else 0.0
    return 1.0 if any(w and f" {w} " in f" {predicted} " for w in wanted) else 0.0


def answer_context(
    state: MemoryState, question: str, *, max_tokens: int = ANSWER_CONTEXT_TOKENS, top_k: int = ANSWER_TOP_K
) -> str:
    """The whole rendered memory, or, when longer than `max_tokens`, core plus BM25 top-k items per region."""
    full = state.render()
    if state.tokenizer.count(full) <= max_tokens:
        return full
    blocks = [f"<core_memory>\n{state.core or '(empty)'}\n</core_memory>"]
    for region in LIST_REGIONS:
        hits = state.search(region, question, "bm25", top_k)
        lines = [f"[{e.short_id}] {e.text}" for e in hits] or ["(no match)"]
        blocks.append(f"<{region}_memory>\n" + "\n".join(lines) + f"\n</{region}_memory>")
    return "\n".join(blocks)


def strip_thinking(text: str) -> str:
    """A reply without its `<think>...</think>` part (an unfinished one leaves nothing)."""
    if "</think>" in text:
        return text.split("</think>", 1)[1].strip()
    return "" if "<think>" in text else text.strip()


ANSWER_SYSTEM = "Answer the question from the memory below only. Reply with the answer alone, briefly.\n\n{memory}"


def llm_answerer(llm: LLM, *, max_tokens: int = 256) -> Answerer:
    """An answerer asking `llm` (the paper uses a frozen Qwen3-32B) with the memory as system prompt."""

    def answer(memory: str, question: str) -> str:
        messages = [
            Message(role="system", content=ANSWER_SYSTEM.format(memory=memory)),
            Message(role="user", content=question),
        ]
        return strip_thinking(llm.complete(messages, max_tokens=max_tokens, temperature=0.0).text)

    return answer


def heuristic_type_judge(writes: Sequence[tuple[str, str]]) -> list[bool]:
    """A cheap stand-in for the paper's LLM judge: does each write look like its memory type?

    episodic: mentions a time (a year, a date or clock time, a month or weekday, or a word such as
    yesterday, morning, week, session, when). semantic: is not written as an event, i.e. does not open
    with a time phrase ("At 3pm, ...", "Yesterday ..."). core: always fits (it is free-form).
    """
    return [_fits(region, text) for region, text in writes]


def _fits(region: str, text: str) -> bool:
    if region == EPISODIC:
        return _TIME.search(text) is not None
    if region == SEMANTIC:
        first_clause = re.split(r"[,.;:]", text, maxsplit=1)[0]
        return not (_EVENT_OPENING.match(text) and _TIME.search(first_clause))
    return region == CORE


JUDGE_PROMPT = """\
Memory types: core_memory holds a short summary of who and what matters; semantic_memory holds general \
facts and knowledge; episodic_memory holds events tied to a time ("At <time>, <who> <did what>").
Is the following text a good fit for {memory_type}? Reply VALID or INVALID.

{text}"""


def llm_type_judge(llm: LLM) -> TypeJudge:
    """A judge asking `llm` per write whether it fits its memory type (VALID / INVALID), as the paper does."""

    def judge(writes: Sequence[tuple[str, str]]) -> list[bool]:
        verdicts = []
        for region, text in writes:
            prompt = JUDGE_PROMPT.format(memory_type=f"{region}_memory", text=text)
            reply = strip_thinking(llm.chat(prompt)).upper()
            verdicts.append("VALID" in reply and "INVALID" not in reply)
        return verdicts

    return judge


@dataclass(frozen=True)
class RewardBreakdown:
    """The four reward terms, their weights, and the total."""

    qa: float
    tool_success: float
    compression: float
    type_fit: float
    beta: float = BETA
    gamma: float = GAMMA
    #: per chunk: qa + β·compression + that chunk's tool success + γ·that chunk's type fit (the paper
    #: puts this on each chunk-step's last token)
    chunk_rewards: tuple[float, ...] = ()

    @property
    def total(self) -> float:
        """r1 + r2 + β·r3 + γ·r4."""
        return self.qa + self.tool_success + self.beta * self.compression + self.gamma * self.type_fit


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def compute_reward(
    state: MemoryState,
    stats: Sequence[ChunkStats],
    questions: Sequence[str],
    answers: Sequence[Gold],
    *,
    answerer: Answerer | LLM,
    judge: TypeJudge = heuristic_type_judge,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> RewardBreakdown:
    """Score the final memory of an instance and the tool calls that built it."""
    if len(questions) != len(answers):
        raise UserError(f"{len(questions)} questions but {len(answers)} gold answers")
    answer = llm_answerer(answerer) if isinstance(answerer, LLM) else answerer
    scores = [
        substring_score(answer(answer_context(state, q), q), gold) for q, gold in zip(questions, answers, strict=True)
    ]
    qa = _ratio(sum(scores), len(scores))
    tool_success = _ratio(sum(s.num_ok for s in stats), sum(s.num_calls for s in stats))
    chunk_tokens = sum(s.chunk_tokens for s in stats)
    compression = min(1.0, max(0.0, 1.0 - state.num_tokens() / chunk_tokens)) if chunk_tokens else 0.0
    writes = [s.writes() for s in stats]
    all_writes = [w for chunk in writes for w in chunk]
    verdicts = [bool(v) for v in judge(all_writes)]
    if len(verdicts) != len(all_writes):
        raise UserError(f"the type judge returned {len(verdicts)} verdicts for {len(all_writes)} writes; give one each")
    type_fit = _ratio(sum(verdicts), len(verdicts))
    chunk_rewards = []
    start = 0
    for chunk_stats, chunk_writes in zip(stats, writes, strict=True):
        fit = verdicts[start : start + len(chunk_writes)]
        start += len(chunk_writes)
        success = _ratio(chunk_stats.num_ok, chunk_stats.num_calls)
        chunk_rewards.append(qa + beta * compression + success + gamma * _ratio(sum(fit), len(fit)))
    return RewardBreakdown(qa, tool_success, compression, type_fit, beta, gamma, tuple(chunk_rewards))
