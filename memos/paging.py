"""Paging: MemoryOS-style short -> mid -> long-term memory (FIFO pages, hot segments, promotion, page-out).

A page is a short-term plaintext cube (one turn). When a namespace holds more than `stm_capacity` of them,
the oldest leave short-term: they are split into chains of continuous turns, each chain gets a theme, and
joins the best-matching mid-term segment (cosine of summaries + Jaccard of keywords >= theta) or starts a
new one. A segment whose heat H = alpha*visits + beta*interactions + gamma*exp(-dt/mu) reaches tau is
promoted: its new pages feed the namespace's profile and its user/assistant knowledge (long-term). Over
`max_segments`, the coldest segments are paged out (archived, still searchable) and can be paged back in.
Nothing is ever deleted. Every step that could use an LLM has a deterministic fallback.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memos.cube import ACL, Header, Level, MemCube, Provenance, Source, Status, Usage, ns_path, parse_namespace
from memos.errors import Busy, Conflict, UserError, first_problem
from memos.ids import new_id
from memos.inputs import cube_id as check_cube_id
from memos.llm.base import LLM, Message
from memos.log import get_logger
from memos.storage.segments import (
    ASSISTANT_KNOWLEDGE,
    KNOWLEDGE_TYPES,
    PROFILE_TYPE,
    SEGMENT_LABEL,
    SEGMENT_TYPE,
    USER_KNOWLEDGE,
    SegmentState,
    SegmentStore,
)
from memos.summaries import (
    CONTINUITY_PROMPT,
    KNOWLEDGE_PROMPT,
    MIN_PROFILE_CHARS,
    PROFILE_PROMPT,
    THEME_PROMPT,
    Theme,
    cosine,
    extractive_profile,
    extractive_theme,
    is_assistant,
    match_score,
    page_body,
    parse_knowledge,
    parse_theme,
    parse_verdict,
    quote_turn,
    quote_turns,
    top_keywords,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from memos.config import Settings
    from memos.kernel import MemOS

log = get_logger("paging")

#: the actor named in the audit entries of every paging write
SYSTEM_ACTOR = "memos"


class PagingConfig(BaseModel):
    """The paging constants of MemoryOS (paper and released code differ: see PRESETS); extra keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: short-term capacity in pages, per namespace
    stm_capacity: int = Field(default=7, ge=1)
    #: a chain joins its best segment when cosine(summaries) + Jaccard(keywords) >= theta
    theta: float = 0.6
    #: heat weights: H = alpha*visits + beta*interactions + gamma*exp(-dt/mu_seconds)
    alpha: float = Field(default=1.0, ge=0)
    beta: float = Field(default=1.0, ge=0)
    gamma: float = Field(default=1.0, ge=0)
    mu_seconds: float = Field(default=1e7, gt=0)
    #: a segment at or above this heat is promoted to long-term
    tau: float = 5.0
    #: active segments per namespace; beyond it the coldest are paged out
    max_segments: int = Field(default=200, ge=1)
    #: user and assistant knowledge each keep this many active cubes per namespace (older ones archived)
    kb_capacity: int = Field(default=100, ge=1)
    #: which segment is paged out first: lowest heat ("heat", the paper) or fewest visits ("lfu", the code)
    eviction: Literal["heat", "lfu"] = "heat"
    #: without an LLM, turns without a session id are continuous when their vectors' cosine reaches this
    continuity_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
    #: keywords of an extractive summary
    summary_keywords: int = Field(default=5, ge=1, le=50)
    #: words of an extractive summary, at most
    summary_words: int = Field(default=60, ge=5)
    #: keywords per speaker in an extractive profile
    profile_keywords: int = Field(default=8, ge=1, le=50)

    def with_overrides(self, overrides: Mapping[str, Any]) -> PagingConfig:
        """A copy with some constants replaced; UserError naming the valid keys for an unknown one."""
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise UserError(
                f"unknown paging setting(s) {', '.join(unknown)}: the valid ones are "
                f"{', '.join(type(self).model_fields)} (MEMOS_PAGING or the [paging] table of memos.toml)"
            )
        try:
            return type(self).model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            where, problem = first_problem(exc, "paging")
            raise UserError(
                f"bad paging setting {where}: {problem} (MEMOS_PAGING or the [paging] table of memos.toml)"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> PagingConfig:
        """The preset named by settings.paging_preset with settings.paging's overrides applied."""
        preset = PRESETS.get(settings.paging_preset)
        if preset is None:
            raise UserError(
                f"unknown paging preset {settings.paging_preset!r}: use one of {', '.join(PRESETS)} "
                "(MEMOS_PAGING_PRESET or paging_preset in memos.toml)"
            )
        return preset.with_overrides(settings.paging)


#: "paper": the constants of the MemoryOS paper; "reference-code": those of its released package
PRESETS: dict[str, PagingConfig] = {
    "paper": PagingConfig(
        stm_capacity=7, theta=0.6, alpha=1, beta=1, gamma=1, mu_seconds=1e7, tau=5, max_segments=200, eviction="heat"
    ),
    "reference-code": PagingConfig(
        stm_capacity=10,
        theta=0.6,
        alpha=1,
        beta=1,
        gamma=1,
        mu_seconds=24 * 3600,
        tau=5,
        max_segments=2000,
        kb_capacity=100,
        eviction="lfu",
    ),
}


def heat(visits: int, interactions: int, seconds_since_visit: float, config: PagingConfig) -> float:
    """H = alpha*visits + beta*interactions + gamma*exp(-dt/mu); a negative dt (clock moved back) counts as 0."""
    elapsed = max(0.0, float(seconds_since_visit))
    return config.alpha * visits + config.beta * interactions + config.gamma * math.exp(-elapsed / config.mu_seconds)


@dataclass
class PagingReport:
    """What one paging run did."""

    #: pages that left short-term for a segment
    moved: int = 0
    segments_created: int = 0
    #: chains merged into an existing segment
    merged: int = 0
    #: segments promoted to long-term
    promoted: int = 0
    #: user and assistant knowledge cubes written
    knowledge_written: int = 0
    #: segments paged out
    paged_out: int = 0
    #: knowledge cubes archived by their FIFO
    archived: int = 0


@dataclass(frozen=True)
class SegmentInfo:
    """A segment as `hottest` shows it."""

    id: str
    ns: str
    heat: float
    visits: int
    interactions: int
    #: number of pages in it
    pages: int
    paged_out: bool
    #: the start of its summary
    summary: str


# ---- the pager ----------------------------------------------------------------------------------


#: how many of a segment's latest pages an extractive summary is recomputed from on a merge
MERGE_CONTEXT_PAGES = 40


class Pager:
    """Moves pages short -> mid -> long-term, keeps segment heat, pages segments out and in.

    Concurrency: decisions (and LLM calls) are made outside the kernel's write lock, then each commit
    re-reads what it changes under the lock and skips a chain or promotion whose inputs moved meanwhile
    (the next run redoes it), so concurrent writers, runs and other processes never lose or duplicate a
    page. Never call `wait` or `close` while holding `mos._write_lock`: the worker may need it to finish.
    """

    def __init__(self, mos: MemOS, config: PagingConfig | None = None, llm: LLM | None = None) -> None:
        self.mos = mos
        self.config = config or PagingConfig.from_settings(mos.settings)
        self.llm = llm
        self.store = SegmentStore(mos.catalog)
        # background worker state, guarded by _cond
        self._cond = threading.Condition()
        self._queue: dict[str, None] = {}
        self._busy = False
        self._closed = False
        self._worker: threading.Thread | None = None

    # ---- the paging run ----------------------------------------------------------------------

    def run(self, namespaces: Sequence[str | Sequence[str]] | None = None) -> PagingReport:
        """Page the given namespaces (paths), or every one with overflowing short-term or active segments."""
        report = PagingReport()
        if namespaces is None:
            cap = self.config.stm_capacity
            targets = sorted(set(self.store.overflow_namespaces(cap)) | set(self.store.namespaces()))
        else:
            targets = list(dict.fromkeys(_path(ns) for ns in namespaces))
        for ns in targets:
            try:
                self._run_namespace(ns, report)
            except (Conflict, Busy) as exc:
                # another process paged this namespace at the same time and committed first (or the database
                # broke a deadlock with it): what it did stands, and the next run pages what is left here
                log.info("paging skipped a namespace another process changed meanwhile", ns=ns, error=str(exc))
        return report

    def _run_namespace(self, ns: str, report: PagingReport) -> None:
        leaving = self.store.overflow_pages(ns, self.config.stm_capacity)
        if leaving:
            vectors = self._vectors(leaving)
            # segment id -> its summary's vector, for this run (saves re-reading or re-embedding per chain)
            summaries: dict[str, np.ndarray] = {}
            for chain in self._chains(leaving, vectors):
                self._place(ns, chain, vectors, summaries, report)
        self._promote_hot(ns, report)
        if len(self.store.in_namespace(ns)) > self.config.max_segments:
            with self.mos._write_lock:
                self._page_out(ns, report, keep=frozenset())

    # ---- continuity and themes ---------------------------------------------------------------

    def _chains(self, pages: Sequence[MemCube], vectors: Mapping[str, np.ndarray]) -> list[list[MemCube]]:
        chains = [[pages[0]]]
        for earlier, later in pairwise(pages):
            if self._continuous(earlier, later, vectors):
                chains[-1].append(later)
            else:
                chains.append([later])
        return chains

    def _continuous(self, earlier: MemCube, later: MemCube, vectors: Mapping[str, np.ndarray]) -> bool:
        if self.llm is not None:
            answer = self._ask(
                CONTINUITY_PROMPT,
                f"Earlier turn:\n{quote_turn(earlier)}\n\nLater turn:\n{quote_turn(later)}",
                max_tokens=5,
            )
            if answer is not None:
                return parse_verdict(answer)
        first, second = earlier.header.provenance.session_id, later.header.provenance.session_id
        if first is not None and second is not None:
            return first == second
        return cosine(vectors[earlier.id], vectors[later.id]) >= self.config.continuity_threshold

    def _theme(self, pages: Sequence[MemCube], *, merged_into: MemCube | None = None) -> Theme:
        """The theme of new pages; when merging, of the segment's summary plus them."""
        if self.llm is not None:
            prompt = f"Turns:\n{quote_turns(pages)}"
            if merged_into is not None:
                prompt = f"Existing summary:\n{merged_into.text}\n\nNew turns:\n{quote_turns(pages)}"
            theme = parse_theme(self._ask(THEME_PROMPT, prompt, max_tokens=400))
            if theme is not None:
                limit = self.mos.settings.max_text_chars
                keywords = theme.keywords or top_keywords([theme.summary], self.config.summary_keywords)
                return Theme(summary=theme.summary[:limit], keywords=keywords, title=theme.title)
            log.info("LLM theme unusable; using the extractive summary", pages=len(pages))
        texts = [page_body(p) for p in pages]
        if merged_into is not None:
            # the segment's most recent pages: bounded work per merge however large the segment grows
            recent = merged_into.sources[-MERGE_CONTEXT_PAGES:]
            earlier = self.mos.catalog.get(recent)
            texts = [page_body(earlier[i]) for i in recent if i in earlier] + texts
        return extractive_theme(texts, self.config)

    def _ask(self, system: str, prompt: str, *, max_tokens: int) -> str | None:
        """One LLM call; None when there is no LLM or the call failed (the caller falls back)."""
        if self.llm is None:
            return None
        try:
            messages = [Message(role="system", content=system), Message(role="user", content=prompt)]
            return self.llm.complete(messages, max_tokens=max_tokens, temperature=0.0).text
        except Exception as exc:
            log.warning("LLM call failed; using the deterministic fallback", task=system.split(".")[0], error=str(exc))
            return None

    # ---- short -> mid ------------------------------------------------------------------------

    def _place(
        self,
        ns: str,
        chain: list[MemCube],
        vectors: Mapping[str, np.ndarray],
        summaries: dict[str, np.ndarray],
        report: PagingReport,
    ) -> None:
        """Merge a chain into its best segment, or start a new one."""
        mos = self.mos
        theme = self._theme(chain)
        theme_vector = mos.embedder.embed([theme.summary])[0]
        states = self.store.in_namespace(ns, paged_out=False)
        seg_cubes = mos.catalog.get([s.id for s in states])
        states = [s for s in states if s.id in seg_cubes]
        summaries.update(self._vectors([seg_cubes[s.id] for s in states if s.id not in summaries]))
        best: SegmentState | None = None
        best_score = -math.inf
        for state in states:
            score = match_score(theme_vector, theme.keywords, summaries[state.id], state.keywords)
            if score > best_score:
                best, best_score = state, score
        if best is not None and best_score >= self.config.theta:
            segment = seg_cubes[best.id]
            merged = self._theme(chain, merged_into=segment)
            merged_vector = mos.embedder.embed([merged.summary])[0]
            if self._commit_merge(chain, segment, merged, merged_vector, best_score, vectors, report):
                summaries[segment.id] = merged_vector
        else:
            created = self._commit_new(ns, chain, theme, theme_vector, vectors, report)
            if created is not None:
                summaries[created] = theme_vector

    def _fresh_chain(self, conn: Connection, chain: Sequence[MemCube]) -> list[MemCube] | None:
        """The chain's pages as they are now, or None if any of them changed since it was read."""
        # locked: a second process placing the same pages waits here, then finds them moved
        fresh = self.mos.catalog.get([p.id for p in chain], conn, for_update=True)
        out = []
        for page in chain:
            now = fresh.get(page.id)
            if (
                now is None
                or now.status != Status.active
                or now.level != Level.short
                or now.namespace != page.namespace
                or now.header.version != page.header.version
            ):
                return None
            out.append(now)
        return out

    def _moved(self, page: MemCube, segment_id: str, now: datetime) -> MemCube:
        header = page.header.model_copy(deep=True)
        header.labels = {**header.labels, SEGMENT_LABEL: segment_id}
        header.updated_at = now
        return page.model_copy(update={"level": Level.mid, "header": header})

    def _commit_new(
        self,
        ns: str,
        chain: list[MemCube],
        theme: Theme,
        summary_vector: np.ndarray,
        vectors: Mapping[str, np.ndarray],
        report: PagingReport,
    ) -> str | None:
        """Start a segment from a chain; return its id (None when the pages changed meanwhile)."""
        mos = self.mos
        ids = [p.id for p in chain]
        with mos._write_lock:
            with mos.catalog.tx() as conn:
                pages = self._fresh_chain(conn, chain)
                if pages is None:
                    log.info("pages changed while paging; left for the next run", ns=ns, pages=len(chain))
                    return None
                now = mos.clock.now()
                h = heat(0, len(pages), 0.0, self.config)
                segment = MemCube(
                    id=new_id(),
                    namespace=pages[0].namespace,
                    level=Level.mid,
                    content=theme.summary,
                    sources=ids,
                    header=Header(
                        provenance=Provenance(source=Source.fusion, actor=SYSTEM_ACTOR),
                        created_at=now,
                        updated_at=now,
                        event_time=_earliest(p.header.event_time for p in pages),
                        usage=Usage(heat=h),
                        acl=ACL(owner=pages[0].header.acl.owner),
                        labels={"type": SEGMENT_TYPE},
                        tokens=mos.tokenizer.count(theme.summary),
                        embedder=mos.embedder.id,
                    ),
                )
                state = SegmentState(
                    id=segment.id,
                    ns=ns,
                    visits=0,
                    interactions=len(pages),
                    last_visit=now,
                    heat=h,
                    created_at=now,
                    updated_at=now,
                    keywords=theme.keywords,
                )
                mos.catalog.insert_cubes(conn, [segment])
                self.store.insert(conn, state)
                self._audit(conn, now, "segment", segment, {"pages": len(pages)})
                self._move_pages(conn, pages, segment.id, now)
            mos.sync_after_commit([segment.id, *ids], {**_pick(vectors, ids), segment.id: summary_vector})
        report.segments_created += 1
        report.moved += len(pages)
        return segment.id

    def _commit_merge(
        self,
        chain: list[MemCube],
        segment: MemCube,
        theme: Theme,
        summary_vector: np.ndarray,
        score: float,
        vectors: Mapping[str, np.ndarray],
        report: PagingReport,
    ) -> bool:
        """Merge a chain into a segment; False when the pages or the segment changed meanwhile."""
        mos = self.mos
        ids = [p.id for p in chain]
        with mos._write_lock:
            with mos.catalog.tx() as conn:
                pages = self._fresh_chain(conn, chain)
                # the segment's row before its cube: every writer of a segment locks them in that order
                state = self.store.get([segment.id], conn, for_update=True).get(segment.id)
                current = mos.catalog.get([segment.id], conn).get(segment.id)
                if (
                    pages is None
                    or current is None
                    or state is None
                    or state.paged_out
                    or current.status != Status.active
                    or current.header.version != segment.header.version
                ):
                    log.info("pages or segment changed while paging; left for the next run", segment=segment.id)
                    return False
                now = mos.clock.now()
                state.interactions += len(pages)
                state.last_visit = now
                state.updated_at = now
                state.keywords = theme.keywords
                state.heat = heat(state.visits, state.interactions, 0.0, self.config)
                header = current.header.model_copy(deep=True)
                header.version = current.header.version + 1
                header.previous = current.header.version
                header.updated_at = now
                header.tokens = mos.tokenizer.count(theme.summary)
                header.embedder = mos.embedder.id
                header.usage.heat = state.heat
                header.event_time = _earliest([header.event_time, *(p.header.event_time for p in pages)])
                new = current.model_copy(
                    update={"content": theme.summary, "sources": [*current.sources, *ids], "header": header}
                )
                mos.catalog.replace_cube(conn, new, new_version=True)
                self.store.save(conn, state)
                self._audit(conn, now, "merge", new, {"pages": len(pages), "score": round(score, 6)})
                self._move_pages(conn, pages, segment.id, now)
            mos.sync_after_commit([segment.id, *ids], {**_pick(vectors, ids), segment.id: summary_vector})
        report.merged += 1
        report.moved += len(pages)
        return True

    def _move_pages(self, conn: Connection, pages: Sequence[MemCube], segment_id: str, now: datetime) -> None:
        for page in pages:
            self.mos.catalog.replace_cube(conn, self._moved(page, segment_id, now), new_version=False)
            self._audit(conn, now, "page", page, {"segment": segment_id})

    # ---- mid -> long -------------------------------------------------------------------------

    def _promote_hot(self, ns: str, report: PagingReport) -> None:
        """Promote every active segment of the namespace at or above tau with unanalysed pages, hottest first."""
        cfg = self.config
        now = self.mos.clock.now()
        # the recency term is at most gamma: only these can be at tau now
        states = [
            s
            for s in self.store.in_namespace(ns, paged_out=False)
            if cfg.alpha * s.visits + cfg.beta * s.interactions + cfg.gamma >= cfg.tau
        ]
        seg_cubes = self.mos.catalog.get([s.id for s in states])
        hot = []
        for state in states:
            segment = seg_cubes.get(state.id)
            h = self._current_heat(state, now)
            if segment is not None and h >= cfg.tau and set(segment.sources) - set(state.analyzed):
                hot.append((h, state, segment))
        hot.sort(key=lambda item: (-item[0], item[1].created_at, item[1].id))
        for _, state, segment in hot:
            self._promote(ns, state, segment, report)

    def _promote(self, ns: str, state: SegmentState, segment: MemCube, report: PagingReport) -> None:
        mos = self.mos
        analyzed = set(state.analyzed)
        pending = [i for i in segment.sources if i not in analyzed]
        found = mos.catalog.get(pending)
        # a page forgotten (or expired) since it was merged is marked analysed but teaches nothing
        pages = [found[i] for i in pending if i in found and found[i].status == Status.active]
        profiles = self.store.cubes_in(ns, levels=["long"], labels={"type": PROFILE_TYPE})
        profile = profiles[0] if profiles else None
        profile_text = self._profile_text(profile, pages) if pages else None
        user_items, assistant_items = self._knowledge(pages)
        written: list[str] = []
        archived: list[str] = []
        with mos._write_lock:
            with mos.catalog.tx() as conn:
                # the segment's row stays locked until commit: a second promoter waits, then sees it analysed
                fresh = self.store.get([segment.id], conn, for_update=True).get(segment.id)
                current = mos.catalog.get([segment.id], conn).get(segment.id)
                if (
                    current is None
                    or fresh is None
                    or fresh.paged_out
                    or fresh.analyzed != state.analyzed
                    or current.header.version != segment.header.version
                ):
                    log.info("segment changed while promoting; left for the next run", segment=segment.id)
                    return
                now = mos.clock.now()
                owner = segment.header.acl.owner
                knowledge = [
                    self._long_cube(segment.namespace, text, kind, sources, when, owner, now)
                    for kind, items in ((USER_KNOWLEDGE, user_items), (ASSISTANT_KNOWLEDGE, assistant_items))
                    for text, sources, when in items
                ]
                mos.catalog.insert_cubes(conn, knowledge)
                for cube in knowledge:
                    self._audit(conn, now, "promote", cube, {"segment": segment.id})
                written = [c.id for c in knowledge]
                if profile_text is not None:
                    written.append(self._write_profile(conn, ns, segment, profile_text, pages, owner, now))
                for kind in KNOWLEDGE_TYPES:
                    archived += self._archive_overflow(conn, ns, kind, now)
                fresh.analyzed = [*fresh.analyzed, *pending]
                fresh.visits = 0
                fresh.interactions = 0
                fresh.last_visit = now
                fresh.updated_at = now
                fresh.heat = heat(0, 0, 0.0, self.config)
                self.store.save(conn, fresh)
                self.store.set_cube_heat(conn, {segment.id: fresh.heat})
                self._audit(conn, now, "promote", segment, {"pages": len(pending), "knowledge": len(knowledge)})
            # knowledge that copies its page word for word (the fallback) reuses the page's vector
            texts = {p.id: p.text for p in pages}
            copies = {
                c.id: c.header.provenance.derived_from[0]
                for c in knowledge
                if len(c.header.provenance.derived_from) == 1
                and texts.get(c.header.provenance.derived_from[0]) == c.text
            }
            known = self._stored_vectors(sorted({*archived, *copies.values()}))
            reused = {cid: known[pid] for cid, pid in copies.items() if pid in known}
            mos.sync_after_commit([*written, *archived], {**_pick(known, archived), **reused})
        report.promoted += 1
        report.knowledge_written += len(knowledge)
        report.archived += len(archived)

    def _knowledge(
        self, pages: Sequence[MemCube]
    ) -> tuple[list[tuple[str, list[str], datetime | None]], list[tuple[str, list[str], datetime | None]]]:
        """(text, derived_from, event_time) items of user and of assistant knowledge."""
        if not pages:
            return [], []
        limit = self.mos.settings.max_text_chars
        parsed = parse_knowledge(self._ask(KNOWLEDGE_PROMPT, f"Conversation:\n{quote_turns(pages)}", max_tokens=800))
        if parsed is not None:
            ids = [p.id for p in pages]
            when = _latest(p.header.event_time for p in pages)
            user, assistant = parsed
            return [(t[:limit], ids, when) for t in user], [(t[:limit], ids, when) for t in assistant]
        if self.llm is not None:
            log.info("LLM knowledge unusable; one knowledge cube per page instead", pages=len(pages))
        user_items: list[tuple[str, list[str], datetime | None]] = []
        assistant_items: list[tuple[str, list[str], datetime | None]] = []
        for page in pages:
            item = (page.text, [page.id], page.header.event_time)
            (assistant_items if is_assistant(page.header.provenance.speaker) else user_items).append(item)
        return user_items, assistant_items

    def _profile_text(self, profile: MemCube | None, pages: Sequence[MemCube]) -> str | None:
        """The new profile text; None keeps the current one."""
        if self.llm is not None:
            current = profile.text if profile is not None else "(none yet)"
            answer = self._ask(
                PROFILE_PROMPT,
                f"Current profile:\n{current}\n\nNew conversation:\n{quote_turns(pages)}",
                max_tokens=1500,
            )
            if answer is not None and len(answer.strip()) >= MIN_PROFILE_CHARS:
                return answer.strip()[: self.mos.settings.max_text_chars]
            if profile is not None:
                log.info("LLM profile unusable; keeping the current one")
                return None
        return extractive_profile(profile.text if profile is not None else None, pages, self.config)

    def _write_profile(
        self,
        conn: Connection,
        ns: str,
        segment: MemCube,
        text: str,
        pages: Sequence[MemCube],
        owner: str,
        now: datetime,
    ) -> str:
        mos = self.mos
        existing = self.store.cubes_in(ns, levels=["long"], labels={"type": PROFILE_TYPE}, conn=conn)
        sources = [p.id for p in pages]
        if not existing:
            cube = self._long_cube(segment.namespace, text, PROFILE_TYPE, sources, None, owner, now)
            mos.catalog.insert_cubes(conn, [cube])
            self._audit(conn, now, "promote", cube, {"segment": segment.id})
            return cube.id
        current = existing[0]
        if current.text == text:
            return current.id
        header = current.header.model_copy(deep=True)
        header.version = current.header.version + 1
        header.previous = current.header.version
        header.updated_at = now
        header.tokens = mos.tokenizer.count(text)
        header.embedder = mos.embedder.id
        header.provenance = header.provenance.model_copy(update={"derived_from": sources})
        mos.catalog.replace_cube(conn, current.model_copy(update={"content": text, "header": header}), new_version=True)
        self._audit(conn, now, "promote", current, {"segment": segment.id, "version": header.version})
        return current.id

    def _long_cube(
        self,
        namespace: tuple[str, ...],
        text: str,
        kind: str,
        derived_from: list[str],
        event_time: datetime | None,
        owner: str,
        now: datetime,
    ) -> MemCube:
        mos = self.mos
        return MemCube(
            id=new_id(),
            namespace=namespace,
            level=Level.long,
            content=text,
            header=Header(
                provenance=Provenance(source=Source.fusion, actor=SYSTEM_ACTOR, derived_from=derived_from),
                created_at=now,
                updated_at=now,
                event_time=event_time,
                acl=ACL(owner=owner),
                labels={"type": kind},
                tokens=mos.tokenizer.count(text),
                embedder=mos.embedder.id,
            ),
        )

    def _archive_overflow(self, conn: Connection, ns: str, kind: str, now: datetime) -> list[str]:
        """Archive the oldest active knowledge cubes of a kind beyond kb_capacity; return their ids."""
        active = self.store.cubes_in(ns, levels=["long"], labels={"type": kind}, conn=conn)
        excess = active[: max(0, len(active) - self.config.kb_capacity)]
        for cube in excess:
            self.mos.catalog.replace_cube(conn, _with_status(cube, Status.archived, now), new_version=False)
            self._audit(conn, now, "archive", cube, {"reason": f"{kind} over kb_capacity"})
        return [c.id for c in excess]

    # ---- page-out and page-in ----------------------------------------------------------------

    def _page_out(self, ns: str, report: PagingReport, keep: frozenset[str]) -> None:
        """Page out the coldest active segments of a namespace beyond max_segments (caller holds the lock)."""
        mos = self.mos
        states = self.store.in_namespace(ns, paged_out=False)
        excess = len(states) - self.config.max_segments
        if excess <= 0:
            return
        now = mos.clock.now()
        candidates = [s for s in states if s.id not in keep]
        if self.config.eviction == "lfu":
            candidates.sort(key=lambda s: (s.visits, s.created_at, s.id))
        else:
            candidates.sort(key=lambda s: (self._current_heat(s, now), s.created_at, s.id))
        victims = candidates[:excess]
        changed: list[str] = []
        with mos.catalog.tx() as conn:
            # locked and re-read: a segment another process paged out or in meanwhile is left as it now is
            locked = self.store.get([s.id for s in victims], conn, for_update=True)
            victims = [locked[s.id] for s in victims if s.id in locked and not locked[s.id].paged_out]
            for state in victims:
                changed += self._set_segment_status(conn, state, Status.archived, now)
                state.paged_out = True
                state.updated_at = now
                self.store.save(conn, state)
        mos.sync_after_commit(changed, self._stored_vectors(changed))
        report.paged_out += len(victims)

    def _set_segment_status(self, conn: Connection, state: SegmentState, status: Status, now: datetime) -> list[str]:
        """Set a segment cube and its pages (those in the opposite paging status) to `status`; audit it."""
        mos = self.mos
        segment = mos.catalog.get([state.id], conn).get(state.id)
        if segment is None:
            return []
        other = Status.active if status == Status.archived else Status.archived
        pages = mos.catalog.get(segment.sources, conn)
        movable = [pages[i] for i in segment.sources if i in pages and pages[i].status == other]
        action = "page_out" if status == Status.archived else "page_in"
        for cube in [segment, *movable]:
            if cube.status == other:
                mos.catalog.replace_cube(conn, _with_status(cube, status, now), new_version=False)
                self._audit(conn, now, action, cube, {"segment": state.id})
        return [segment.id, *(p.id for p in movable)]

    def page_in(self, cube_ids: Sequence[str]) -> list[str]:
        """Bring back the paged-out segments of these cubes (segments or their pages); return the segment ids."""
        mos = self.mos
        ids = [check_cube_id(i) for i in cube_ids]
        with mos._write_lock:
            owners = self.store.segment_of(ids)
            wanted = list(dict.fromkeys(owners.get(i, i) for i in ids))
            states = self.store.get(wanted)
            targets = [states[i] for i in wanted if i in states and states[i].paged_out]
            if not targets:
                return []
            now = mos.clock.now()
            changed: list[str] = []
            heats: dict[str, float] = {}
            with mos.catalog.tx() as conn:
                locked = self.store.get([s.id for s in targets], conn, for_update=True)
                targets = [locked[s.id] for s in targets if s.id in locked and locked[s.id].paged_out]
                for state in targets:
                    state.visits += 1
                    state.last_visit = now
                    state.updated_at = now
                    state.paged_out = False
                    state.heat = heat(state.visits, state.interactions, 0.0, self.config)
                    heats[state.id] = state.heat
                    changed += self._set_segment_status(conn, state, Status.active, now)
                    self.store.save(conn, state)
                self.store.set_cube_heat(conn, heats)
            mos.sync_after_commit(changed, self._stored_vectors(changed))
            keep = frozenset(heats)
            report = PagingReport()
            for ns in dict.fromkeys(s.ns for s in targets):
                self._page_out(ns, report, keep=keep)
        return [s.id for s in targets]

    # ---- heat --------------------------------------------------------------------------------

    def _current_heat(self, state: SegmentState, now: datetime) -> float:
        return heat(state.visits, state.interactions, (now - state.last_visit).total_seconds(), self.config)

    def visit(self, segment_ids: Sequence[str], now: datetime | None = None) -> None:
        """Count a retrieval hit on each given segment: visits + 1, last visit = now, heat recomputed."""
        mos = self.mos
        when = now or mos.clock.now()

        def count(conn: Connection) -> None:
            # locked while counting: two processes visiting one segment both count
            states = self.store.get(segment_ids, conn, for_update=True)
            for state in states.values():
                state.visits += 1
                state.last_visit = when
                state.updated_at = when
                state.heat = heat(state.visits, state.interactions, 0.0, self.config)
                self.store.save(conn, state)
            self.store.set_cube_heat(conn, {s.id: s.heat for s in states.values()})

        with mos._write_lock:
            mos.catalog.transact(count)

    def heat_of(self, segment_ids: Sequence[str], now: datetime | None = None) -> dict[str, float]:
        """Each segment's heat at `now` (default: the clock's now), decay included."""
        when = now or self.mos.clock.now()
        return {i: self._current_heat(s, when) for i, s in self.store.get(segment_ids).items()}

    def hottest(self, prefixes: Sequence[str] | None = None, n: int = 10) -> list[SegmentInfo]:
        """The n hottest active segments at or below these namespace paths (None: everywhere)."""
        now = self.mos.clock.now()
        states = self.store.under(prefixes, paged_out=False)
        ranked = sorted(states, key=lambda s: (-self._current_heat(s, now), s.created_at, s.id))[: max(0, n)]
        seg_cubes = self.mos.catalog.get([s.id for s in ranked])
        out = []
        for state in ranked:
            segment = seg_cubes.get(state.id)
            summary = segment.text if segment is not None else ""
            out.append(
                SegmentInfo(
                    id=state.id,
                    ns=state.ns,
                    heat=self._current_heat(state, now),
                    visits=state.visits,
                    interactions=state.interactions,
                    pages=len(segment.sources) if segment is not None else 0,
                    paged_out=state.paged_out,
                    summary=summary[:120],
                )
            )
        return out

    def counts(self, prefixes: Sequence[str] | None = None) -> dict[str, int]:
        """Segments active / paged out, pages short / in segments / paged out, long-term cubes by type."""
        return self.store.paging_counts(prefixes)

    def segment_of(self, page_ids: Sequence[str]) -> dict[str, str]:
        """page id -> the id of its segment, for the given pages that belong to one."""
        return self.store.segment_of(page_ids)

    # ---- background paging -------------------------------------------------------------------

    def schedule(self, namespace: str | Sequence[str]) -> None:
        """Queue a namespace for a background run and return at once (a daemon worker runs the queue)."""
        path = _path(namespace)
        with self._cond:
            if self._closed:
                log.info("pager closed; namespace not scheduled", ns=path)
                return
            self._queue[path] = None
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="memos-paging", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        return
                    ns = next(iter(self._queue))
                    del self._queue[ns]
                    self._busy = True
                try:
                    self.run([ns])
                except Exception as exc:
                    log.warning("background paging failed; the next write or tick retries it", ns=ns, error=str(exc))
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._worker = None
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is drained and no run is in progress; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and (not self._queue or self._worker is None), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued namespaces, then stop the worker; later `schedule` calls are ignored."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # ---- helpers -----------------------------------------------------------------------------

    def _vectors(self, cubes_: Sequence[MemCube]) -> dict[str, np.ndarray]:
        """The cubes' stored vectors, embedding the ones the index lacks."""
        out = self._stored_vectors([c.id for c in cubes_])
        missing = [c for c in cubes_ if c.id not in out]
        if missing:
            out.update(zip([c.id for c in missing], self.mos.embedder.embed([c.text for c in missing]), strict=True))
        return out

    def _stored_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors the index holds for these ids (so a status change does not re-embed)."""
        if not ids:
            return {}
        try:
            return self.mos.vectors.get(ids)
        except Exception as exc:
            log.warning("vector index unreadable; embedding instead", error=str(exc))
            return {}

    def _audit(
        self, conn: Connection, now: datetime, action: str, cube: MemCube, detail: Mapping[str, Any] | None = None
    ) -> None:
        self.mos.catalog.audit(
            conn, at=now, actor=SYSTEM_ACTOR, action=action, cube_id=cube.id, ns=ns_path(cube.namespace), detail=detail
        )


def _with_status(cube: MemCube, status: Status, when: datetime) -> MemCube:
    header = cube.header.model_copy(deep=True)
    header.lifecycle.status = status
    header.updated_at = when
    return cube.model_copy(update={"header": header})


def _earliest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _pick(vectors: Mapping[str, np.ndarray], ids: Iterable[str]) -> dict[str, np.ndarray]:
    return {i: vectors[i] for i in ids if i in vectors}


def _path(namespace: str | Sequence[str]) -> str:
    """A namespace given as 'a/b' or ('a', 'b') -> its validated path."""
    return ns_path(parse_namespace(namespace))
