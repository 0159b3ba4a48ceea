"""The error hierarchy: each error says who must act, and carries structured fields for logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class MemosError(Exception):
    """Base of every error memos raises on purpose."""

    #: exit code the CLI uses for this error
    exit_code: int = 1

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class UserError(MemosError):
    """Bad input or bad configuration: the message says what to fix."""

    exit_code = 2


class NotFound(UserError):
    """An id, user or namespace that does not exist."""


class PermissionDenied(UserError):
    """The acting user lacks the right the call needs."""


class Conflict(UserError):
    """The call clashes with existing state (duplicate id, stale version, ...)."""


class BackendError(MemosError):
    """A dependency (database, vector index, model server) failed: the message names it."""

    exit_code = 1


class Busy(BackendError):
    """The database gave up on a transaction another one was blocking (deadlock, serialization failure).

    Nothing of it was written; running it again is safe.
    """


def first_problem(exc: ValidationError, default: str = "") -> tuple[str, str]:
    """(dotted location, message) of the first problem a pydantic validation error reports."""
    first = exc.errors()[0]
    return ".".join(str(part) for part in first["loc"]) or default, str(first["msg"])
