"""Checks and coercions for what callers pass to system calls: every bad value becomes one clear UserError."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from memos.cube import Kind, Level, Provenance, Right, Status
from memos.errors import UserError, first_problem
from memos.ids import is_id

_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
E = TypeVar("E", Kind, Level, Right, Status)
M = TypeVar("M", bound=BaseModel)


def enum_value(enum: type[E], value: Any, what: str) -> E:
    """Coerce a string to an enum member, naming the accepted values on failure."""
    try:
        return enum(value.value if isinstance(value, enum) else value)
    except ValueError:
        accepted = ", ".join(m.value for m in enum)
        raise UserError(f"invalid {what} {value!r}: use one of {accepted}") from None


def text(value: Any, max_chars: int, what: str = "text") -> str:
    """Non-empty text within the size limit."""
    if not isinstance(value, str):
        raise UserError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise UserError(f"{what} is empty: give some words" + (" for the memory" if what == "text" else ""))
    if len(value) > max_chars:
        raise UserError(
            f"{what} is {len(value)} characters, over the limit of {max_chars}: split it, or raise MEMOS_MAX_TEXT_CHARS"
        )
    return value


def when(value: Any, what: str) -> datetime | None:
    """A datetime (naive ones are taken as UTC) or an ISO-8601 string, as aware UTC; None passes."""
    if value is None:
        return None
    if isinstance(value, str):
        shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{what} {shown} is not an ISO-8601 date or time, e.g. 2023-05-08T13:56") from None
    if not isinstance(value, datetime):
        raise UserError(f"{what} must be a datetime or ISO-8601 string, not {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00+01:00 is a moment before the first one a datetime can hold in UTC
        raise UserError(f"{what} {value.isoformat()} is out of range: in UTC it falls outside years 1-9999") from None


def duration(value: Any, what: str = "ttl") -> timedelta | None:
    """A timedelta or a number of seconds, positive; None passes."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise UserError(f"{what} must be a positive number of seconds or a timedelta")
    return value


def tags(values: Any) -> list[str]:
    """A de-duplicated list of 1-64 character tags, order kept."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise UserError("tags must be a list of strings, e.g. ['move', 'family']")
    out: dict[str, None] = {}
    for tag in values:
        if not isinstance(tag, str) or not 1 <= len(tag.strip()) <= 64:
            raise UserError(f"invalid tag {tag!r}: tags are 1-64 characters")
        out.setdefault(tag.strip(), None)
    return list(out)


def labels(values: Any) -> dict[str, str]:
    """A mapping of label keys (letters, digits, '_', '.', '-') to short string values."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise UserError("labels must be a mapping of names to values, e.g. {'type': 'fact'}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise UserError(f"invalid label name {key!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if not isinstance(value, str) or len(value) > 256:
            raise UserError(f"label {key!r} must be a string of at most 256 characters")
        out[key] = value
    return out


def provenance(value: Any, actor: str) -> Provenance:
    """Provenance from a mapping or model; the actor is always the calling user."""
    if value is None:
        return Provenance(actor=actor)
    if isinstance(value, Provenance):
        return value.model_copy(update={"actor": actor})
    if not isinstance(value, Mapping):
        raise UserError("provenance must be a mapping, e.g. {'external_id': 'D1:3'}")
    try:
        return Provenance.model_validate({**value, "actor": actor})
    except ValidationError as exc:
        where, problem = first_problem(exc)
        allowed = ", ".join(f for f in Provenance.model_fields if f != "actor")
        raise UserError(f"bad provenance field {where}: {problem} (fields: {allowed})") from None


def cube_id(value: Any) -> str:
    """A well-formed cube id."""
    if not isinstance(value, str) or not is_id(value):
        raise UserError(f"{value!r} is not a cube id (ids look like 01890a5d-ac96-774b-bcce-b302099a8057)")
    return value.lower()


def top_k(value: Any) -> int:
    """A result count between 1 and 1000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise UserError(f"k must be an integer from 1 to 1000, got {value!r}")
    return value


def model(cls: type[M], value: Any, what: str) -> M:
    """A pydantic settings model from a mapping, with one clear UserError line when a field is bad."""
    if not isinstance(value, Mapping):
        raise UserError(f"{what} must be a mapping of settings, got {type(value).__name__}")
    try:
        return cls.model_validate(dict(value))
    except ValidationError as exc:
        where, problem = first_problem(exc)
        allowed = ", ".join(cls.model_fields)
        raise UserError(f"bad {what} setting {where}: {problem} (settings: {allowed})") from None


def file_size(path: Path, *, missing: str, not_file: str, unreadable: str) -> int:
    """The size of a regular file, read from its metadata only; UserError with the caller's wording otherwise.

    `missing`, `not_file` and `unreadable` are message templates over {path} (and {error} for the last).
    """
    try:
        if not path.exists():
            raise UserError(missing.format(path=path))
        if not path.is_file():
            raise UserError(not_file.format(path=path))
        return path.stat().st_size
    except OSError as exc:
        raise UserError(unreadable.format(path=path, error=exc.strerror or exc)) from None
