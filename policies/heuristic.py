"""The `heuristic` memory policy: store each chunk unless it says too little or repeats what is stored.

No model involved. A chunk is skipped when it has fewer than `min_words` words or only filler
("ok", "thanks", "haha"), or when its word set overlaps (Jaccard) at least `max_jaccard` with one of
the last `window` texts this policy stored in the namespace, or with one of the best `recall_k`
matches recall finds there (so memories written before this run count too). Conversational turns (a speaker or a
session) go to short-term memory, where paging consolidates them; everything else to long-term.
This module is also the plugin that registers it (entry point `heuristic`).
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING

from memos.cube import Level, Namespace, ns_path
from memos.hooks import Register, hookimpl
from memos.policy import MemoryOp, Observation, OpKind, Policy

if TYPE_CHECKING:
    from memos.kernel import Session

_WORD = re.compile(r"\w+", re.UNICODE)
#: words that carry nothing worth remembering on their own
# fmt: off
FILLER = frozenset({
    "ok", "okay", "k", "kk", "sure", "yes", "yeah", "yep", "yup", "no", "nope", "thanks", "thank", "thx", "ty",
    "you", "welcome", "hi", "hello", "hey", "bye", "goodbye", "cya", "lol", "haha", "hahaha", "hmm", "hm", "oh",
    "ah", "uh", "um", "wow", "cool", "great", "nice", "awesome", "right", "alright", "fine", "good", "got", "it",
    "see", "so", "much", "very", "too",
})
# fmt: on
#: provenance fields an observation's metadata may carry into the cube it becomes
_PROVENANCE_KEYS = ("session_id", "turn_id", "external_id")


def words(text: str) -> frozenset[str]:
    """The set of lower-cased words in a text."""
    return frozenset(word.lower() for word in _WORD.findall(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class HeuristicPolicy(Policy):
    """Insert every observation that is neither filler nor a near-duplicate of what the namespace holds."""

    name = "heuristic"

    def __init__(self, min_words: int = 3, max_jaccard: float = 0.9, window: int = 256, recall_k: int = 3) -> None:
        self.min_words = min_words
        self.max_jaccard = max_jaccard
        self.window = window
        self.recall_k = recall_k
        # invariant: per namespace path, the word sets of at most `window` texts inserted, newest last
        self._recent: dict[str, deque[frozenset[str]]] = {}

    def reset(self) -> None:
        """Forget the recently inserted texts."""
        self._recent.clear()

    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """One insert for a chunk worth keeping, none otherwise."""
        body = _without_speaker(observation)
        body_words = _WORD.findall(body.lower())
        if len(body_words) < self.min_words or all(word in FILLER for word in body_words):
            return []
        seen = words(observation.text)
        recent = self._recent.setdefault(ns_path(namespace), deque(maxlen=self.window))
        if any(jaccard(seen, other) >= self.max_jaccard for other in recent):
            return []
        # a few hits, not one: a summary or knowledge cube paging made from the same words may rank first
        hits = session.recall(namespace, observation.text, self.recall_k)
        if any(jaccard(seen, words(hit.cube.text)) >= self.max_jaccard for hit in hits):
            return []
        recent.append(seen)
        conversational = observation.speaker is not None or observation.metadata.get("session_id") is not None
        provenance = {key: str(observation.metadata[key]) for key in _PROVENANCE_KEYS if observation.metadata.get(key)}
        if observation.speaker is not None:
            provenance["speaker"] = observation.speaker
        return [
            MemoryOp(
                OpKind.insert,
                text=observation.text,
                level=Level.short if conversational else Level.long,
                labels={"policy": self.name},
                provenance=provenance,
                event_time=observation.metadata.get("date"),
            )
        ]


def _without_speaker(observation: Observation) -> str:
    """The chunk's text without a leading 'speaker: ' (filler is judged on what was said)."""
    prefix = f"{observation.speaker}: " if observation.speaker else None
    if prefix and observation.text.startswith(prefix):
        return observation.text[len(prefix) :]
    return observation.text


@hookimpl
def memos_register_policies(register: Register) -> None:
    """Register the heuristic policy."""
    register("heuristic", HeuristicPolicy)
