"""GMemory: G-Memory (arXiv 2506.07398), the hierarchical memory of a multi-agent team, on a memos home.

A team calls three hooks. `on_task_start(task, roles)` retrieves past successes (query-graph hops
around the nearest tasks, re-ranked by the LLM) and voted insights, and returns each role's memory
text. `on_agent_message(...)` records the interaction graph of every environment step.
`on_task_end(success)` credits the insights the task was given (+1 / -2), stores the task record
(trajectory, key steps, failure reason) and links it into the query graph, then evolves the
insights when a trigger is due (finetune every 5 tasks from 5 on, merge every 20).

Without an LLM (none passed and none configured on the kernel) G-Memory still works, with
deterministic fallbacks: the kept actions as key steps, the last observation as the failure reason,
candidates in cosine order, insights never evolved (each trigger reports that it was skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memos.cube import Level, Right, parse_namespace
from memos.errors import MemosError, UserError
from memos.log import get_logger
from memos.plugins.gmemory import evolve, prompts, state
from memos.plugins.gmemory.asker import Asker, Usage
from memos.plugins.gmemory.insights import InsightStore, parse_numbered_rules
from memos.plugins.gmemory.retrieval import Retrieval, parse_score
from memos.plugins.gmemory.tasks import LINK_K, LINK_THRESHOLD, TaskRecord, TaskStore
from memos.plugins.gmemory.trace import InteractionTrace

if TYPE_CHECKING:
    from memos.kernel import MemOS, Session
    from memos.llm.base import LLM

log = get_logger("gmemory")
#: labels of the cubes G-Memory writes when it is given a namespace
CUBE_LABELS = {"type": "gmemory-task"}
#: insight evolution schedule of the paper's code
START_AT = 5
EVERY = 5
ROUNDS = 5
MERGE_EVERY = 20
#: retrieval: nearest successes and failures the insight votes come from
VOTE_SUCCESSES = 4
VOTE_FAILURES = 2


def triggers(size: int, *, start_at: int = START_AT, every: int = EVERY, merge_every: int = MERGE_EVERY) -> list[str]:
    """What is due once the memory holds `size` tasks: "finetune" and/or "merge" (in that order)."""
    due = []
    if every > 0 and size >= start_at and size % every == 0:
        due.append("finetune")
    if merge_every > 0 and size > 0 and size % merge_every == 0:
        due.append("merge")
    return due


def _positive(value: int, what: str, *, zero: bool = True) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise UserError(f"{what} must be an integer >= {0 if zero else 1}, got {value!r}")
    return value


def _cosine(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1.0 <= value <= 1.0:
        raise UserError(f"{what} is a cosine similarity: a number from -1 to 1, got {value!r}")
    return float(value)


@dataclass
class _Running:
    """The task in flight: its text, roles, trace, and the insights it was given."""

    task: str
    description: str
    roles: list[str]
    trace: InteractionTrace = field(default_factory=InteractionTrace)
    given: list[str] = field(default_factory=list)
    retrieval: Retrieval | None = None


class GMemory:
    """G-Memory for one team, kept under `<home>/gmemory/<name>/`; reopening restores it exactly.

    mos: the kernel, or a Session (needed with `namespace`). llm: the model for key steps, failure
    reasons, relevance scores, projection and insight evolution (default: the kernel's; none: the
    deterministic fallbacks). name: which memory of the home. k_s, k_f, k_i, threshold, hop, project:
    what `on_task_start` retrieves (successes, failures, insights, cosine floor, graph hops, per-role
    projection of the insights). link_k, link_threshold: how new tasks join the query graph (fixed when
    the memory is created; default 10 and 0.7). start_at, every, rounds, merge_every: the evolution
    schedule (finetune `rounds` rounds every `every` tasks from `start_at` on, merge every
    `merge_every`; 0 turns one off). seed: the finetune sampling seed. namespace: also write each task
    record as a long-term cube there, as the session's user (audited, under the namespace's ACL).
    """

    def __init__(
        self,
        mos: MemOS | Session,
        llm: LLM | None = None,
        *,
        name: str = "default",
        k_s: int = 1,
        k_f: int = 0,
        k_i: int = 3,
        threshold: float = 0.0,
        hop: int = 1,
        project: bool = False,
        link_k: int | None = None,
        link_threshold: float | None = None,
        start_at: int = START_AT,
        every: int = EVERY,
        rounds: int = ROUNDS,
        merge_every: int = MERGE_EVERY,
        seed: int = 0,
        namespace: str | Sequence[str] | None = None,
    ) -> None:
        from memos.kernel import MemOS, Session

        if isinstance(mos, Session):
            self.session: Session | None = mos
            self.mos: MemOS = mos.mos
        elif isinstance(mos, MemOS):
            self.session, self.mos = None, mos
        else:
            raise UserError(f"GMemory needs a MemOS or a Session (mos.as_user(name)), got {type(mos).__name__}")
        self.name = state.check_name(name)
        self.k_s, self.k_f, self.k_i = _positive(k_s, "k_s"), _positive(k_f, "k_f"), _positive(k_i, "k_i")
        self.hop = _positive(hop, "hop")
        self.threshold = _cosine(threshold, "threshold")
        self.project = bool(project)
        self.start_at, self.every = _positive(start_at, "start_at"), _positive(every, "every")
        self.rounds, self.merge_every = _positive(rounds, "rounds"), _positive(merge_every, "merge_every")
        self.seed = int(seed)
        self.namespace = None
        if namespace is not None:
            if self.session is None:
                raise UserError("writing task records into a namespace needs a user: pass mos.as_user(NAME), not MemOS")
            self.namespace = parse_namespace(namespace)
            # checked now, so a namespace the user cannot write costs no task
            self.mos.governance.require(self.session.user, self.namespace, Right.write)
        self.llm = llm if llm is not None else self.mos.llm
        self._ask = Asker(self.llm, self.mos.tokenizer) if self.llm is not None else None
        self.folder = state.state_dir(self.mos.home, self.name)
        self._lock = threading.RLock()
        self._running: _Running | None = None
        self._links = (link_k, link_threshold)
        self._stamp: state.Stamp | None = None
        self._load(link_k, link_threshold)

    # ---- state ----------------------------------------------------------------------------

    def _load(self, link_k: int | None, link_threshold: float | None) -> None:
        # stamped before reading: a save in between makes the stamp older than the copy, so the next
        # refresh reads the file again (never the other way round)
        self._stamp = state.stamp(self.folder)
        data = state.load(self.folder)
        embedder = self.mos.embedder
        if data is None:
            self.store = TaskStore(
                embedder.dim,
                link_k=LINK_K if link_k is None else link_k,
                link_threshold=LINK_THRESHOLD if link_threshold is None else link_threshold,
            )
            self.insights = InsightStore()
            self.next_record = 1
            return
        if data.get("embedder") != embedder.id:
            raise UserError(
                f"G-Memory {self.name!r} was built with the embedder {data.get('embedder')!r}, this home uses "
                f"{embedder.id!r}: open it with that embedder, or pick another name"
            )
        store = TaskStore.from_dict(data["tasks"])
        for given, stored, what in (
            (link_k, store.link_k, "link_k"),
            (link_threshold, store.link_threshold, "link_threshold"),
        ):
            if given is not None and given != stored:
                raise UserError(
                    f"G-Memory {self.name!r} was built with {what}={stored}; pass the same value (or none), "
                    "or pick another name"
                )
        self.store = store
        self.insights = InsightStore.from_dict(data["insights"])
        self.next_record = int(data["next_record"])

    def to_dict(self) -> dict[str, Any]:
        """The whole memory as the JSON document its state file holds."""
        return {
            "embedder": self.mos.embedder.id,
            "next_record": self.next_record,
            "tasks": self.store.to_dict(),
            "insights": self.insights.to_dict(),
        }

    def _save(self) -> None:
        state.save(self.folder, self.to_dict())
        self._stamp = state.stamp(self.folder)

    def _refresh(self) -> None:
        """Read the stored state again if another process (or another GMemory object) saved it since."""
        if state.stamp(self.folder) != self._stamp:
            self._load(*self._links)

    # ---- what it holds ----------------------------------------------------------------------

    @property
    def records(self) -> list[TaskRecord]:
        """The task records, oldest first (as stored now, by any process)."""
        with self._lock:
            self._refresh()
            return list(self.store.records)

    @property
    def size(self) -> int:
        """How many tasks are stored (by any process)."""
        with self._lock:
            self._refresh()
            return len(self.store)

    @property
    def usage(self) -> Usage:
        """LLM calls and tokens spent by this GMemory (nothing without an LLM)."""
        return self._ask.usage if self._ask is not None else Usage()

    @property
    def running(self) -> bool:
        """True between on_task_start and on_task_end."""
        return self._running is not None

    def _embed(self, text: str) -> np.ndarray:
        return np.asarray(self.mos.embedder.embed([text])[0], dtype=np.float32)

    # ---- retrieval --------------------------------------------------------------------------

    def retrieve_memory(
        self,
        task: str,
        k_s: int = 1,
        k_f: int = 0,
        k_i: int = 3,
        thr: float = 0.0,
        hop: int = 1,
        *,
        roles: Sequence[str] = (),
        project: bool = False,
    ) -> Retrieval:
        """Past successes and failures and the top insights for a new task (changes nothing stored).

        Candidates: 2*k_s successes and 2*k_f failures from `TaskStore.hop_retrieve`. The LLM
        scores each success candidate 1-10 (unparseable: 0) and the k_s best stay (ties in cosine
        order); with at most k_s candidates there is nothing to choose and no call is made. Insights:
        one vote per stored task among the 4 successes and 2 failures nearest to the task whose
        positive set holds it; the k_i with most votes, then highest score. With `project`, the LLM
        rewrites the insights for each role.
        """
        _check_task(task)
        for value, what in ((k_s, "k_s"), (k_f, "k_f"), (k_i, "k_i"), (hop, "hop")):
            _positive(value, what)
        _cosine(thr, "thr")
        with self._lock:
            self._refresh()
            out = Retrieval(task=task)
            if not len(self.store):
                return out
            vec = self._embed(task)
            found = self.store.hop_retrieve(vec, {True: 2 * k_s, False: 2 * k_f}, hop=hop, threshold=thr)
            successes = [record for record, _ in found[True]]
            out.candidates = [r.id for r in successes] + [r.id for r, _ in found[False]]
            if self._ask is not None and len(successes) > k_s:
                for record in successes:
                    case = f"{record.description}\n{record.trajectory}"
                    answer = self._ask(
                        "relevance", prompts.RELEVANCE_SYSTEM, prompts.RELEVANCE_USER.format(case=case, task=task)
                    )
                    out.relevance[record.id] = parse_score(answer)
                successes = sorted(successes, key=lambda r: -out.relevance[r.id])
            out.successes = successes[:k_s]
            out.failures = [record for record, _ in found[False]][:k_f]
            near = self.store.nearest(vec, VOTE_SUCCESSES, success=True) + self.store.nearest(
                vec, VOTE_FAILURES, success=False
            )
            voted = self.insights.votes([record.id for record, _ in near])[:k_i]
            out.insights = [rule for rule, _ in voted]
            out.votes = {rule.id: count for rule, count in voted}
            if project and self._ask is not None and out.insights:
                raw = [rule.rule for rule in out.insights]
                for role in dict.fromkeys(roles):
                    answer = self._ask(
                        "project",
                        prompts.PROJECT_SYSTEM,
                        prompts.PROJECT_USER.format(rules=prompts.numbered(raw), role=role),
                    )
                    projected, _ = parse_numbered_rules(answer)
                    out.role_insights[role] = (projected or raw)[:k_i]
            return out

    # ---- the team hooks ---------------------------------------------------------------------

    def on_task_start(self, task: str, roles: Sequence[str], *, description: str | None = None) -> dict[str, str]:
        """Retrieve for a new task; returns role -> memory text to put in that agent's prompt."""
        _check_task(task)
        if isinstance(roles, str) or not all(isinstance(r, str) and r.strip() for r in roles):
            raise UserError("roles must be a list of role names, e.g. ['solver', 'critic']")
        with self._lock:
            if self._running is not None:
                raise UserError(
                    f"task {self._running.task[:60]!r} is still running: call on_task_end(success) first, "
                    "or abandon() to drop it"
                )
            found = self.retrieve_memory(
                task, self.k_s, self.k_f, self.k_i, self.threshold, self.hop, roles=list(roles), project=self.project
            )
            self._running = _Running(
                task=task,
                description=description if description is not None else task,
                roles=list(roles),
                given=[rule.id for rule in found.insights],
                retrieval=found,
            )
            return {role: found.render(role) for role in roles}

    def on_agent_message(
        self,
        agent: str,
        message: str,
        *,
        role: str | None = None,
        upstream: Sequence[str] = (),
        action: str | None = None,
        observation: str | None = None,
        reward: float | None = None,
    ) -> None:
        """Record an agent's message in this step's graph; with `action`, the step ends with its outcome."""
        with self._lock:
            running = self._require_running("on_agent_message")
            if action is None and (observation is not None or reward is not None):
                raise UserError("observation and reward belong to a step's action: pass action= with them")
            running.trace.add_message(agent, message, role=role, upstream=upstream)
            if action is not None:
                running.trace.close_step(action, observation, reward)

    def on_task_end(self, success: bool) -> dict[str, Any]:
        """Credit the insights used, store the task record, evolve the insights when due; return a report.

        If the model fails while the record is being built, nothing is stored and the task stays
        open, so the call can be repeated. Once the record is saved, a failing model only cancels
        the insight evolution of this call (reported under "finetune"/"merge" as an error).
        """
        if not isinstance(success, bool):
            raise UserError(f"success must be True or False, got {success!r}")
        with self._lock:
            running = self._require_running("on_task_end")
            record = self._build_record(running, success)
            vector = self._embed(running.task)
            # the model calls are done: from here on the stored state is read, changed and saved under
            # the memory's lock, so tasks ending in other processes are neither lost nor overwritten
            with state.lock(self.folder):
                self._refresh()
                record.id = f"t{self.next_record}"
                before = self.to_dict()
                credited, deleted = self.insights.credit(running.given, success)
                links = self.store.add(record, vector)
                self.next_record += 1
                try:
                    if self.namespace is not None:
                        record.cube_id = self._write_cube(record)
                    self._save()
                except BaseException:
                    self._restore(before)
                    if record.cube_id is not None:
                        self._drop_cube(record.cube_id)
                    raise
            self._running = None
            report: dict[str, Any] = {
                "record_id": record.id,
                "success": success,
                "steps": len(running.trace.steps),
                "steps_kept": len(running.trace.kept_steps()),
                "links": [[rid, round(sim, 6)] for rid, sim in links],
                "insights_credited": credited,
                "insight_delta": 1 if success else -2,
                "insights_deleted": deleted,
                "memory_size": len(self.store),
                "cube_id": record.cube_id,
                "finetune": None,
                "merge": None,
            }
            for kind in triggers(
                len(self.store), start_at=self.start_at, every=self.every, merge_every=self.merge_every
            ):
                report[kind] = self._evolve(kind)
            return report

    def abandon(self) -> bool:
        """Drop the task in flight without storing anything; False when none was running."""
        with self._lock:
            was = self._running is not None
            self._running = None
            return was

    # ---- internals --------------------------------------------------------------------------

    def _require_running(self, call: str) -> _Running:
        if self._running is None:
            raise UserError(f"{call} needs a task in flight: call on_task_start(task, roles) first")
        return self._running

    def _build_record(self, running: _Running, success: bool) -> TaskRecord:
        trace = running.trace
        trajectory = trace.trajectory()
        kept = trace.kept_steps()
        if self._ask is not None:
            key_steps = self._ask(
                "key_steps",
                prompts.KEY_STEPS_SYSTEM,
                prompts.KEY_STEPS_USER.format(task=running.description, trajectory=trajectory),
                temperature=0.1,
            ).strip()
        else:
            key_steps = "\n".join(step.action or "" for step in kept)
        fail_reason = ""
        if not success:
            if self._ask is not None:
                fail_reason = self._ask(
                    "fail_reason",
                    prompts.FAIL_REASON_SYSTEM,
                    prompts.FAIL_REASON_USER.format(task=running.description, trajectory=trajectory),
                ).strip()
            else:
                last = kept[-1].observation if kept else ""
                fail_reason = f"The task was not completed; the last observation was: {last or '(none)'}"
        return TaskRecord(
            id=f"t{self.next_record}",
            task=running.task,
            description=running.description,
            trajectory=trajectory,
            success=success,
            key_steps=key_steps,
            fail_reason=fail_reason,
            trace=trace,
            created=self.mos.clock.now().isoformat(),
        )

    def _restore(self, data: dict[str, Any]) -> None:
        self.store = TaskStore.from_dict(data["tasks"])
        self.insights = InsightStore.from_dict(data["insights"])
        self.next_record = int(data["next_record"])

    def _evolve(self, kind: str) -> dict[str, Any]:
        """Run one finetune or merge on a copy of the insights; keep it only if it completes and saves."""
        if self._ask is None:
            return {"kind": kind, "skipped": "no LLM: pass llm= or set MEMOS_LLM to evolve insights"}
        started = self._stamp
        trial = InsightStore.from_dict(self.insights.to_dict())
        try:
            if kind == "finetune":
                done = evolve.finetune(self.store, trial, self._ask, rounds=self.rounds, seed=self.seed)
            else:
                done = evolve.merge(self.store, trial, self._ask)
        except MemosError as exc:
            log.warning("G-Memory could not evolve its insights; they stay as they were", kind=kind, error=str(exc))
            return {"kind": kind, "error": str(exc)}
        with state.lock(self.folder):
            if state.stamp(self.folder) != started:
                # made from a state another process has changed since: saving it would undo that change
                self._refresh()
                return {"kind": kind, "skipped": "another process changed this memory meanwhile; the next trigger runs"}
            previous, self.insights = self.insights, trial
            try:
                self._save()
            except BaseException:
                self.insights = previous
                raise
        return done.as_dict()

    def _write_cube(self, record: TaskRecord) -> str:
        assert self.session is not None and self.namespace is not None
        text = (
            f"Task: {record.description}\nOutcome: {record.label}\nKey steps:\n{record.key_steps}\n"
            f"Trajectory:\n{record.trajectory}"
        )
        if record.fail_reason:
            text += f"\nWhy it failed: {record.fail_reason}"
        cube = self.session.write(
            self.namespace,
            text[: self.mos.settings.max_text_chars],
            level=Level.long,
            labels={**CUBE_LABELS, "gmemory": self.name, "label": record.label},
            provenance={"source": "policy", "external_id": f"{self.name}:{record.id}"},
        )
        return cube.id

    def _drop_cube(self, cube_id: str) -> None:
        assert self.session is not None
        try:
            self.session.forget(cube_id, hard=True)
        except MemosError as exc:
            log.warning(
                "could not remove the cube of a G-Memory record that was not saved", cube=cube_id, error=str(exc)
            )


def _check_task(task: str) -> None:
    if not isinstance(task, str) or not task.strip():
        raise UserError("a task must be non-empty text: pass the task the team is given")
