"""structlog set-up: human-readable console lines by default, JSON lines with --log-json."""

from __future__ import annotations

import logging
import sys

import structlog


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
