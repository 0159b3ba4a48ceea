"""Training the admission scorer with REINFORCE, the reward being evidence recall@k of later questions.

An episode is one conversation. The policy scores every turn (features.py), then decides which turns
to store. While training, the decision is sampled: the turns are cut into consecutive blocks of
`window` turns and each block stores k_b = floor(B * end) - floor(B * start) of its turns, drawn
without replacement with probabilities softmax(scores) (Plackett-Luce, drawn with the Gumbel top-k
trick) — so every sample stores exactly floor(B * n) turns and never more than the budget allows
at a block's end, as the live `BudgetGate` does. The reward is the mean evidence recall@k of the
conversation's questions when BM25 searches only the stored turns. The gradient is REINFORCE,
sum_j A_j * grad log P(sample_j), with A_j the sample's reward minus the mean of the other samples
of the same conversation (a leave-one-out baseline), divided by their spread; Adam ascends it.

Evaluation uses the deterministic live rule (`BudgetGate` over the scores), not sampling.

The retriever is the same for every policy compared: Okapi BM25 (k1 1.2, b 0.75) over the stored
turns' words (lower-cased, stopwords dropped, plural -s folded), document statistics taken over the
stored turns only, as an index of just those turns would have them.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memos.errors import UserError

from .features import Turn, features_of, words_of
from .model import WINDOW, AdmissionModel, allowed, check_budget, gate

#: recall is measured over the top K turns a question retrieves
K = 10
_DIA = re.compile(r"^D:?(\d+):0*(\d+)$")
_SESSION = re.compile(r"^session_(\d+)$")
_TERM = re.compile(r"[a-z0-9]+")
_INDEX_STOPWORDS = words_of(
    """a about after all also am an and any are as at be been but by can could did do does for from had has have he
    her him his how i if in into is it its just me my no not of on or our s she so some that the their them then
    there they this to too up us was we were what when where which who why will with would you your m t ve ll d re
    yeah oh really"""
)


@dataclass(frozen=True)
class Question:
    """A question about a conversation and the turns (indices) holding its answer."""

    text: str
    evidence: tuple[int, ...]
    category: int = 0


@dataclass(frozen=True)
class Conversation:
    """The turns of one conversation in order, and the questions asked after it."""

    name: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]


# ---- LoCoMo input ------------------------------------------------------------------------------


def conversation_from_sample(sample: Mapping[str, Any], where: str = "sample") -> Conversation:
    """One LoCoMo sample as a Conversation; turn texts read as `memos ingest --format locomo` stores them."""
    conv = sample.get("conversation")
    if not isinstance(conv, Mapping):
        raise UserError(f"{where}: a LoCoMo sample needs a 'conversation' object")
    name = str(sample.get("sample_id") or where)
    numbers = sorted(int(m.group(1)) for key in conv if (m := _SESSION.match(str(key))))
    turns: list[Turn] = []
    index_of: dict[str, int] = {}
    for number in numbers:
        session = f"session_{number}"
        for obj in conv[session] or []:
            if not isinstance(obj, Mapping) or not obj.get("text") or not obj.get("speaker"):
                raise UserError(f"{where} {session}: every turn needs 'speaker' and 'text'")
            speaker, text = str(obj["speaker"]), f"{obj['speaker']}: {obj['text']}"
            if obj.get("blip_caption"):
                text += f" [shares an image: {obj['blip_caption']}]"
            dia = str(obj.get("dia_id") or f"{session}:{len(turns)}")
            index_of[dia] = len(turns)
            turns.append(Turn(text=text, speaker=speaker, session=session, turn_id=dia))
    questions = []
    for qa in sample.get("qa") or []:
        text = str(qa.get("question") or "").strip()
        if text:
            evidence = tuple(sorted({index_of[d] for d in clean_evidence(qa.get("evidence"), set(index_of))}))
            questions.append(Question(text, evidence, int(qa.get("category") or 0)))
    return Conversation(name, tuple(turns), tuple(questions))


def clean_evidence(raw: Any, valid: set[str]) -> set[str]:
    """Evidence ids as the conversation spells them: joined lists split, 'D:11:26' and 'D30:05' fixed."""
    out: set[str] = set()
    for entry in raw if isinstance(raw, list) else []:
        for part in re.split(r"[;,\s]+", str(entry)):
            match = _DIA.match(part.strip())
            if match and f"D{match.group(1)}:{match.group(2)}" in valid:
                out.add(f"D{match.group(1)}:{match.group(2)}")
    return out


def load_locomo(path: str | Path) -> list[Conversation]:
    """The conversations of a LoCoMo-format JSON file (a list of samples, or one sample)."""
    where = Path(path)
    try:
        doc = json.loads(where.read_text())
    except FileNotFoundError:
        raise UserError(f"no such file: {where}; pass a LoCoMo-format JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {where} as JSON: {exc}") from None
    samples = doc if isinstance(doc, list) else [doc]
    if not samples or not all(isinstance(s, Mapping) for s in samples):
        raise UserError(f"{where} holds no LoCoMo samples (a list of objects with 'conversation' and 'qa')")
    return [conversation_from_sample(s, f"{where} sample {i + 1}") for i, s in enumerate(samples)]


def split(conversations: Sequence[Conversation], num_train: int = 6) -> tuple[list[Conversation], list[Conversation]]:
    """The first `num_train` conversations to train on, the rest to evaluate on."""
    if len(conversations) <= num_train:
        raise UserError(
            f"the data has {len(conversations)} conversations; training takes the first {num_train} and "
            "evaluation needs at least one more"
        )
    return list(conversations[:num_train]), list(conversations[num_train:])


# ---- the retriever -----------------------------------------------------------------------------


def index_terms(text: str) -> list[str]:
    """BM25 terms: lower-cased words and numbers, stopwords dropped, a plural -s folded."""
    terms = []
    for word in _TERM.findall(text.lower().replace("'s", "")):
        if word in _INDEX_STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("ies"):
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        terms.append(word)
    return terms


class Retriever:
    """BM25 over any subset of one conversation's turns, for all of its questions at once."""

    def __init__(self, turns: Sequence[str], questions: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        query_terms = [index_terms(q) for q in questions]
        # only terms some question uses can score: the index keeps just those columns
        vocab = {t: i for i, t in enumerate(sorted({t for terms in query_terms for t in terms}))}
        #: term counts per turn over the query vocabulary, and each turn's length in terms
        self.tf = np.zeros((len(turns), len(vocab)))
        self.length = np.zeros(len(turns))
        for row, text in enumerate(turns):
            terms = index_terms(text)
            self.length[row] = len(terms)
            for term in terms:
                col = vocab.get(term)
                if col is not None:
                    self.tf[row, col] += 1
        #: 1 where a question uses a term
        self.queries = np.zeros((len(questions), len(vocab)))
        for row, terms in enumerate(query_terms):
            for term in terms:
                self.queries[row, vocab[term]] = 1.0

    @property
    def num_turns(self) -> int:
        """Turns in the conversation."""
        return len(self.length)

    def top(self, stored: np.ndarray, k: int = K) -> np.ndarray:
        """Per question, the indices of the best k stored turns (fewer when fewer are stored), best first."""
        rows = np.flatnonzero(stored)
        if len(rows) == 0:
            return np.zeros((len(self.queries), 0), dtype=np.int64)
        tf = self.tf[rows]
        length = self.length[rows]
        df = (tf > 0).sum(axis=0)
        idf = np.log(1.0 + (len(rows) - df + 0.5) / (df + 0.5))
        norm = self.k1 * (1.0 - self.b + self.b * length / max(length.mean(), 1e-9))
        weights = idf * tf * (self.k1 + 1.0) / (tf + norm[:, None])
        scores = self.queries @ weights.T
        # stable order: equal scores go to the earlier turn, so results never depend on the platform's sort
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return rows[order]

    def recall(self, stored: np.ndarray, evidence: Sequence[tuple[int, ...]], k: int = K) -> np.ndarray:
        """Per question, the share of its evidence turns among the top k stored turns (1 without evidence)."""
        top = self.top(stored, k)
        out = np.ones(len(evidence))
        for row, ev in enumerate(evidence):
            if ev:
                out[row] = len(set(ev) & set(top[row].tolist())) / len(ev)
        return out


# ---- episodes ----------------------------------------------------------------------------------


@dataclass
class Episode:
    """One conversation ready for training or evaluation: features and retrieval index computed once."""

    conversation: Conversation
    features: np.ndarray  # (turns, FEATURES)
    retriever: Retriever
    evidence: list[tuple[int, ...]]

    @property
    def num_turns(self) -> int:
        """Turns in the conversation."""
        return len(self.conversation.turns)

    def recall(self, stored: np.ndarray, k: int = K) -> np.ndarray:
        """Per-question recall@k when exactly the `stored` turns are searchable."""
        return self.retriever.recall(stored, self.evidence, k)


def prepare(conversations: Sequence[Conversation]) -> list[Episode]:
    """Episodes for these conversations (features and BM25 statistics computed once each)."""
    episodes = []
    for conv in conversations:
        if not conv.turns:
            raise UserError(f"conversation {conv.name} has no turns")
        episodes.append(
            Episode(
                conversation=conv,
                features=features_of(conv.turns),
                retriever=Retriever([t.text for t in conv.turns], [q.text for q in conv.questions]),
                evidence=[q.evidence for q in conv.questions],
            )
        )
    return episodes


def evaluate(
    scorer: Callable[[np.ndarray], np.ndarray] | None,
    episodes: Sequence[Episode],
    budget: float,
    *,
    window: int = WINDOW,
    k: int = K,
) -> float:
    """Recall@k over all questions of the episodes when the gate admits turns by `scorer` (None: everything)."""
    values: list[np.ndarray] = []
    for ep in episodes:
        stored = np.ones(ep.num_turns, dtype=bool) if scorer is None else gate(scorer(ep.features), budget, window)
        values.append(ep.recall(stored, k))
    pooled = np.concatenate(values) if values else np.zeros(0)
    return float(pooled.mean()) if len(pooled) else float("nan")


# ---- REINFORCE ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How the admission scorer is trained."""

    #: storage budget: the fraction of turns that may be stored
    budget: float = 0.25
    #: passes over the training conversations; each samples `samples` admissions per conversation
    epochs: int = 30
    samples: int = 16
    #: Adam learning rate
    lr: float = 0.02
    #: hidden units (0: a linear score, i.e. a logistic policy per turn)
    hidden: int = 0
    #: which weights to return: "last" (after the last pass), "best" (the pass with the best gate recall on the
    #: training conversations) or "average" (the mean of the weights after each pass of the second half)
    select: str = "best"
    #: turns per sampling block (the gate's window at evaluation)
    window: int = WINDOW
    k: int = K
    seed: int = 0

    def check(self) -> None:
        """Raise UserError for a value training cannot run with."""
        check_budget(self.budget)
        for name, value, low in (("epochs", self.epochs, 1), ("samples", self.samples, 2), ("window", self.window, 1)):
            if value < low:
                raise UserError(f"bad admission training setting: {name} must be at least {low}, got {value}")
        if self.select not in ("last", "best", "average"):
            raise UserError(f"bad admission training setting: select is last, best or average, not {self.select!r}")
        if self.lr <= 0 or self.hidden < 0 or self.k < 1:
            raise UserError("bad admission training setting: lr must be positive, hidden >= 0 and k >= 1")


@dataclass(frozen=True)
class EpochStats:
    """One pass over the training conversations."""

    epoch: int
    reward: float  # mean recall of the sampled admissions
    greedy: float  # recall of the gate's decisions on the training conversations after the pass


@dataclass
class TrainReport:
    """What a training run did."""

    initial: float  # gate recall on the training conversations before training
    history: list[EpochStats] = field(default_factory=list)
    #: gate recall on the training conversations of the weights returned (the best pass with keep_best)
    final: float = math.nan
    seconds: float = 0.0


def sample_admission(
    scores: np.ndarray, budget: float, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One sampled admission (a boolean mask) and d log P(sample) / d scores.

    Block by block, k_b turns are drawn without replacement in proportion to exp(score) (Gumbel top-k
    gives the draw order). For a block with scores s, weights e = exp(s), drawn order i_1..i_k and
    Z_m = sum of e over the turns not drawn before step m, log P = sum_m (s_{i_m} - log Z_m), whose
    gradient is 1[j drawn] - e_j * sum_{m <= pos(j)} 1/Z_m (pos(j) = k for a turn not drawn).
    """
    n = len(scores)
    stored = np.zeros(n, dtype=bool)
    grad = np.zeros(n)
    for start in range(0, n, window):
        end = min(n, start + window)
        k = allowed(budget, end) - allowed(budget, start)
        if k <= 0:
            continue
        s = scores[start:end]
        keys = s + rng.gumbel(size=len(s))
        order = np.argsort(-keys, kind="stable")[:k]
        e = np.exp(s - s.max())
        z = e.sum() - np.concatenate([[0.0], np.cumsum(e[order])[:-1]])
        inv = np.cumsum(1.0 / z)  # inv[m] = sum_{m' <= m} 1 / Z_m'
        position = np.full(len(s), k - 1)
        position[order] = np.arange(k)
        g = -e * inv[position]
        g[order] += 1.0
        grad[start:end] = g
        stored[start + order] = True
    return stored, grad


class _Adam:
    """Adam ascent on a dict of numpy arrays."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.lr, self.betas = lr, betas
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def ascend(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for key, g in grads.items():
            self.m[key] = b1 * self.m[key] + (1 - b1) * g
            self.v[key] = b2 * self.v[key] + (1 - b2) * g**2
            m_hat = self.m[key] / (1 - b1**self.t)
            v_hat = self.v[key] / (1 - b2**self.t)
            params[key] += self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def reinforce(
    episodes: Sequence[Episode],
    config: TrainConfig | None = None,
    *,
    model: AdmissionModel | None = None,
    progress: Callable[[EpochStats], None] | None = None,
) -> tuple[AdmissionModel, TrainReport]:
    """Train a scorer on these episodes with REINFORCE (see the module doc); returns it and a report."""
    config = config or TrainConfig()
    config.check()
    if not episodes:
        raise UserError("no conversations to train on")
    model = model or AdmissionModel.initial(
        np.concatenate([ep.features for ep in episodes]), hidden=config.hidden, seed=config.seed
    )
    model.budget, model.window = config.budget, config.window
    rng = np.random.default_rng(config.seed)
    order = random.Random(config.seed)
    optimizer = _Adam(model.params, config.lr)
    started = time.perf_counter()
    report = TrainReport(initial=evaluate(model.score, episodes, config.budget, window=config.window, k=config.k))
    best = (report.initial, {key: value.copy() for key, value in model.params.items()})
    averaged: dict[str, np.ndarray] = {key: np.zeros_like(value) for key, value in model.params.items()}
    num_averaged = 0
    for epoch in range(1, config.epochs + 1):
        rewards: list[float] = []
        for ep in order.sample(list(episodes), len(episodes)):
            scores = model.score(ep.features)
            samples = [sample_admission(scores, config.budget, config.window, rng) for _ in range(config.samples)]
            r = np.array([ep.recall(stored, config.k).mean() for stored, _ in samples])
            rewards += r.tolist()
            # leave-one-out baseline: each sample is compared with the mean of the others
            baseline = (r.sum() - r) / (len(r) - 1)
            advantage = (r - baseline) / (r.std() + 1e-8)
            if not np.any(advantage):
                continue
            grad_scores = sum(a * g for a, (_, g) in zip(advantage, samples, strict=True)) / len(samples)
            optimizer.ascend(model.params, model.backward(ep.features, grad_scores))
        greedy = evaluate(model.score, episodes, config.budget, window=config.window, k=config.k)
        stats = EpochStats(epoch, float(np.mean(rewards)), greedy)
        report.history.append(stats)
        if greedy > best[0]:
            best = (greedy, {key: value.copy() for key, value in model.params.items()})
        if epoch > config.epochs // 2:
            for key, value in model.params.items():
                averaged[key] += value
            num_averaged += 1
        if progress is not None:
            progress(stats)
    if config.select == "best":
        model.params = best[1]
    elif config.select == "average":
        model.params = {key: value / num_averaged for key, value in averaged.items()}
    report.final = evaluate(model.score, episodes, config.budget, window=config.window, k=config.k)
    report.seconds = time.perf_counter() - started
    return model, report


def random_recall(
    episodes: Sequence[Episode], budget: float, *, seeds: Sequence[int] = (0, 1, 2, 3, 4), window: int = WINDOW
) -> tuple[float, float]:
    """Mean and spread (population std) over seeds of recall when the gate admits by random scores."""
    values = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        values.append(evaluate(lambda x, rng=rng: rng.random(len(x)), episodes, budget, window=window))
    return float(np.mean(values)), float(np.std(values))


def recall_upper_bound(episodes: Sequence[Episode], budget: float, window: int = WINDOW) -> float:
    """Recall when the gate admits by 'is evidence of some question' (an oracle no policy can see)."""

    def oracle(ep: Episode) -> np.ndarray:
        # a small, fixed tie-break among the turns no question needs
        hot = np.random.default_rng(0).random(ep.num_turns) * 1e-3
        for ev in ep.evidence:
            hot[list(ev)] += 1.0
        return hot

    values = [ep.recall(gate(oracle(ep), budget, window)) for ep in episodes]
    return float(np.concatenate(values).mean()) if values else math.nan
