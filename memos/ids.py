"""Sortable ids: UUIDv7 (RFC 9562), monotonic within a process."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_last_seq = 0


def new_id(ms: int | None = None) -> str:
    """Return a new UUIDv7 string; ids made later in a process sort after earlier ones."""
    global _last_ms, _last_seq
    with _lock:
        now_ms = int(time.time() * 1000) if ms is None else ms
        if now_ms <= _last_ms:
            # same (or earlier) millisecond: bump the 12-bit sequence, borrowing from the clock if full
            now_ms = _last_ms
            _last_seq += 1
            if _last_seq > 0xFFF:
                now_ms += 1
                _last_seq = 0
        else:
            _last_seq = 0
        _last_ms = now_ms
        seq = _last_seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def is_id(text: str) -> bool:
    """Tell whether text is a well-formed UUID string."""
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True
