"""Shared pieces of the parser fuzz tests (no tests here): settings, hostile text strategies, the outcome check."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from memos.errors import UserError

#: every fuzz test: modest example counts, no deadline, no example database written anywhere
FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: for properties that open a home or run the CLI per example
FUZZ_SLOW = settings(FUZZ, max_examples=60)

#: strings that break naive parsers: nesting, huge numbers, odd escapes, controls, surrogates, bidi
NASTY_STRINGS = (
    "",
    " ",
    "\n",
    "\x00",
    "\r\n",
    "\u2028",
    "\ufeff",
    "\u202e",
    "\\ud800",
    '"\\ud800"',
    "[" * 5000,
    "{" * 5000,
    '{"a":' * 5000,
    "[" * 5000 + "]" * 5000,
    "1" * 5000,
    "-" + "9" * 5000,
    "1e999999",
    "NaN",
    "-Infinity",
    '{"a": 1}' * 3,
    '{"a": "\\u0000"}',
    "٣",
    "𝟙𝟚",
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(NASTY_STRINGS[:14])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A string from `base` with a few characters cut, doubled, or replaced by hostile fragments."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(("cut", "insert", "truncate", "dup")))
        if kind == "cut":
            text = text[:at] + text[at + 1 :]
        elif kind == "insert":
            text = text[:at] + draw(st.sampled_from(NASTY_STRINGS) | st.characters()) + text[at:]
        elif kind == "truncate":
            text = text[:at]
        else:
            text = text[:at] + text[at:] + text[at:]
    return text


def json_texts() -> st.SearchStrategy[str]:
    """JSON documents, broken JSON, hostile fragments and arbitrary text."""
    dumped = json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
    return st.one_of(dumped, mutated(dumped), st.sampled_from(NASTY_STRINGS), st.text(max_size=60))


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The call's result, or the UserError it raised after checking that its message is one clear line."""
    try:
        return call(*args, **kwargs)
    except UserError as exc:
        message = str(exc)
        assert message.strip(), "a UserError must say what is wrong"
        assert "\n" not in message and "\r" not in message, f"a UserError must be one line: {message!r}"
        assert len(message) < 2000, f"a UserError must be short, got {len(message)} characters"
        return exc


class Count:
    """How many examples of a fuzz property ran to the end (each one passed its checks)."""

    def __init__(self) -> None:
        self.passed = 0

    def ok(self) -> None:
        """Count one example that passed."""
        self.passed += 1
