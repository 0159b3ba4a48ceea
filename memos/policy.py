"""The memory-policy contract: observations in, memory operations out, applied through the kernel.

A policy never touches storage itself. It returns `MemoryOp`s (insert, update or delete, on cubes
or on regions of its own such as Mem-α's core/semantic/episodic memory) and `apply_ops` carries them
out as the calling user, so ACL checks, the audit log and version history apply to every change.
A region is a set of cubes labelled `policy=<name>` and `region=<region>`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from memos.cube import Level, MemCube, Namespace, ns_path, parse_namespace
from memos.errors import MemosError, UserError

if TYPE_CHECKING:
    from memos.kernel import Session


class OpKind(StrEnum):
    """What a memory operation does."""

    insert = "insert"
    update = "update"
    delete = "delete"


@dataclass(frozen=True)
class MemoryOp:
    """One change a policy asks for: insert a text, or update/delete a cube it names."""

    kind: OpKind
    text: str | None = None
    #: the cube to update or delete
    cube_id: str | None = None
    #: the policy's own region the cube belongs to (e.g. "core", "semantic", "episodic"), if any
    region: str | None = None
    level: Level = Level.long
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Sequence[str] = ()
    #: provenance fields for an insert (session_id, external_id, speaker, ...)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: when the remembered thing happened (an insert's event time), e.g. the turn's session date
    event_time: datetime | str | None = None

    def check(self) -> None:
        """Raise UserError when the operation is incomplete (no text to insert, no cube to change)."""
        if self.kind == OpKind.insert and not (self.text or "").strip():
            raise UserError("an insert operation needs a non-empty text")
        if self.kind in (OpKind.update, OpKind.delete) and not self.cube_id:
            raise UserError(f"a {self.kind.value} operation needs the id of the cube to change")
        if self.kind == OpKind.update and not (self.text or "").strip():
            raise UserError("an update operation needs the new text")


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one step: a chunk of input (a turn, a page, a document part) and context."""

    text: str
    #: position of this chunk in its input (0-based)
    index: int = 0
    #: the speaker of a conversational turn, if known
    speaker: str | None = None
    #: free-form facts about the chunk (session id, date, external id, ...)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class OpResult:
    """What became of one operation: the cube written, or why it failed."""

    op: MemoryOp
    cube: MemCube | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the operation was carried out."""
        return self.error is None


class Policy(ABC):
    """Decides, chunk by chunk, what to write into memory; registered by plugins under a name."""

    #: the name users select it by (`memos ingest --policy NAME`)
    name: str = ""

    @abstractmethod
    def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
        """The memory operations this observation calls for (may read memory through `session`)."""

    def reset(self) -> None:
        """Forget any state kept between observations (a new input starts)."""
        return None


def region_labels(policy: str, region: str) -> dict[str, str]:
    """The labels that mark a cube as part of a policy's region."""
    return {"policy": policy, "region": region}


def apply_ops(
    session: Session, namespace: Namespace | Sequence[str] | str, ops: Sequence[MemoryOp], *, policy: str = ""
) -> list[OpResult]:
    """Carry out operations as the session's user; a failing one is reported in its result, never raised.

    Inserts are written in one batch (one transaction); updates and deletes go one by one through the
    kernel's system calls, so every change is checked, audited and versioned.
    """
    ns = parse_namespace(namespace)
    results: list[OpResult] = []
    inserts: list[tuple[int, MemoryOp]] = []
    for position, op in enumerate(ops):
        results.append(OpResult(op))
        try:
            op.check()
        except UserError as exc:
            results[position].error = exc.message
            continue
        if op.kind == OpKind.insert:
            inserts.append((position, op))
    if inserts:
        items = []
        for _, op in inserts:
            labels = dict(op.labels)
            if op.region:
                labels.update(region_labels(policy or labels.get("policy", "policy"), op.region))
            provenance = {"source": "policy", **dict(op.provenance)}
            items.append(
                {
                    "text": op.text,
                    "level": op.level,
                    "labels": labels,
                    "tags": list(op.tags),
                    "provenance": provenance,
                    "event_time": op.event_time,
                }
            )
        try:
            cubes = session.write_many(ns, items)
            for (position, _), cube in zip(inserts, cubes, strict=True):
                results[position].cube = cube
        except MemosError as exc:
            for position, _ in inserts:
                results[position].error = exc.message
    for result in results:
        op = result.op
        if result.error is not None or op.kind == OpKind.insert:
            continue
        try:
            cube = session.get(op.cube_id or "")
            if ns_path(cube.namespace) != ns_path(ns) and not ns_path(cube.namespace).startswith(ns_path(ns) + "/"):
                raise UserError(f"cube {cube.id} is not under {ns_path(ns)}; a policy changes only its namespace")
            if op.kind == OpKind.update:
                result.cube = session.update(cube.id, op.text)
            else:
                session.forget(cube.id)
                result.cube = cube
        except MemosError as exc:
            result.error = exc.message
    return results
