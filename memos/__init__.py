"""memos: an operating-system-style memory for LLM agents."""

from memos.cube import ACL, Header, Kind, Level, Lifecycle, MemCube, Provenance, Right, Source, Status, Usage
from memos.errors import BackendError, Conflict, MemosError, NotFound, PermissionDenied, UserError

__all__ = [
    "ACL",
    "BackendError",
    "Conflict",
    "Header",
    "Kind",
    "Level",
    "Lifecycle",
    "MemCube",
    "MemosError",
    "NotFound",
    "PermissionDenied",
    "Provenance",
    "Right",
    "Source",
    "Status",
    "Usage",
    "UserError",
]
