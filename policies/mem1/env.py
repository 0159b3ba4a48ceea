"""Environments a MEM1 agent acts in, and the multi-objective QA one: k questions, one search tool, one answer.

MEM1 composes several questions into one task (train on 2, test up to 16) and scores the final
"a1; a2; ..." answer by the number of positionally correct answers. Here the search tool is BM25 over
a set of documents (the turns of a LoCoMo conversation, or any documents given), returning the top 3
as MEM1 formats them ("Doc i(Title: t) text").
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from memos.errors import UserError
from memos.policies.mem1.format import ActionKind, Document, format_documents, split_answers
from memos.policies.mem1.scoring import Gold, multi_em

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Action:
    """What the agent does in a turn: search for a query, or give the final answers."""

    kind: ActionKind
    content: str


class Environment(Protocol):
    """A task the agent works on: `reset` gives the task text, `step` answers one action."""

    def reset(self) -> str:
        """Start a new episode and return its first observation (the task: the questions)."""
        ...

    def step(self, action: Action) -> tuple[str, bool, dict[str, Any]]:
        """Carry out an action: (observation text, whether the episode is over, facts such as the reward)."""
        ...


def words(text: str) -> list[str]:
    """Lower-case letter/digit runs: the terms BM25 indexes."""
    return _WORD.findall(text.lower())


class BM25:
    """Okapi BM25 over a fixed list of texts (Lucene's non-negative idf); ties keep the texts' order."""

    def __init__(self, texts: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        #: per text, its term counts (index i is texts[i])
        self.term_counts: list[Counter[str]] = [Counter(words(t)) for t in texts]
        #: per text, its number of terms
        self.lengths: list[int] = [sum(c.values()) for c in self.term_counts]
        self.avg_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        document_frequency: Counter[str] = Counter()
        for counts in self.term_counts:
            document_frequency.update(counts.keys())
        n = len(self.term_counts)
        #: term -> idf, for every term that occurs in some text
        self.idf: dict[str, float] = {
            term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in document_frequency.items()
        }

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every text for the query (0 for a text sharing no term with it)."""
        terms = [t for t in words(query) if t in self.idf]
        out = []
        for counts, length in zip(self.term_counts, self.lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / self.avg_length) if self.avg_length else self.k1
            score = 0.0
            for term in terms:
                tf = counts.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            out.append(score)
        return out

    def top(self, query: str, k: int) -> list[int]:
        """Indexes of the k best texts with a positive score, best first."""
        scores = self.scores(query)
        ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i))
        return ranked[:k]


class MultiObjectiveQA:
    """k questions asked at once; `search` returns the top documents by BM25, `answer` ends and scores the episode."""

    def __init__(
        self,
        documents: Sequence[Document],
        questions: Sequence[str],
        answers: Sequence[Gold],
        *,
        top_k: int = 3,
    ) -> None:
        if not questions:
            raise UserError("a multi-objective QA environment needs at least one question")
        if len(questions) != len(answers):
            raise UserError(f"{len(questions)} questions but {len(answers)} answers: give one answer per question")
        if not documents:
            raise UserError("a multi-objective QA environment needs documents to search")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UserError(f"top_k must be a positive integer, got {top_k!r}")
        self.documents = list(documents)
        self.questions = [str(q).strip() for q in questions]
        self.answers = list(answers)
        self.top_k = top_k
        self.index = BM25([f"{d.title} {d.text}" for d in self.documents])
        #: searches made in the current episode
        self.num_searches = 0
        #: True once the current episode got its answer (a new one starts with reset)
        self.done = False

    @property
    def num_objectives(self) -> int:
        """How many questions the task asks."""
        return len(self.questions)

    def reset(self) -> str:
        """Start over; the observation is the numbered list of questions."""
        self.num_searches = 0
        self.done = False
        return "\n".join(f"Question {i}: {q}" for i, q in enumerate(self.questions, start=1))

    def search(self, query: str) -> list[Document]:
        """The top_k documents for a query, best first."""
        return [self.documents[i] for i in self.index.top(query, self.top_k)]

    def step(self, action: Action) -> tuple[str, bool, dict[str, Any]]:
        """A search returns the formatted top documents; an answer ends the episode with its score as reward."""
        if self.done:
            raise UserError("this episode is over (it was answered); call reset() to start another")
        if action.kind == "search":
            self.num_searches += 1
            found = self.search(action.content)
            return format_documents(found), False, {"query": action.content, "doc_ids": [d.id for d in found]}
        if action.kind == "answer":
            self.done = True
            predicted = split_answers(action.content)
            correct = multi_em(predicted, self.answers)
            info = {"reward": correct, "answers": predicted, "num_objectives": self.num_objectives}
            return "", True, info
        raise UserError(f"unknown action {action.kind!r}: use search or answer")

    @classmethod
    def from_locomo(
        cls,
        path: str | Path,
        *,
        objectives: int = 2,
        start: int = 0,
        sample: str | int = 0,
        top_k: int = 3,
    ) -> MultiObjectiveQA:
        """Questions start..start+objectives of one LoCoMo sample, searched over its conversation's turns.

        `sample` is a sample_id or a position in the file. Each turn is a document titled with its
        dia_id and session date; questions without an answer (the adversarial category) are skipped.
        """
        from memos.ingest import iter_requests

        path = Path(path)
        samples = _locomo_samples(path)
        chosen, position = _pick_sample(samples, sample, path)
        suffix = (str(chosen["sample_id"]),) if len(samples) > 1 else None
        documents = []
        for request_suffix, request in iter_requests(path, "locomo"):
            if request_suffix != suffix:
                continue
            provenance = request.provenance or {}
            dia_id = str(provenance.get("external_id") or "")
            when = request.event_time
            title = f"{dia_id}, {when.day} {when:%B %Y}" if isinstance(when, datetime) else dia_id
            documents.append(Document(title=title, text=request.text, id=dia_id))
        qa = [q for q in chosen.get("qa") or [] if isinstance(q, Mapping) and q.get("answer") not in (None, "")]
        if isinstance(objectives, bool) or not isinstance(objectives, int) or objectives < 1:
            raise UserError(f"objectives must be a positive integer, got {objectives!r}")
        picked = qa[start : start + objectives]
        if len(picked) < objectives:
            raise UserError(
                f"{path} sample {position} has {len(qa)} answerable questions; "
                f"questions {start}..{start + objectives - 1} do not all exist"
            )
        return cls(
            documents,
            [str(q["question"]) for q in picked],
            [str(q["answer"]) for q in picked],
            top_k=top_k,
        )


def _locomo_samples(path: Path) -> list[Mapping[str, Any]]:
    if not path.is_file():
        raise UserError(f"no such LoCoMo file: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path} as a LoCoMo JSON file: {exc}") from None
    samples = doc if isinstance(doc, list) else [doc]
    if not samples or not all(isinstance(s, Mapping) for s in samples):
        raise UserError(f"{path} is not a LoCoMo file: expected a sample object or a list of them")
    return samples


def _pick_sample(samples: list[Mapping[str, Any]], sample: str | int, path: Path) -> tuple[Mapping[str, Any], int]:
    if isinstance(sample, int) and not isinstance(sample, bool):
        if not 0 <= sample < len(samples):
            raise UserError(f"{path} has {len(samples)} samples; sample {sample} does not exist")
        return samples[sample], sample
    for position, candidate in enumerate(samples):
        if str(candidate.get("sample_id")) == str(sample):
            return candidate, position
    raise UserError(f"{path} has no sample with sample_id {sample!r}")
