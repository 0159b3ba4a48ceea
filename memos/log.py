"""structlog set-up: human-readable console lines by default, JSON lines with --log-json; secrets masked."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

#: what a secret is replaced with wherever memos prints or logs text
MASK = "**********"
#: log fields whose value is always masked, whatever it holds
_SECRET_FIELD = re.compile(r"(api_?key|authorization|password|secret)$", re.IGNORECASE)
#: secrets shorter than this are not scrubbed from free text (they would mask ordinary words)
_MIN_SECRET_CHARS = 6
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret (an API key) so `redact` and every log line mask it from now on."""
    if value and len(value) >= _MIN_SECRET_CHARS:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """The text with every registered secret replaced by MASK."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named fields and any registered secret inside other values."""
    for key, value in list(event.items()):
        if value is None or isinstance(value, bool | int | float):
            continue
        if _SECRET_FIELD.search(key):
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = redact(value)
        else:
            shown = str(value)
            cleaned = redact(shown)
            if cleaned != shown:
                event[key] = cleaned
    return event


def configure(json: bool = False, level: str = "warning") -> None:
    """Configure structlog once for the process (idempotent)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # tracebacks become text first, so the scrubber sees them too
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # look sys.stderr up per logger, not once: it may be swapped (test runners, daemons)
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a logger bound to a component name."""
    # a lazy proxy: it follows configure() even when the module asking for it was imported first
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]
