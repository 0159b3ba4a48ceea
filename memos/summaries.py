"""What paging says about pages: extractive themes and profiles, and the LLM prompts and answer parsers.

Deterministic helpers (keywords, leading sentences, keyword profiles) are the fallbacks used when no
LLM is configured or its answer is unusable; the parsers read an LLM's answers leniently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from memos.cube import MemCube
from memos.storage.catalog import query_terms

if TYPE_CHECKING:
    from memos.paging import PagingConfig

#: speakers whose turns feed assistant knowledge (compared case-insensitively); any other is the user
ASSISTANT_SPEAKERS = frozenset({"assistant", "ai", "bot", "agent", "system"})
#: an LLM profile shorter than this is treated as a failed answer (MemoryOS keeps the old one)
MIN_PROFILE_CHARS = 30
#: how much of each turn an LLM prompt quotes
MAX_TURN_CHARS = 2000
PROFILE_PREFIX = "Profile (extractive):"


@dataclass(frozen=True)
class Theme:
    """A chain's (or segment's) summary and keywords."""

    summary: str
    keywords: list[str] = field(default_factory=list)
    title: str = ""


# ---- deterministic text helpers ----------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def informative_terms(text: str) -> list[str]:
    """The words of a text worth a keyword (stop words, numbers and words under 3 letters dropped), repeats kept."""
    out: list[str] = []
    for token in text.split():
        out.extend(t for t in query_terms(token) if len(t) >= 3 and not t.isdigit())
    return out


def top_keywords(texts: Iterable[str], n: int) -> list[str]:
    """The n most frequent informative terms of the texts; ties in alphabetical order."""
    counts = Counter(t for text in texts for t in informative_terms(text))
    return [term for term, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]]


def leading_sentence(text: str) -> str:
    """The first sentence of a text, whitespace collapsed."""
    flat = " ".join(text.split())
    return _SENTENCE_END.split(flat, maxsplit=1)[0] if flat else ""


def extractive_theme(texts: Sequence[str], config: PagingConfig) -> Theme:
    """Keywords = the most frequent informative terms; summary = 'Topics: ...' + leading sentences, capped."""
    keywords = top_keywords(texts, config.summary_keywords)
    parts = [f"Topics: {', '.join(keywords)}."] if keywords else []
    words = sum(len(p.split()) for p in parts)
    for text in texts:
        if words >= config.summary_words:
            break
        sentence = leading_sentence(text)
        if sentence:
            parts.append(sentence)
            words += len(sentence.split())
    summary = " ".join(" ".join(parts).split()[: config.summary_words])
    return Theme(summary=summary or " ".join(texts[0].split()[: config.summary_words]), keywords=keywords)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    norm = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a, b)) / norm if norm else 0.0


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A & B| / |A | B| of two keyword sets (0 when both are empty)."""
    left, right = set(a), set(b)
    union = left | right
    return len(left & right) / len(union) if union else 0.0


def match_score(
    theme_vector: np.ndarray, theme_keywords: Iterable[str], segment_vector: np.ndarray, segment_keywords: Iterable[str]
) -> float:
    """How well a chain's theme fits a segment: cosine of the summaries' vectors + Jaccard of the keywords."""
    return cosine(theme_vector, segment_vector) + jaccard(theme_keywords, segment_keywords)


def is_assistant(speaker: str | None) -> bool:
    """Whether a speaker name stands for the assistant side of a conversation."""
    return speaker is not None and speaker.strip().lower() in ASSISTANT_SPEAKERS


# ---- parsing what an LLM answered ---------------------------------------------------------------

_VERDICT = re.compile(r"^[\W_]*(true|false|yes|no)\b")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s*")
_HEADING = re.compile(
    r"^[\s#*_\[【(]*(user|assistant)(?:'s)?\s+(?:private\s+data|knowledge|facts)[\s*_\]】)]*:?\s*(.*)$", re.IGNORECASE
)


def parse_verdict(text: str | None) -> bool:
    """A lenient true/false answer: 'true', 'Yes.', '**True**' ... are true; anything unclear is false."""
    if not text:
        return False
    match = _VERDICT.match(text.strip().lower())
    return match is not None and match.group(1) in ("true", "yes")


def parse_theme(text: str | None) -> Theme | None:
    """A theme from an answer holding a JSON object {"theme", "keywords", "content"} (or a list of them)."""
    if not text:
        return None
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), None)
    if not isinstance(value, dict):
        return None
    content = value.get("content") or value.get("summary")
    if not isinstance(content, str) or not content.strip():
        return None
    raw = value.get("keywords", [])
    if isinstance(raw, str):
        raw = raw.split(",")
    keywords = list(dict.fromkeys(k.strip().lower() for k in raw if isinstance(k, str) and k.strip()))[:20]
    title = value.get("theme")
    return Theme(summary=content.strip(), keywords=keywords, title=title.strip() if isinstance(title, str) else "")


def parse_knowledge(text: str | None) -> tuple[list[str], list[str]] | None:
    """(user knowledge, assistant knowledge) lines under their headings; 'None' skipped; None if no heading."""
    if not text:
        return None
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        heading = _HEADING.match(line.strip())
        if heading:
            current = heading.group(1).lower()
            sections.setdefault(current, [])
            rest = heading.group(2).strip()
        elif current is None:
            continue
        else:
            rest = line.strip()
        item = _BULLET.sub("", rest).strip()
        if item and item.strip(" .!").lower() != "none":
            sections[current].append(item)
    if not sections:
        return None
    return sections.get("user", []), sections.get("assistant", [])


# ---- prompts ------------------------------------------------------------------------------------

CONTINUITY_PROMPT = (
    "TASK: continuity. You decide whether a later conversation turn continues the topic of an earlier one. "
    "Answer with one word: true or false."
)
THEME_PROMPT = (
    "TASK: theme. Summarise the conversation turns as one theme. Reply with only a JSON object: "
    '{"theme": "a short title", "keywords": ["3 to 8 lower-case keywords"], '
    '"content": "a summary in 1 to 3 sentences"}.'
)
PROFILE_PROMPT = (
    "TASK: profile. Keep a profile of the user: personality, preferences, habits, relationships, goals and "
    "skills, each with its evidence. Rewrite the whole profile from the current one and the new "
    "conversation. Reply with the profile text only."
)
KNOWLEDGE_PROMPT = (
    "TASK: knowledge. Extract durable facts from the conversation. Reply in exactly this format:\n"
    "User knowledge:\n- one fact about the user per line\n"
    "Assistant knowledge:\n- one thing the assistant stated, did or committed to per line\n"
    "Write None under a heading that gets nothing."
)


def quote_turn(page: MemCube) -> str:
    """A turn as an LLM prompt quotes it: 'Speaker: text', capped."""
    speaker = page.header.provenance.speaker
    text = page.text[:MAX_TURN_CHARS]
    return f"{speaker}: {text}" if speaker else text


def page_body(page: MemCube) -> str:
    """A page's words without its 'Speaker: ' prefix: names say who talked, not what about."""
    speaker = page.header.provenance.speaker
    text = page.text
    if speaker and text.startswith(f"{speaker}:"):
        text = text[len(speaker) + 1 :]
    return text


def quote_turns(pages: Sequence[MemCube]) -> str:
    """Turns as a bulleted list for an LLM prompt."""
    return "\n".join(f"- {quote_turn(p)}" for p in pages)


def extractive_profile(current: str | None, pages: Sequence[MemCube], config: PagingConfig) -> str:
    """'Profile (extractive): <speaker>: top keywords; ...': new pages' terms plus the current profile's keywords."""
    previous: dict[str, list[str]] = {}
    if current is not None and current.startswith(PROFILE_PREFIX):
        for part in current[len(PROFILE_PREFIX) :].split(";"):
            speaker, _, words = part.strip().partition(": ")
            if speaker and words:
                previous[speaker] = [w.strip() for w in words.split(",") if w.strip()]
    texts: dict[str, list[str]] = {speaker: [] for speaker in previous}
    for page in pages:
        speaker = page.header.provenance.speaker
        # the profile is the user's: the assistant's side of the conversation says little about them
        if not is_assistant(speaker):
            texts.setdefault(speaker or "user", []).append(page_body(page))
    names = {informative for speaker in texts for informative in informative_terms(speaker)}
    lines = []
    for speaker, spoken in texts.items():
        counts = Counter(t for text in spoken for t in informative_terms(text) if t not in names)
        counts.update(previous.get(speaker, []))
        top = [t for t, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: config.profile_keywords]]
        if top:
            lines.append(f"{speaker}: {', '.join(top)}")
    return f"{PROFILE_PREFIX} {'; '.join(lines)}" if lines else f"{PROFILE_PREFIX} (no keywords yet)"
