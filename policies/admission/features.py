"""Cheap features of an incoming turn, computed online from the turn and the turns seen before it.

Every feature depends only on the turn and on earlier turns of the same input (stored or not), never
on earlier admission decisions: a conversation's features are computed once and shared by training,
evaluation and the live policy, which all see exactly the same numbers.

Counts are log1p-compressed so one long turn does not dominate a linear score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from memos.embed import HashingEmbedder

#: feature names, in the order of a feature vector
FEATURES = (
    "novelty",  # 1 - max cosine (hashing embedder) to any earlier turn; 1 for the first turn
    "new_words",  # share of the turn's content words never seen earlier in the input
    "entities",  # log1p(capitalised words that are not sentence-initial, "I" or a speaker's name)
    "numbers",  # log1p(tokens with a digit, and number words)
    "dates",  # log1p(date and time words: months, weekdays, yesterday, last week, ...)
    "main_speaker",  # 1 when the speaker is the input's first speaker (the main user), else 0
    "length",  # log1p(word count of the turn's body)
    "question",  # 1 when the body contains '?'
    "position",  # log1p(index of the turn within its session, 0-based)
    "image",  # 1 when the turn shares an image
    "first_person",  # log1p(I, me, my, we, our, ... count): a statement about oneself
    "chitchat",  # log1p(greeting, thanks and praise words): small talk
    "reply",  # 1 when the previous turn, by another speaker, asked a question: this turn likely answers it
)
NUM_FEATURES = len(FEATURES)

_WORD = re.compile(r"[A-Za-z0-9']+")
_CAPITALISED = re.compile(r"^[A-Z][a-zA-Z'-]*$")
_SENTENCE_END = re.compile(r"[.!?]$")
_IMAGE = re.compile(r"\s*\[shares an image: [^\]]*\]\s*$")


def words_of(text: str) -> frozenset[str]:
    """The whitespace-separated words of a word list."""
    return frozenset(text.split())


_STOPWORDS = words_of(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just let me more most my myself
    no nor not now of off on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    yourselves i'm it's that's you're i've i'd i'll we're don't can't didn't"""
)
_NUMBER_WORDS = words_of(
    """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
    first second third fourth fifth once twice dozen couple"""
)
_DATE_WORDS = words_of(
    """january february march april may june july august september october november december jan feb mar apr
    jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday weekend week
    weeks month months year years yesterday today tonight tomorrow ago last next recently since morning
    afternoon evening night summer winter spring autumn fall birthday anniversary christmas holiday holidays"""
)
_FIRST_PERSON = words_of("i me my mine myself we us our ours ourselves i'm i've i'd i'll we're we've")
_CHITCHAT = words_of(
    """hi hey hello bye goodbye thanks thank wow awesome amazing great cool nice glad love lovely congrats
    congratulations haha lol sounds totally definitely absolutely"""
)


@dataclass(frozen=True)
class Turn:
    """One incoming page: its text and, when known, who said it, in which session, and its id."""

    text: str
    speaker: str | None = None
    session: str | None = None
    #: the source's id for the turn (LoCoMo's dia_id); not a feature, kept for scoring
    turn_id: str | None = None


def split_body(turn: Turn) -> tuple[str, bool]:
    """The turn's own words (without a leading 'Speaker: ' and a trailing image note), and whether it shares one."""
    body = turn.text
    if turn.speaker and body.startswith(f"{turn.speaker}:"):
        body = body[len(turn.speaker) + 1 :]
    image = _IMAGE.search(body)
    if image:
        body = body[: image.start()]
    return body.strip(), image is not None


class FeatureExtractor:
    """Features of each turn given the turns added before it (call `add` in input order)."""

    def __init__(self, dim: int = 256) -> None:
        self.embedder = HashingEmbedder(dim)
        # rows 0..num_turns-1 hold the unit vectors of the turns added so far; grown by doubling
        self._vectors = np.zeros((64, dim), dtype=np.float32)
        #: turns added so far
        self.num_turns = 0
        # every content word of the turns added so far
        self._seen_words: set[str] = set()
        # speakers in order of first appearance; the first is the main user
        self._speakers: list[str] = []
        # the session of the last turn added, and how many turns of it came before the next one
        self._session: str | None = None
        self._position = 0
        # the speaker of the last turn added and whether it asked a question
        self._last_speaker: str | None = None
        self._last_asked = False

    def reset(self) -> None:
        """Forget every turn (a new input starts)."""
        self._vectors[:] = 0.0
        self.num_turns = 0
        self._seen_words = set()
        self._speakers = []
        self._session = None
        self._position = 0
        self._last_speaker = None
        self._last_asked = False

    def add(self, turn: Turn) -> np.ndarray:
        """This turn's feature vector (float32, in FEATURES order); the turn then counts as seen."""
        if turn.speaker and turn.speaker not in self._speakers:
            self._speakers.append(turn.speaker)
        if self.num_turns and turn.session != self._session:
            self._position = 0
        self._session = turn.session
        body, image = split_body(turn)
        tokens = _WORD.findall(body)
        lowered = [t.lower() for t in tokens]
        content = [w for w in lowered if w not in _STOPWORDS]
        vector = self.embedder.embed([turn.text])[0]
        # the first turn is all new; later ones are as new as they are far from the closest earlier turn
        novelty = 1.0 - float(np.max(self._vectors[: self.num_turns] @ vector)) if self.num_turns else 1.0
        unique = set(content)
        new_words = len(unique - self._seen_words) / len(unique) if unique else 0.0
        speakers = {s.lower() for s in self._speakers}
        features = np.array(
            [
                max(0.0, novelty),
                new_words,
                _log_count(_entities(body, speakers)),
                _log_count(sum(1 for t in lowered if any(c.isdigit() for c in t) or t in _NUMBER_WORDS)),
                _log_count(sum(1 for t in lowered if t in _DATE_WORDS)),
                1.0 if self._speakers and turn.speaker == self._speakers[0] else 0.0,
                _log_count(len(tokens)),
                1.0 if "?" in body else 0.0,
                _log_count(self._position),
                1.0 if image else 0.0,
                _log_count(sum(1 for t in lowered if t in _FIRST_PERSON)),
                _log_count(sum(1 for t in lowered if t in _CHITCHAT)),
                1.0 if self._last_asked and self._position > 0 and turn.speaker != self._last_speaker else 0.0,
            ],
            dtype=np.float32,
        )
        self._remember(vector, unique)
        self._last_speaker, self._last_asked = turn.speaker, "?" in body
        return features

    def _remember(self, vector: np.ndarray, unique: set[str]) -> None:
        if self.num_turns == len(self._vectors):
            self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
        self._vectors[self.num_turns] = vector
        self.num_turns += 1
        self._seen_words |= unique
        self._position += 1


def _entities(body: str, speakers: set[str]) -> int:
    """Capitalised words that do not start a sentence, are not 'I' and are not a speaker's name."""
    count = 0
    sentence_start = True
    for raw in body.split():
        word = raw.strip("\"'()[],;:!?.")
        if word and not sentence_start and _CAPITALISED.match(word):
            name = word.split("'")[0].lower()
            if word != "I" and not word.startswith("I'") and name not in speakers:
                count += 1
        sentence_start = bool(_SENTENCE_END.search(raw))
    return count


def _log_count(n: int) -> float:
    return math.log1p(n)


def features_of(turns: Iterable[Turn], dim: int = 256) -> np.ndarray:
    """The feature matrix (turns x FEATURES) of one input, each turn seen after the ones before it."""
    extractor = FeatureExtractor(dim)
    rows = [extractor.add(turn) for turn in turns]
    return np.stack(rows) if rows else np.zeros((0, NUM_FEATURES), dtype=np.float32)


def feature_dict(row: Sequence[float]) -> dict[str, float]:
    """A feature vector as {name: value}."""
    return dict(zip(FEATURES, (float(v) for v in row), strict=True))
