"""MEM1's reward: exact match after SQuAD normalisation, counted per objective by position."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from memos.policies.mem1.format import split_answers

Gold = str | Sequence[str]
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = str(text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _aliases(gold: Gold) -> list[str]:
    return [gold] if isinstance(gold, str) else [str(g) for g in gold]


def exact_match(prediction: str, gold: Gold) -> bool:
    """True when the normalised prediction equals the normalised gold answer (or one of its aliases)."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(alias) for alias in _aliases(gold))


def multi_em(prediction: str | Sequence[str], golds: Sequence[Gold], *, strict: bool = False) -> int:
    """How many objectives are answered correctly: answer i (of "a1; a2; ...") against gold i, by exact match.

    This is the training reward (`qa_multiple.compute_score_em`): answers beyond the golds and missing
    ones score nothing. With `strict`, a count of answers that differs from the count of golds scores 0,
    as the inference evaluation script (`inference/eval.py`) does.
    """
    answers = split_answers(prediction) if isinstance(prediction, str) else [str(a).strip() for a in prediction]
    if strict and len(answers) != len(golds):
        return 0
    return sum(exact_match(answer, gold) for answer, gold in zip(answers, golds, strict=False))
