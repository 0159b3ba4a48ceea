"""Okapi BM25 over lower-cased `\\w+` words: Mem-α's lexical search over one memory region."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+")
#: term-frequency saturation and length normalisation (the usual Okapi defaults)
K1 = 1.5
B = 0.75


def words(text: str) -> list[str]:
    """The lower-cased `\\w+` words of a text, in order."""
    return _WORD.findall(text.lower())


def bm25_scores(query: str, docs: Sequence[str], *, k1: float = K1, b: float = B) -> list[float]:
    """The BM25 score of each document for the query (0.0 where no query word occurs)."""
    tokenised = [words(doc) for doc in docs]
    if not tokenised:
        return []
    num_docs = len(tokenised)
    avg_len = sum(len(doc) for doc in tokenised) / num_docs or 1.0
    doc_freq: Counter[str] = Counter()
    for doc in tokenised:
        doc_freq.update(set(doc))
    terms = list(dict.fromkeys(words(query)))
    scores: list[float] = []
    for doc in tokenised:
        counts = Counter(doc)
        score = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if not tf:
                continue
            # the +1 keeps the weight positive for terms found in most documents
            idf = math.log((num_docs - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5) + 1.0)
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avg_len))
        scores.append(score)
    return scores


def bm25_top(query: str, docs: Sequence[str], k: int) -> list[int]:
    """Indices of the (at most k) documents that share a word with the query, best first, ties oldest first."""
    scores = bm25_scores(query, docs)
    ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i))
    return ranked[:k]
