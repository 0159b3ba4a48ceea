"""The scheduler: builds the working set for one request — the cubes chosen, why, packed into a token budget.

Candidates come from every level (short-term pages, mid-term pages including paged-out ones, long-term
knowledge) through both indexes. Each candidate is scored on one scale: z-normalised dense and lexical
relevance (the lexical side also matches a page by the turn it answers), the strength of its group (its
mid-term segment, or its conversation session while it is still short-term: the mean of the group's
best few candidates, MemoryOS's segment-then-page retrieval in one pass), its conversation neighbours,
the speaker the query names, heat, recency and — for questions about *when* — having an event time.
Near-duplicates are dropped (MMR), then items are packed greedily into the budget and ordered for the
prompt: profile, long-term knowledge, older memories by date, the recent conversation last.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from memos.cube import Kind, Level, MemCube, Namespace, Status, ns_path
from memos.retrieval import dense_candidates
from memos.storage.catalog import SEARCHABLE, CubeFilter
from memos.tokens import Tokenizer

if TYPE_CHECKING:
    from memos.kernel import MemOS

#: questions about *when* something happened
_TEMPORAL = re.compile(
    r"\b(when|what (?:date|day|time|year|month|week)|which (?:date|day|year|month|week)|how long (?:ago|before|after)"
    r"|how many (?:days|weeks|months|years) (?:ago|before|after|since)|since when|until when)\b",
    re.IGNORECASE,
)
#: long-term labels and the prompt section each goes to
SECTIONS = {
    "activation": "Long-lived memories",
    "profile": "User profile",
    "knowledge": "Long-term knowledge",
    "memory": "Relevant memories",
    "recent": "Recent conversation",
}
_ORDER = ("activation", "profile", "knowledge", "memory", "recent")


class SchedulerConfig(BaseModel):
    """Weights of the working-set score (z-score units) and the candidate pool size."""

    model_config = ConfigDict(extra="forbid")

    #: candidates taken from each index (dense, lexical)
    pool: int = Field(default=100, ge=1, le=2000)
    dense: float = 1.0
    lexical: float = 1.0
    #: weight of the lexical `context` column (the turn a page follows) against the page's own text
    lexical_context: float = 0.5
    #: strength of the candidate's segment (or session): the mean of its best `group_top` base scores
    group: float = 0.5
    group_top: int = Field(default=3, ge=1)
    #: the same, grouping by conversation session (provenance.session_id) whatever the page's level
    session: float = 1.0
    #: the lowest the group terms together may go (None: no floor): a weak group need not sink a strong page
    group_floor: float | None = 0.0
    #: the best score among a page's conversation neighbours (the page before and after it)
    neighbour: float = 0.4
    #: bonus when the query names the page's speaker
    speaker: float = 0.6
    #: bonus scaled by heat / (heat + tau) of the page's segment
    heat: float = 0.1
    heat_tau: float = 5.0
    #: bonus scaled by exp(-age / recency_days)
    recency: float = 0.1
    recency_days: float = 30.0
    #: bonus for cubes with an event time when the query asks *when*
    temporal: float = 0.3
    #: MMR: penalty per unit of the highest cosine to an item already chosen
    mmr: float = 0.5
    #: items at least this similar to one already chosen are dropped as duplicates
    duplicate_cosine: float = 0.97


@dataclass
class WorkingItem:
    """One cube in a working set and why it is there."""

    cube: MemCube
    #: final score (higher is better) and its parts, by name
    score: float
    why: dict[str, float]
    #: prompt section: activation (the namespace's block), profile, knowledge, memory or recent
    section: str
    #: the page ids this item stands for (itself for a page; its sources for a derived cube)
    carries: list[str]
    heat: float = 0.0
    segment: str | None = None
    #: tokens of its rendered line
    tokens: int = 0
    line: str = ""

    @property
    def level(self) -> Level:
        """The cube's level."""
        return self.cube.level


@dataclass
class WorkingSet:
    """The memory handed to one LLM call: items packed into a token budget, in prompt order."""

    namespace: Namespace
    query: str
    budget_tokens: int
    #: the packed items in prompt order
    items: list[WorkingItem] = field(default_factory=list)
    #: every candidate after de-duplication, best first (items is a budgeted subset of it)
    ranked: list[WorkingItem] = field(default_factory=list)
    temporal: bool = False
    #: tokens of render(), counted with the kernel's tokenizer; never above budget_tokens
    tokens: int = 0
    #: segments paged back in because this request needed them
    paged_in: list[str] = field(default_factory=list)
    #: the namespace's activation block used as the prompt's stable prefix (its sources are the
    #: items of section "activation"); None when the active model has no usable block
    activation: MemCube | None = None
    #: the system message the block stands for (the stable prefix); "" without a block
    system: str = ""
    #: parametric cubes (LoRA adapters) to activate for this request on the active model
    adapters: list[MemCube] = field(default_factory=list)

    def render(self) -> str:
        """The working set as prompt text: sections in order, one dated line per item."""
        return render_items(self.items)

    def render_rest(self) -> str:
        """The items outside the activation block, as prompt text (what follows the stable prefix)."""
        return render_items([item for item in self.items if item.section != "activation"])

    def __len__(self) -> int:
        return len(self.items)


def render_items(items: Sequence[WorkingItem]) -> str:
    """Prompt text for items already in prompt order."""
    parts: list[str] = []
    current = None
    for item in items:
        if item.section != current:
            current = item.section
            parts.append(f"## {SECTIONS[current]}")
        parts.append(item.line or render_line(item.cube))
    return "\n".join(parts)


def is_temporal(query: str) -> bool:
    """Whether the query asks when something happened."""
    return bool(_TEMPORAL.search(query))


def format_date(when: datetime | None) -> str:
    """A date as '8 May 2023' ('' for None)."""
    return f"{when.day} {when:%B %Y}" if when else ""


def render_line(cube: MemCube) -> str:
    """One item as a prompt line: its date in brackets, then its text on one line."""
    text = " ".join(cube.text.split())
    if cube.header.labels.get("type") == "profile":
        return text  # a profile is about the person, not dated by when it was last rewritten
    date = format_date(cube.header.event_time or cube.header.created_at)
    return f"[{date}] {text}" if date else text


def section_of(cube: MemCube) -> str:
    """The prompt section a cube belongs to."""
    kind = cube.header.labels.get("type", "")
    if kind == "profile":
        return "profile"
    if cube.level == Level.long:
        return "knowledge"
    if cube.level == Level.short:
        return "recent"
    return "memory"


def carried_pages(cube: MemCube) -> list[str]:
    """The page ids a cube stands for: its sources or derivation, else itself."""
    if cube.sources:
        return list(cube.sources)
    if cube.level == Level.long and cube.header.provenance.derived_from:
        return list(cube.header.provenance.derived_from)
    return [cube.id]


def _z(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    std = float(values.std())
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


@dataclass
class Scorer:
    """Ranks the candidates of one request; pure given the inputs (the kernel gathers them)."""

    config: SchedulerConfig
    now: datetime

    def rank(
        self,
        query: str,
        cubes: Mapping[str, MemCube],
        dense: Mapping[str, float],
        lexical: Mapping[str, float],
        vectors: Mapping[str, np.ndarray],
        heat: Mapping[str, float],
    ) -> list[WorkingItem]:
        """Score every candidate, drop duplicates, return best first."""
        cfg = self.config
        ids = sorted(cubes)
        if not ids:
            return []
        floor = min(dense.values()) if dense else 0.0
        dense_raw = np.array([dense.get(i, floor) for i in ids])
        lexical_raw = np.array([lexical.get(i, 0.0) for i in ids])
        base = cfg.dense * _z(dense_raw) + cfg.lexical * _z(lexical_raw)
        index = {cube_id: n for n, cube_id in enumerate(ids)}

        group = cfg.group * _z(_group_strength(base, [_group_key(cubes[i]) for i in ids], cfg.group_top))
        if cfg.session:
            group = group + cfg.session * _z(
                _group_strength(base, [_session_key(cubes[i]) for i in ids], cfg.group_top)
            )
        if cfg.group_floor is not None:
            group = np.maximum(group, cfg.group_floor)
        score = base + group

        # conversation neighbours: the page before (preceded_by) and the pages after it among the candidates
        neighbours: dict[int, list[int]] = defaultdict(list)
        for n, cube_id in enumerate(ids):
            prev = cubes[cube_id].header.provenance.preceded_by
            if prev is not None and prev in index:
                neighbours[n].append(index[prev])
                neighbours[index[prev]].append(n)
        low = float(score.min())
        neighbour = np.array(
            [cfg.neighbour * max([float(score[m]) for m in neighbours[n]] + [low]) for n in range(len(ids))]
        )

        named = _named_speakers(query, [cubes[i].header.provenance.speaker for i in ids])
        temporal = is_temporal(query)
        items: list[WorkingItem] = []
        for n, cube_id in enumerate(ids):
            cube = cubes[cube_id]
            if cube.header.labels.get("type") in ("segment", "profile"):
                # segments lend their pages strength through the group score; the pages are the items.
                # The profile is packed first on its own, whatever the query.
                continue
            segment = cube.header.labels.get("segment")
            h = heat.get(segment, 0.0) if segment else 0.0
            when = cube.header.event_time or cube.header.created_at
            age_days = max((self.now - when).total_seconds(), 0.0) / 86_400
            why = {
                "dense": float(dense_raw[n]),
                "lexical": float(lexical_raw[n]),
                "relevance": float(base[n]),
                "group": float(group[n]),
                "neighbour": float(neighbour[n]),
                "speaker": cfg.speaker if cube.header.provenance.speaker in named else 0.0,
                "heat": cfg.heat * h / (h + cfg.heat_tau) if h > 0 else 0.0,
                "recency": cfg.recency * math.exp(-age_days / cfg.recency_days),
                "temporal": cfg.temporal if temporal and cube.header.event_time is not None else 0.0,
            }
            total = why["relevance"] + sum(
                why[k] for k in ("group", "neighbour", "speaker", "heat", "recency", "temporal")
            )
            items.append(
                WorkingItem(
                    cube=cube,
                    score=total,
                    why=why,
                    section=section_of(cube),
                    carries=carried_pages(cube),
                    heat=h,
                    segment=segment,
                )
            )
        items.sort(key=lambda it: (-it.score, it.cube.id))
        return self._deduplicate(items, vectors)

    def _deduplicate(self, items: list[WorkingItem], vectors: Mapping[str, np.ndarray]) -> list[WorkingItem]:
        """Greedy MMR: repeatedly take the best score minus `mmr` x the highest cosine to what is chosen.

        An item whose pages are all carried by chosen items, or that is a near copy of one, is dropped.
        """
        cfg = self.config
        if not items:
            return []
        dim = next((len(v) for v in vectors.values()), 0)
        matrix = np.zeros((len(items), dim), dtype=np.float32)
        has_vector = np.zeros(len(items), dtype=bool)
        for n, item in enumerate(items):
            vector = vectors.get(item.cube.id)
            if vector is not None:
                matrix[n] = vector
                has_vector[n] = True
        scores = np.array([item.score for item in items])
        redundancy = np.zeros(len(items))
        alive = np.ones(len(items), dtype=bool)
        chosen: list[WorkingItem] = []
        covered: set[str] = set()
        while alive.any():
            value = np.where(alive, scores - cfg.mmr * np.maximum(redundancy, 0.0), -np.inf)
            best = int(np.argmax(value))  # first of equals: items come sorted by (score, id)
            alive[best] = False
            item = items[best]
            if set(item.carries) <= covered or redundancy[best] >= cfg.duplicate_cosine:
                continue
            item.why["redundancy"] = float(redundancy[best])
            chosen.append(item)
            covered.update(item.carries)
            if has_vector[best]:
                redundancy = np.maximum(redundancy, np.where(has_vector, matrix @ matrix[best], 0.0))
        return chosen


def _group_strength(base: np.ndarray, keys: Sequence[str | None], top: int) -> np.ndarray:
    """Per candidate: the mean of the best `top` base scores in its group (its own score when it has none)."""
    members: dict[str, list[int]] = defaultdict(list)
    for n, key in enumerate(keys):
        if key is not None:
            members[key].append(n)
    out = base.copy()
    for group in members.values():
        out[group] = np.sort(base[group])[::-1][:top].mean()
    return out


def _session_key(cube: MemCube) -> str | None:
    session = cube.header.provenance.session_id
    return f"{ns_path(cube.namespace)}:{session}" if session and cube.level != Level.long else None


def _group_key(cube: MemCube) -> str | None:
    if cube.header.labels.get("type") == "segment":
        # a segment's own summary match counts toward its pages' group
        return f"segment:{cube.id}"
    segment = cube.header.labels.get("segment")
    if segment:
        return f"segment:{segment}"
    session = _session_key(cube)
    return f"session:{session}" if session else None


def _named_speakers(query: str, speakers: Sequence[str | None]) -> set[str]:
    """The speakers whose name appears in the query as a whole word (case-insensitive)."""
    named: set[str] = set()
    lowered = query.lower()
    for speaker in {s for s in speakers if s}:
        if re.search(rf"(?<!\w){re.escape(speaker.lower())}(?!\w)", lowered):
            named.add(speaker)
    return named


def pack(ranked: Sequence[WorkingItem], budget: int, tokenizer: Tokenizer) -> tuple[list[WorkingItem], int]:
    """Greedily take the best items that fit, in prompt order; return them and the rendered token count.

    Each item costs its line plus a newline; a section header is paid for when its first item comes in.
    The rendered text is then counted as a whole and the weakest items dropped until it fits, so the
    result never exceeds the budget whatever the tokenizer does at line joins.
    """
    header_cost = {s: tokenizer.count(f"## {title}") + 1 for s, title in SECTIONS.items()}
    spent = 0
    taken: list[WorkingItem] = []
    sections: set[str] = set()
    for item in ranked:
        if not item.line:
            item.line = render_line(item.cube)
            item.tokens = tokenizer.count(item.line)
        cost = item.tokens + 1 + (header_cost[item.section] if item.section not in sections else 0)
        if spent + cost > budget:
            continue
        spent += cost
        taken.append(item)
        sections.add(item.section)
    while taken:
        ordered = prompt_order(taken)
        total = tokenizer.count(render_items(ordered))
        if total <= budget:
            return ordered, total
        taken.remove(min(taken, key=lambda it: (it.score, it.cube.id)))
    return [], 0


def prompt_order(items: Sequence[WorkingItem]) -> list[WorkingItem]:
    """Sections in prompt order; inside memory and recent sections, by date (oldest first), else by score."""

    def key(item: WorkingItem) -> tuple[int, float, float, str]:
        section = _ORDER.index(item.section)
        if item.section in ("memory", "recent"):
            when = item.cube.header.event_time or item.cube.header.created_at
            return section, when.timestamp(), item.cube.header.created_at.timestamp(), item.cube.id
        return section, -item.score, 0.0, item.cube.id

    return sorted(items, key=key)


class Scheduler:
    """Builds working sets for a kernel: gathers candidates, ranks, packs, and records the use."""

    def __init__(self, mos: MemOS, config: SchedulerConfig | None = None) -> None:
        self.mos = mos
        self.config = config or SchedulerConfig()

    def context(
        self, user: str, ns: Namespace, query: str, budget_tokens: int, *, pool: int | None = None
    ) -> WorkingSet:
        """The working set for one request by `user` under `ns` (rights already checked by the caller)."""
        mos = self.mos
        cfg = self.config if pool is None else self.config.model_copy(update={"pool": pool})
        now = mos.clock.now()
        flt = CubeFilter(
            prefixes=mos.governance.readable_prefixes(user, ns),
            kinds=[Kind.plaintext.value],
            statuses=SEARCHABLE,
            now=now,
        )
        query_vector = mos.embedder.embed([query])[0]
        dense = dict(dense_candidates(mos.catalog, mos.vectors, query_vector, flt, cfg.pool))
        lexical = dict(mos.catalog.lexical_local(query, flt, cfg.pool, context_weight=cfg.lexical_context))
        cubes = mos.catalog.get(sorted(set(dense) | set(lexical)))
        vectors = mos.vectors.get(sorted(cubes))
        # exact cosines for the lexical-only candidates too, so both lists score every candidate
        for cube_id, vector in vectors.items():
            dense.setdefault(cube_id, float(vector @ query_vector))
        segments = {c.header.labels["segment"] for c in cubes.values() if c.header.labels.get("segment")}
        heat = mos.pager.heat_of(sorted(segments), now) if segments else {}
        ranked = Scorer(cfg, now).rank(query, cubes, dense, lexical, vectors, heat)

        profile = [
            _profile_item(c)
            for c in mos.catalog.select(
                CubeFilter(prefixes=flt.prefixes, levels=[Level.long.value], labels={"type": "profile"}), limit=1
            )
        ]
        block, system, block_items = self._block(ns, budget_tokens)
        held = {item.cube.id for item in block_items}
        rest = [item for item in profile + ranked if not set(item.carries or [item.cube.id]) <= held]
        block_cost = mos.tokenizer.count(render_items(block_items)) + 1 if block_items else 0
        packed, tokens = pack(rest, budget_tokens - block_cost, mos.tokenizer)
        if block_items:
            # the join of the block and the rest is counted as a whole: drop the weakest until it fits
            while packed and mos.tokenizer.count(render_items(block_items + packed)) > budget_tokens:
                packed.remove(min(packed, key=lambda it: (it.score, it.cube.id)))
            tokens = mos.tokenizer.count(render_items(block_items + packed))
        items = block_items + packed
        working = WorkingSet(
            namespace=ns,
            query=query,
            budget_tokens=budget_tokens,
            items=items,
            ranked=ranked,
            temporal=is_temporal(query),
            tokens=tokens,
            activation=block,
            system=system,
            adapters=mos.adapters.usable(ns_path(ns)),
        )
        self._record_use(working, now)
        return working

    def _block(self, ns: Namespace, budget_tokens: int) -> tuple[MemCube | None, str, list[WorkingItem]]:
        """The namespace's usable activation block, its system text and its items; none if over the budget."""
        mos = self.mos
        found = mos.activation.usable(ns_path(ns))
        if found is None:
            return None, "", []
        cube, sources, system = found
        items = []
        for source in sources:
            line = render_line(source)
            items.append(
                WorkingItem(
                    cube=source,
                    score=math.inf,
                    why={"activation": 1.0},
                    section="activation",
                    carries=[source.id],
                    line=line,
                    tokens=mos.tokenizer.count(line),
                )
            )
        if mos.tokenizer.count(render_items(items)) > budget_tokens:
            return None, "", []
        return cube, system, items

    def _record_use(self, working: WorkingSet, now: datetime) -> None:
        """Each use counts: access counters, segment visits (heat), and paging back in what was paged out."""
        mos = self.mos
        used = [item.cube for item in working.items]
        if not used:
            return
        extra = [working.activation.id] if working.activation is not None else []
        mos.catalog.touch([c.id for c in used] + extra + [a.id for a in working.adapters], now)
        archived = [c.id for c in used if c.status == Status.archived]
        if archived:
            working.paged_in = mos.pager.page_in(archived)
        segments = sorted({item.segment for item in working.items if item.segment} - set(working.paged_in))
        if segments:
            mos.pager.visit(segments, now)


def _profile_item(cube: MemCube) -> WorkingItem:
    return WorkingItem(cube=cube, score=math.inf, why={"profile": 1.0}, section="profile", carries=[])
