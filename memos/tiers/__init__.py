"""The representation tiers beside plaintext: activation (KV blocks) and parametric (LoRA adapters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from memos.cube import ACL, Header, Kind, Level, MemCube, Provenance, Source, Status, ns_path
from memos.errors import Conflict

if TYPE_CHECKING:
    from memos.kernel import MemOS


def archive_derived(
    mos: MemOS, user: str, cube: MemCube, kind: Kind, action: str, detail: Mapping[str, Any] | None = None
) -> MemCube:
    """Archive a derived cube of `kind` with its audit entry, then free its blob; its sources are untouched."""
    if cube.kind != kind:
        raise Conflict(f"cube {cube.id} is {cube.kind.value}, not a {kind.value} cube")
    now = mos.clock.now()
    header = cube.header.model_copy(deep=True)
    header.lifecycle.status = Status.archived
    header.updated_at = now
    retired = cube.model_copy(update={"header": header})
    with mos._write_lock, mos.catalog.tx() as conn:
        mos.catalog.replace_cube(conn, retired, new_version=False)
        mos.catalog.audit(
            conn, at=now, actor=user, action=action, cube_id=cube.id, ns=ns_path(cube.namespace), detail=detail
        )
    # the commit queued the cube in the outbox: clear it now, as every other write does
    mos.sync_after_commit([cube.id])
    if cube.blob is not None:
        mos.blobs.delete(cube.blob)
    return retired


def derived_cube(
    cube_id: str,
    kind: Kind,
    sources: Sequence[MemCube],
    *,
    user: str,
    now: datetime,
    blob: str | None,
    labels: Mapping[str, str],
    tokens: int,
    previous: MemCube | None = None,
) -> MemCube:
    """A long-term cube of `kind` built from `sources` (recorded as sources and derived_from); a new
    version of `previous` when given."""
    ids = [s.id for s in sources]
    return MemCube(
        id=cube_id,
        namespace=sources[0].namespace,
        kind=kind,
        level=Level.long,
        blob=blob,
        sources=ids,
        header=Header(
            version=previous.header.version + 1 if previous is not None else 1,
            previous=previous.header.version if previous is not None else None,
            provenance=Provenance(source=Source.migration, actor=user, derived_from=ids),
            created_at=previous.header.created_at if previous is not None else now,
            updated_at=now,
            acl=ACL(owner=user),
            labels=dict(labels),
            tokens=tokens,
        ),
    )


def commit_derived(
    mos: MemOS,
    user: str,
    cube: MemCube,
    *,
    action: str,
    detail: Mapping[str, Any],
    previous: MemCube | None = None,
) -> None:
    """Store a derived cube (new, or a new version of `previous`) with its audit entry in one transaction.

    Its blob is already written; if the transaction fails the blob is deleted, so no file outlives
    a cube that was never stored.
    """
    try:
        with mos._write_lock, mos.catalog.tx() as conn:
            cube.header.acl = ACL(owner=mos.governance.claim(conn, user, cube.namespace))
            if previous is None:
                mos.catalog.insert_cubes(conn, [cube])
            else:
                mos.catalog.replace_cube(conn, cube, new_version=True)
            mos.catalog.audit(
                conn,
                at=cube.header.updated_at,
                actor=user,
                action=action,
                cube_id=cube.id,
                ns=ns_path(cube.namespace),
                detail=detail,
            )
    except BaseException:
        if cube.blob is not None:
            mos.blobs.delete(cube.blob)
        raise
    mos.sync_after_commit([cube.id])
