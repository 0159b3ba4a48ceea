"""memos: an operating-system-style memory for LLM agents.

The public surface is imported lazily, so `import memos` (and so `memos --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memos.clock import Clock, ManualClock, SystemClock
    from memos.cube import ACL, Header, Kind, Level, Lifecycle, MemCube, Provenance, Right, Source, Status, Usage
    from memos.errors import BackendError, Busy, Conflict, MemosError, NotFound, PermissionDenied, UserError
    from memos.kernel import MemOS, Session, Stats, WriteRequest
    from memos.retrieval import Hit

_EXPORTS = {
    "memos.clock": ("Clock", "ManualClock", "SystemClock"),
    "memos.cube": (
        "ACL",
        "Header",
        "Kind",
        "Level",
        "Lifecycle",
        "MemCube",
        "Provenance",
        "Right",
        "Source",
        "Status",
        "Usage",
    ),
    "memos.errors": ("BackendError", "Busy", "Conflict", "MemosError", "NotFound", "PermissionDenied", "UserError"),
    "memos.kernel": ("MemOS", "Session", "Stats", "WriteRequest"),
    "memos.retrieval": ("Hit",),
}
_NAME_TO_MODULE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "ACL",
    "BackendError",
    "Busy",
    "Clock",
    "Conflict",
    "Header",
    "Hit",
    "Kind",
    "Level",
    "Lifecycle",
    "ManualClock",
    "MemCube",
    "MemOS",
    "MemosError",
    "NotFound",
    "PermissionDenied",
    "Provenance",
    "Right",
    "Session",
    "Source",
    "Stats",
    "Status",
    "SystemClock",
    "Usage",
    "UserError",
    "WriteRequest",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module = _NAME_TO_MODULE.get(name)
    if module is None:
        raise AttributeError(f"module 'memos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
