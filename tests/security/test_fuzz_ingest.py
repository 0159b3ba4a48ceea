"""Hostile-input fuzzing of conversation ingest (json, jsonl, LoCoMo) through memos.ingest and `memos ingest`.

Any file gives turns or one clear UserError line, never another exception; a file over the size limit is
refused before it is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.cli import Cli
from test_fuzz_support import FUZZ, FUZZ_SLOW, NASTY_STRINGS, Count, json_scalars, json_values, mutated, outcome

from memos import ingest
from memos.errors import UserError

_DATES = st.sampled_from(
    (
        "2023-05-08T13:56",
        "2023-05-08",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2023-02-30",
        "Z",
        "1:56 pm on 8 May, 2023",
        "13:56 pm on 8 May, 2023",
        "1:56 pm on 31 Feb, 2023",
        "1:56 pm on 8 Mayo, 2023",
        "1:56 pm on 8 May, 0000",
        "١:٥٦ pm on ٨ May, ٢٠٢٣",
        "1:56 pm on 8 may 2023\n",
    )
)
_IDS = st.sampled_from(("D1:1", "s1", "", " ", "a/b", "..", "x" * 100, "\n", "٣")) | st.integers(-5, 5)
_TEXTS = st.sampled_from(("hello", "", "   ", "\x00", "\ud800", "😀" * 3, "a" * 300)) | st.text(max_size=10)
_hostile = json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(st.text(max_size=3), json_scalars)


@st.composite
def _message(draw: st.DrawFn, keys: tuple[str, ...]) -> dict[str, object]:
    """A message object near the accepted shape: known fields with plausible or hostile values."""
    out: dict[str, object] = {}
    for key in keys:
        if draw(st.integers(0, 4)) == 0:
            continue  # a missing field
        good = {"time": _DATES, "date": _DATES, "session": _IDS, "id": _IDS, "dia_id": _IDS, "sample_id": _IDS}
        out[key] = draw(good.get(key, _TEXTS) | _hostile)
    return out


_TURN_KEYS = ("speaker", "role", "text", "content", "time", "session", "id", "blip_caption")
_LOCOMO_KEYS = ("speaker", "text", "dia_id", "blip_caption")
_SESSION_KEYS = st.sampled_from(
    ("session_1", "session_2", "session_01", "session_٣", "session_1\n", "session_" + "9" * 5000, "session_x")
)


@st.composite
def _json_doc(draw: st.DrawFn) -> object:
    messages = st.lists(_message(_TURN_KEYS) | _hostile, max_size=3)
    session = st.fixed_dictionaries({}, optional={"id": _IDS | _hostile, "date": _DATES | _hostile, "turns": messages})
    return draw(messages | st.fixed_dictionaries({"sessions": st.lists(session | _hostile, max_size=3) | _hostile}))


@st.composite
def _locomo_doc(draw: st.DrawFn) -> object:
    conversation: dict[str, object] = {}
    for key in draw(st.lists(_SESSION_KEYS, max_size=3)):
        conversation[key] = draw(st.lists(_message(_LOCOMO_KEYS) | _hostile, max_size=3) | _hostile)
        conversation[f"{key}_date_time"] = draw(_DATES | _hostile)
    sample = draw(
        st.fixed_dictionaries(
            {"conversation": st.just(conversation) | _hostile}, optional={"sample_id": _IDS | _hostile}
        )
    )
    return draw(st.sampled_from((sample, [sample], [sample, sample], [sample, {**sample, "sample_id": "b"}])))


def _encode(doc: object, jsonl: bool) -> str:
    if jsonl and isinstance(doc, list):
        return "\n".join(json.dumps(item, ensure_ascii=False) for item in doc)
    return json.dumps(doc, ensure_ascii=False)


@st.composite
def _file_bytes(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """(file content, file suffix, --format) for a json, jsonl or LoCoMo file, near valid or not at all."""
    suffix = draw(st.sampled_from((".json", ".jsonl", ".ndjson", ".txt")))
    fmt = draw(st.sampled_from(("auto", "json", "jsonl", "locomo", " JSON ", "xml", "")))
    docs = _json_doc() | _locomo_doc() | json_values
    text = draw(docs.map(lambda d: _encode(d, suffix != ".json")))
    text = draw(st.just(text) | mutated(st.just(text)) | st.sampled_from(NASTY_STRINGS))
    data = text.encode("utf-8", "surrogatepass")
    return draw(st.just(data) | st.binary(max_size=40) | st.just(b"\xef\xbb\xbf" + data)), suffix, fmt


def _check_turns(path: Path, fmt: str) -> None:
    """Scan and iterate the file; any outcome but turns or a one-line UserError fails the example."""
    found = outcome(ingest.scan, path, fmt)
    turns = outcome(lambda: list(ingest.iter_requests(path, fmt, max_text_chars=200)))
    observed = outcome(lambda: list(ingest.iter_observations(path, fmt)))
    if isinstance(found, ingest.Scan):
        assert isinstance(observed, list) and len(observed) == found.num_turns
        assert found.format in ingest.FORMATS and len(found.suffixes) <= max(found.num_turns, 1)
        for _, obs in observed:
            assert obs.text.strip() and isinstance(obs.metadata, dict)
    if isinstance(turns, list):
        assert all(len(request.text) <= 200 for _, request in turns)


def test_ingest_files_give_turns_or_one_clear_error(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    count = Count()

    @FUZZ
    @given(case=_file_bytes())
    def check(case: tuple[bytes, str, str]) -> None:
        data, suffix, fmt = case
        path = tmp_path / f"talk{suffix}"
        path.write_bytes(data)
        _check_turns(path, fmt)
        count.ok()

    check()
    record_property("examples", count.passed)
    assert count.passed >= 100


def test_ingest_cli_gives_a_summary_or_one_clear_error(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    count = Count()
    cli = Cli(tmp_path / "home")

    @FUZZ_SLOW
    @given(case=_file_bytes())
    def check(case: tuple[bytes, str, str]) -> None:
        data, suffix, fmt = case
        path = tmp_path / f"talk{suffix}"
        path.write_bytes(data)
        result = cli("ingest", str(path), "-n", "alice/chat", "--format", fmt, ok=False)
        if result.exit_code == 0:
            assert result.stdout.startswith("ingested ")
        else:
            # the CLI prints a UserError as one line on stderr and exits 2
            assert result.exit_code == 2, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        count.ok()

    check()
    record_property("examples", count.passed)
    assert count.passed >= 30


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    with open(path, "wb") as handle:
        handle.truncate(ingest.MAX_INGEST_BYTES + 1)  # sparse: reading it whole would take its size in memory
    start = time.perf_counter()
    with pytest.raises(UserError, match="over the limit"):
        ingest.scan(path)
    assert time.perf_counter() - start < 1.0
    small = tmp_path / f"small{suffix}"
    message = {"speaker": "a", "text": "b" * 100}
    small.write_text(json.dumps(message if suffix == ".jsonl" else [message]))
    with pytest.raises(UserError, match="over the limit of 50 bytes"):
        ingest.scan(small, max_bytes=50)
    assert ingest.scan(small, max_bytes=1000).num_turns == 1


def test_locomo_session_keys_that_only_look_numbered_are_refused(tmp_path: Path) -> None:
    turn = {"speaker": "A", "text": "hi", "dia_id": "D1:1"}
    for key in ("session_01", "session_٣", "session_" + "9" * 5000):
        path = tmp_path / "locomo.json"
        path.write_text(json.dumps({"sample_id": "s", "conversation": {key: [turn]}}))
        found = outcome(ingest.scan, path, "locomo")
        assert isinstance(found, UserError) and "session" in str(found)
