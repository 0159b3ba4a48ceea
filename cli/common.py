"""What every command shares: the global options, opening the home as the acting user, parsing and printing.

Nothing heavy is imported at module level: the kernel (and through it chromadb or torch) loads only
when a command opens the home, so `memos --help` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from memos.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from memos.config import Settings
    from memos.kernel import MemOS, Session

#: table width when standard output is not a terminal (and COLUMNS is unset)
PIPE_WIDTH = 120
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Globals:
    """The options given before the command name."""

    home: str | None = None
    user: str | None = None
    embedder: str | None = None
    log_json: bool = False


def globals_of(ctx: typer.Context) -> Globals:
    """The global options of this invocation."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals()


def load_settings(ctx: typer.Context) -> Settings:
    """Settings for the home, with the global options as overrides, and logging configured from them."""
    from memos.config import Settings
    from memos.log import configure

    g = globals_of(ctx)
    settings = Settings.load(g.home, **_overrides(g))
    configure(json=settings.log_json, level=settings.log_level)
    return settings


def _overrides(g: Globals) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if g.user is not None:
        overrides["user"] = g.user
    if g.embedder is not None:
        overrides["embedder"] = g.embedder
    if g.log_json:
        overrides["log_json"] = True
    return overrides


def acting_user(settings: Settings) -> str:
    """--user, else MEMOS_USER, else the home's `user` setting, else the OS login name."""
    if settings.user:
        return settings.user
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise UserError("cannot tell who you are: pass --user NAME or set MEMOS_USER") from None


@contextmanager
def open_home(ctx: typer.Context) -> Iterator[MemOS]:
    """Open the home for one command and close it afterwards."""
    from memos.kernel import MemOS

    settings = load_settings(ctx)
    make_home(settings.home)
    g = globals_of(ctx)
    with MemOS.open(g.home, **_overrides(g)) as mos:
        yield mos


def make_home(home: Path) -> None:
    """Create the home folder, turning an OS refusal into one clear UserError."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the memos home {home}: {exc.strerror or exc}; pass --home or set MEMOS_HOME"
        ) from None


@contextmanager
def open_session(ctx: typer.Context) -> Iterator[Session]:
    """Open the home and act as the resolved user."""
    with open_home(ctx) as mos:
        yield mos.as_user(acting_user(mos.settings))


# ---- parsing command-line values -------------------------------------------------------------


def parse_labels(values: Sequence[str] | None) -> dict[str, str] | None:
    """`key=value` strings as a mapping (None when none were given)."""
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"invalid label {item!r}: write it as key=value, e.g. --label type=fact")
        out[key.strip()] = value.strip()
    return out


def parse_duration(value: str | None, what: str = "--ttl") -> float | None:
    """A duration such as '90', '90s', '15m', '12h', '7d' or '2w', in seconds."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise UserError(f"invalid {what} {value!r}: give a positive number of seconds or e.g. 15m, 12h, 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def parse_when(value: str | None, what: str) -> datetime | None:
    """An ISO-8601 date or time from the command line, as aware UTC."""
    from memos import inputs

    return inputs.when(value, what)


def read_text(value: str) -> str:
    """The text argument, or standard input when it is '-'."""
    return sys.stdin.read() if value == "-" else value


# ---- printing --------------------------------------------------------------------------------


def console() -> Console:
    """A rich console on standard output (looked up now, so test runners can capture it); 120 wide in pipes."""
    import os

    from rich.console import Console

    out = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def stderr_console() -> Console:
    """A rich console on standard error, for progress bars."""
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


def print_json(value: Any) -> None:
    """Pretty JSON on standard output (datetimes as ISO strings)."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


def fmt_time(value: datetime | None, *, seconds: bool = False) -> str:
    """A datetime as 'YYYY-MM-DD HH:MM' in UTC, or '-'."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def shorten(text: str, width: int) -> str:
    """One line of at most `width` characters, ending in '…' when cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def plural(count: int, noun: str) -> str:
    """'1 cube', '2 cubes'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def one_line(message: str) -> str:
    """A message folded onto one line, with any known secret (an API key) masked."""
    from memos.log import redact

    return redact(" ".join(part.strip() for part in str(message).splitlines() if part.strip()))
