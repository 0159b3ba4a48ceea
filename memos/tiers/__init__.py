"""The representation tiers beside plaintext: activation (KV blocks) and parametric (LoRA adapters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from memos.cube import Kind, MemCube, Status, ns_path
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
    if cube.blob is not None:
        mos.blobs.delete(cube.blob)
    return retired
