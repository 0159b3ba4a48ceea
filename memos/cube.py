"""MemCube: the unit of memory, content plus a header (provenance, versions, lifecycle, ACL, usage)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos.errors import UserError

Namespace = tuple[str, ...]

#: one namespace segment: letters, digits and a few separators; no '/', no whitespace
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_NAMESPACE_DEPTH = 8


class Kind(StrEnum):
    """Representation tier of a cube."""

    plaintext = "plaintext"
    activation = "activation"
    parametric = "parametric"


class Level(StrEnum):
    """Time scale of a cube in the memory hierarchy."""

    short = "short"
    mid = "mid"
    long = "long"


class Status(StrEnum):
    """Lifecycle status; only active cubes are recalled."""

    active = "active"
    archived = "archived"
    expired = "expired"
    deleted = "deleted"


class Source(StrEnum):
    """Where a cube's content came from."""

    user = "user"
    message = "message"
    tool = "tool"
    policy = "policy"
    import_ = "import"
    fusion = "fusion"
    migration = "migration"


class Right(StrEnum):
    """A right a user can be granted on a namespace."""

    read = "read"
    write = "write"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Provenance(_Model):
    """Where a cube came from and what it was derived from."""

    source: Source = Source.user
    actor: str = ""
    derived_from: list[str] = Field(default_factory=list)
    session_id: str | None = None
    turn_id: str | None = None
    external_id: str | None = None
    #: the speaker of a conversational turn, when the cube is one
    speaker: str | None = None
    #: the page just before this one in its conversation session (MemoryOS's pre_page): set by the
    #: kernel on write when session_id is given; its text is indexed as this page's lexical context
    preceded_by: str | None = None


class Usage(_Model):
    """How often and how recently a cube was used."""

    access_count: int = 0
    last_access: datetime | None = None
    heat: float = 0.0


class Lifecycle(_Model):
    """Status and expiry."""

    status: Status = Status.active
    expires_at: datetime | None = None


class ACL(_Model):
    """Per-cube rights, on top of the namespace's."""

    owner: str
    readers: list[str] = Field(default_factory=list)
    writers: list[str] = Field(default_factory=list)


class Header(_Model):
    """Everything about a cube except its content."""

    version: int = 1
    #: the version this one replaced (None for the first)
    previous: int | None = None
    provenance: Provenance = Field(default_factory=Provenance)
    created_at: datetime
    updated_at: datetime
    #: when the remembered thing happened (vs created_at: when it was written)
    event_time: datetime | None = None
    usage: Usage = Field(default_factory=Usage)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    acl: ACL
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    tokens: int = 0
    embedder: str | None = None


class MemCube(_Model):
    """A unit of memory: content (text, or a blob reference for the other tiers) and a header."""

    id: str
    namespace: Namespace
    kind: Kind = Kind.plaintext
    level: Level = Level.short
    content: str | None = None
    #: for activation/parametric cubes: the blob holding the KV cache or adapter
    blob: str | None = None
    #: the plaintext cubes an activation/parametric cube (or a segment) was built from, in order
    sources: list[str] = Field(default_factory=list)
    header: Header

    @field_validator("namespace", mode="before")
    @classmethod
    def _check_namespace(cls, value: Any) -> Namespace:
        return parse_namespace(value)

    @property
    def text(self) -> str:
        """The plaintext content ('' for cubes that have none)."""
        return self.content or ""

    @property
    def status(self) -> Status:
        """Shortcut for header.lifecycle.status."""
        return self.header.lifecycle.status


Tag = Annotated[str, Field(min_length=1, max_length=64)]


def parse_namespace(value: Any) -> Namespace:
    """Turn a tuple, list or 'a/b' string into a validated namespace tuple, or raise UserError."""
    if isinstance(value, str):
        parts = tuple(value.strip("/").split("/")) if value.strip("/") else ()
    elif isinstance(value, list | tuple):
        parts = tuple(value)
    else:
        raise UserError(f"a namespace is a tuple of names like ('alice', 'chat'), not {type(value).__name__}")
    if not parts:
        raise UserError("a namespace needs at least one segment, e.g. ('alice', 'chat')")
    if len(parts) > MAX_NAMESPACE_DEPTH:
        raise UserError(f"a namespace has at most {MAX_NAMESPACE_DEPTH} segments; got {len(parts)}")
    for part in parts:
        if not isinstance(part, str) or not _SEGMENT.fullmatch(part):
            raise UserError(
                f"invalid namespace segment {part!r}: use 1-64 letters, digits, '_', '.', '@' or '-',"
                " starting with a letter or digit"
            )
    return parts


def ns_path(namespace: Namespace) -> str:
    """The stored form of a namespace: segments joined by '/'."""
    return "/".join(namespace)


def check_user_name(name: Any) -> str:
    """Validate a user name (same rules as a namespace segment)."""
    if not isinstance(name, str) or not _SEGMENT.fullmatch(name):
        raise UserError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-',"
            " starting with a letter or digit"
        )
    return name
