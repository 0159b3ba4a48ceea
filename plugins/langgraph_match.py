"""The matching rules of memos' LangGraph store: namespace labels as memos segments, filters, match conditions.

A LangGraph label of at most 64 letters, digits, '_', '@', '-' starting with a letter or digit is a memos
segment as it is; any other is stored as "u." + its UTF-8 in base32 (at most 38 bytes), which no kept label
can be, as LangGraph labels never hold '.'. Filters are exact values (nested mappings and lists compared
whole) or operator mappings with $eq $ne $gt $gte $lt $lte; a missing or incomparable field never matches.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from memos.errors import UserError

try:
    from langgraph.store.base import InvalidNamespaceError, MatchCondition
except ImportError as exc:  # pragma: no cover - only without the agents extra
    raise UserError("the LangGraph store needs langgraph: pip install 'memos[agents]'") from exc

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_@-]{0,63}")
_ENCODED = "u."
MAX_ENCODED_BYTES = 38
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


class StoreNamespaceError(UserError, InvalidNamespaceError):
    """A namespace LangGraph or memos refuses: both a memos UserError and LangGraph's InvalidNamespaceError."""


# ---- namespaces --------------------------------------------------------------------------------


def encode_label(label: str) -> str | None:
    """The memos segment that stores a LangGraph label, or None when the label is too long for one."""
    if _PLAIN.fullmatch(label):
        return label
    raw = label.encode("utf-8")
    if len(raw) > MAX_ENCODED_BYTES:
        return None
    return _ENCODED + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_segment(segment: str) -> str | None:
    """The LangGraph label a memos segment stores, or None when no label encodes to it."""
    if "." not in segment:
        return segment
    if not segment.startswith(_ENCODED):
        return None
    body = segment[len(_ENCODED) :].upper()
    try:
        return base64.b32decode(body + "=" * (-len(body) % 8)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def check_labels(namespace: Any, what: str = "namespace") -> tuple[str, ...]:
    """A namespace (or prefix, or pattern) whose labels LangGraph accepts, as a tuple; StoreNamespaceError if not."""
    if not isinstance(namespace, tuple | list):
        raise StoreNamespaceError(f"a {what} is a tuple of strings like ('users', '123'), not {namespace!r}")
    for label in namespace:
        if not isinstance(label, str):
            raise StoreNamespaceError(f"{what} label {label!r} in {tuple(namespace)} must be a string")
        if not label:
            raise StoreNamespaceError(f"{what} {tuple(namespace)} has an empty label; give each label some text")
        if "." in label or "\x00" in label:
            raise StoreNamespaceError(f"{what} label {label!r} in {tuple(namespace)} holds '.' or NUL: remove it")
    return tuple(namespace)


# ---- filters -----------------------------------------------------------------------------------


def check_filter(flt: Any) -> None:
    """Raise UserError unless `flt` is None or a mapping whose operator dicts use only $eq $ne $gt $gte $lt $lte."""
    if flt is not None and not isinstance(flt, Mapping):
        raise UserError(f"a search filter is a mapping like {{'status': 'active'}}, not {type(flt).__name__}")
    pending = list((flt or {}).values())
    while pending:
        want = pending.pop()
        if isinstance(want, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in want):
            wrong = sorted(str(k) for k in want if k not in _OPERATORS)
            if wrong:
                raise UserError(f"unknown filter operator {wrong[0]!r}: use {', '.join(sorted(_OPERATORS))}")
        elif isinstance(want, Mapping | list | tuple):
            pending.extend(want.values() if isinstance(want, Mapping) else want)


def matches(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """Whether a value passes a filter: exact match (nested), or $eq $ne $gt $gte $lt $lte as InMemoryStore does."""
    return not flt or all(_compare(value.get(key), want) for key, want in flt.items())


def _compare(have: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if any(k.startswith("$") for k in want):
            return all(_apply(have, op, arg) for op, arg in want.items())
        return isinstance(have, Mapping) and all(_compare(have.get(k), v) for k, v in want.items())
    if isinstance(want, list | tuple):
        same_size = isinstance(have, list | tuple) and len(have) == len(want)
        return same_size and all(_compare(h, w) for h, w in zip(have, want, strict=True))
    return bool(have == want)


def _apply(have: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(have == arg)
    if op == "$ne":
        return bool(have != arg)
    try:
        left, right = float(have), float(arg)
    except (TypeError, ValueError):
        # InMemoryStore raises here; a value that is missing or not a number simply does not match
        return False
    return {"$gt": left > right, "$gte": left >= right, "$lt": left < right, "$lte": left <= right}[op]


def does_match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether a namespace meets a prefix or suffix condition ('*' matches any one label)."""
    path = tuple(condition.path)
    if condition.match_type == "suffix":
        namespace, path = namespace[::-1], path[::-1]
    return len(namespace) >= len(path) and all(want in ("*", have) for have, want in zip(namespace, path, strict=False))
