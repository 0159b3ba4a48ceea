"""memos: an operating-system-style memory for LLM agents."""

from memos.clock import Clock, ManualClock, SystemClock
from memos.cube import ACL, Header, Kind, Level, Lifecycle, MemCube, Provenance, Right, Source, Status, Usage
from memos.errors import BackendError, Conflict, MemosError, NotFound, PermissionDenied, UserError
from memos.kernel import MemOS, Session, Stats, WriteRequest
from memos.retrieval import Hit

__all__ = [
    "ACL",
    "BackendError",
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
