"""Conversation files -> WriteRequests, one per turn: a `json` session file, `jsonl` messages, or LoCoMo samples.

Readers are generators so a caller can stream batches into `write_many`; `scan` reads a whole file
first so a malformed one is rejected before anything is written. Every problem is one UserError
line that says where it is (file, line and column, or session and turn) and what is wrong.
`ingest_with_policy` instead lets a memory policy decide, turn by turn, what to write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos import inputs
from memos.cube import Level, Namespace, parse_namespace
from memos.errors import BackendError, MemosError, UserError
from memos.kernel import WriteRequest
from memos.policy import Observation, apply_ops

if TYPE_CHECKING:
    from memos.kernel import Session
    from memos.policy import Policy

FORMATS = ("json", "jsonl", "locomo")
#: extensions that `auto` reads as one JSON message per line
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: labels every ingested turn carries
TURN_LABELS = {"type": "episode"}

#: a namespace suffix below the target namespace (None: the target itself)
Suffix = tuple[str, ...] | None
Item = tuple[Suffix, WriteRequest]

_LOCOMO_DATE = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*([ap])\.?m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+)\.?,?\s+(\d{4})\s*$", re.IGNORECASE
)
_MONTHS = {
    name: number
    for number, full in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        start=1,
    )
    for name in (full, full[:3])
}
_SESSION_KEY = re.compile(r"session_(\d+)")
#: a LoCoMo session number is at most this many digits
_MAX_SESSION_DIGITS = 6
#: the largest conversation file read, in bytes (checked before reading; the `max_ingest_bytes` setting)
MAX_INGEST_BYTES = 256 << 20
#: how much of a bad value an error message quotes
_QUOTE_CHARS = 60
#: the longest id (session, turn, sample) a file may give
MAX_ID_CHARS = 256
#: provenance fields of a turn an Observation carries in its metadata
_OBSERVED = ("session_id", "turn_id", "external_id")
#: how many operation errors a PolicySummary keeps
MAX_ERRORS = 20


@dataclass
class Scan:
    """What a whole-file validation pass found."""

    format: str
    num_turns: int = 0
    num_sessions: int = 0
    #: distinct namespace suffixes, in file order (LoCoMo files with several samples have one per sample)
    suffixes: list[Suffix] = field(default_factory=list)


@dataclass
class PolicySummary:
    """What a policy did with an input: chunks seen, operations asked for, applied and failed."""

    policy: str
    num_chunks: int = 0
    num_ops: int = 0
    num_applied: int = 0
    num_failed: int = 0
    #: applied operations per kind ("insert", "update", "delete")
    applied_by_kind: dict[str, int] = field(default_factory=dict)
    #: the first MAX_ERRORS failures, each "chunk INDEX: message"
    errors: list[str] = field(default_factory=list)

    def add(self, other: PolicySummary) -> None:
        """Add another run's counts (another namespace of the same input) to this one."""
        self.num_chunks += other.num_chunks
        self.num_ops += other.num_ops
        self.num_applied += other.num_applied
        self.num_failed += other.num_failed
        for kind, count in other.applied_by_kind.items():
            self.applied_by_kind[kind] = self.applied_by_kind.get(kind, 0) + count
        self.errors.extend(other.errors[: MAX_ERRORS - len(self.errors)])


@dataclass(frozen=True)
class _Turn:
    """One parsed turn before it becomes a WriteRequest; `where` locates it for error messages."""

    suffix: Suffix
    where: str
    session: str | None
    request: WriteRequest


def check_format(fmt: str) -> str:
    """A known format name (auto, json, jsonl, locomo), lower-cased."""
    value = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if value not in ("auto", *FORMATS):
        raise UserError(f"unknown format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    return value


def parse_locomo_date(text: str) -> datetime:
    """Parse a LoCoMo session time such as '1:56 pm on 8 May, 2023' into an aware UTC datetime."""
    match = _LOCOMO_DATE.match(text) if isinstance(text, str) else None
    month = _MONTHS.get(match.group(5).lower()) if match else None
    if match is None or month is None:
        raise UserError(f"{_quote(text)} is not a LoCoMo date like '1:56 pm on 8 May, 2023'")
    hour, minute, half, day, _, year = match.groups()
    if not 1 <= int(hour) <= 12:
        raise UserError(f"{_quote(text)} has hour {hour}; LoCoMo dates use a 12-hour clock (1-12 am/pm)")
    hour24 = int(hour) % 12 + (12 if half.lower() == "p" else 0)
    try:
        return datetime(int(year), month, int(day), hour24, int(minute), tzinfo=UTC)
    except ValueError as exc:
        raise UserError(f"{_quote(text)} is not a real date ({exc})") from None


def iter_requests(
    path: str | Path, fmt: str = "auto", *, max_text_chars: int | None = None, max_bytes: int | None = None
) -> Iterator[Item]:
    """Yield (namespace suffix, WriteRequest) per turn, in file order; UserError at the first bad turn."""
    for turn in _turns(Path(path), check_format(fmt), max_text_chars, max_bytes)[1]:
        yield turn.suffix, turn.request


def batched(items: Iterable[Item], size: int) -> Iterator[tuple[Suffix, list[WriteRequest]]]:
    """Group consecutive items with the same suffix into batches of at most `size` requests."""
    if size < 1:
        raise UserError(f"batch size must be at least 1, got {size}")
    suffix: Suffix = None
    batch: list[WriteRequest] = []
    for item_suffix, request in items:
        if batch and (item_suffix != suffix or len(batch) >= size):
            yield suffix, batch
            batch = []
        suffix = item_suffix
        batch.append(request)
    if batch:
        yield suffix, batch


def iter_batches(
    path: str | Path,
    fmt: str = "auto",
    *,
    size: int = 64,
    max_text_chars: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[tuple[Suffix, list[WriteRequest]]]:
    """Yield (namespace suffix, requests) batches of at most `size` turns from a conversation file."""
    return batched(iter_requests(path, fmt, max_text_chars=max_text_chars, max_bytes=max_bytes), size)


def scan(
    path: str | Path, fmt: str = "auto", *, max_text_chars: int | None = None, max_bytes: int | None = None
) -> Scan:
    """Read and check the whole file without keeping it; UserError at the first problem.

    A file over `max_bytes` (None: MAX_INGEST_BYTES) is refused before it is read.
    """
    resolved, turns = _turns(Path(path), check_format(fmt), max_text_chars, max_bytes)
    result = Scan(format=resolved)
    sessions: set[tuple[Suffix, str | None]] = set()
    for turn in turns:
        result.num_turns += 1
        sessions.add((turn.suffix, turn.session))
        if turn.suffix not in result.suffixes:
            result.suffixes.append(turn.suffix)
    result.num_sessions = len(sessions)
    return result


def count_turns(
    path: str | Path, fmt: str = "auto", *, max_text_chars: int | None = None, max_bytes: int | None = None
) -> int:
    """How many turns (WriteRequests) the file holds, validating all of it."""
    return scan(path, fmt, max_text_chars=max_text_chars, max_bytes=max_bytes).num_turns


def detect_format(path: str | Path, fmt: str = "auto", *, max_bytes: int | None = None) -> str:
    """The format `auto` resolves to for this file (json, jsonl or locomo)."""
    return _turns(Path(path), check_format(fmt), None, max_bytes)[0]


# ---- through a memory policy -----------------------------------------------------------------


def observation(request: WriteRequest, index: int) -> Observation:
    """A parsed turn as what a policy sees: its text, speaker, and session id, turn id, external id, date."""
    provenance = request.provenance or {}
    metadata: dict[str, Any] = {key: provenance[key] for key in _OBSERVED if provenance.get(key)}
    if request.event_time is not None:
        when = request.event_time
        metadata["date"] = when.isoformat() if isinstance(when, datetime) else str(when)
    return Observation(text=request.text, index=index, speaker=provenance.get("speaker"), metadata=metadata)


def iter_observations(
    path: str | Path, fmt: str = "auto", *, max_text_chars: int | None = None, max_bytes: int | None = None
) -> Iterator[tuple[Suffix, Observation]]:
    """Yield (namespace suffix, Observation) per turn, in file order; the index counts turns per suffix."""
    counters: dict[Suffix, int] = {}
    for suffix, request in iter_requests(path, fmt, max_text_chars=max_text_chars, max_bytes=max_bytes):
        index = counters.get(suffix, 0)
        counters[suffix] = index + 1
        yield suffix, observation(request, index)


def ingest_with_policy(
    session: Session,
    namespace: Namespace | Sequence[str] | str,
    observations: Iterable[Observation],
    policy: Policy,
) -> PolicySummary:
    """Feed observations one by one to a policy and apply its operations as the session's user.

    The policy starts afresh (`reset`), and each observation's operations are applied before the
    next one is observed, so the policy can recall what it has just written. A failing operation
    is counted (and its error kept), never raised.
    """
    ns = parse_namespace(namespace)
    name = policy.name or type(policy).__name__
    summary = PolicySummary(policy=name)
    policy.reset()
    for item in observations:
        summary.num_chunks += 1
        try:
            ops = policy.observe(session, ns, item)
        except MemosError:
            raise
        except Exception as exc:
            raise BackendError(
                f"policy {name!r} failed on chunk {item.index}: {type(exc).__name__}: {exc}", policy=name
            ) from exc
        summary.num_ops += len(ops)
        for result in apply_ops(session, ns, ops, policy=name):
            if result.ok:
                summary.num_applied += 1
                kind = result.op.kind.value
                summary.applied_by_kind[kind] = summary.applied_by_kind.get(kind, 0) + 1
            else:
                summary.num_failed += 1
                if len(summary.errors) < MAX_ERRORS:
                    summary.errors.append(f"chunk {item.index}: {result.error}")
    return summary


# ---- reading ---------------------------------------------------------------------------------


def _turns(path: Path, fmt: str, max_text_chars: int | None, max_bytes: int | None) -> tuple[str, Iterator[_Turn]]:
    """Resolve the format (reading the JSON document if needed) and return a turn generator."""
    limit = _byte_limit(max_bytes)
    _check_file(path, limit)
    if fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in JSONL_SUFFIXES):
        return "jsonl", _checked(_from_jsonl(path, limit), max_text_chars)
    doc = _load_json(path, limit)
    if fmt == "auto":
        fmt = _sniff(doc, path)
    turns = _from_locomo(doc, path) if fmt == "locomo" else _from_json(doc, path)
    return fmt, _checked(turns, max_text_chars)


def _byte_limit(max_bytes: int | None) -> int:
    if max_bytes is None:
        return MAX_INGEST_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise UserError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    return max_bytes


def _too_large(path: Path, size: int | str, limit: int) -> UserError:
    return UserError(
        f"{path} is {size} bytes, over the limit of {limit} bytes for a conversation file: "
        "split it, or raise MEMOS_MAX_INGEST_BYTES"
    )


def _check_file(path: Path, limit: int) -> None:
    """The file exists, is a regular file, and is within the size limit (checked before anything is read)."""
    size = inputs.file_size(
        path, missing="no such file: {path}", not_file="{path} is not a file", unreadable="cannot read {path}: {error}"
    )
    if size > limit:
        raise _too_large(path, size, limit)


def _load_json(path: Path, limit: int) -> Any:
    try:
        with path.open("rb") as handle:
            # never more than the limit, even if the file grew after its size was checked
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _too_large(path, f"more than {limit}", limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path} is not valid JSON: {_json_problem(exc)}") from None


def _json_problem(exc: ValueError | RecursionError) -> str:
    """Why json.loads refused text it did not call malformed: too deep, or a number of too many digits."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return "a number has too many digits" if "digits" in str(exc) else " ".join(str(exc).split())


def _sniff(doc: Any, path: Path) -> str:
    if isinstance(doc, Mapping) and "conversation" in doc:
        return "locomo"
    if isinstance(doc, Mapping) and "sessions" in doc:
        return "json"
    if isinstance(doc, list):
        if doc and isinstance(doc[0], Mapping) and "conversation" in doc[0]:
            return "locomo"
        return "json"
    raise UserError(
        f"cannot tell the format of {path}: expected an object with 'sessions', a list of messages, "
        "or LoCoMo samples; pass --format json, jsonl or locomo"
    )


def _checked(turns: Iterator[_Turn], max_text_chars: int | None) -> Iterator[_Turn]:
    for turn in turns:
        if max_text_chars is not None:
            try:
                inputs.text(turn.request.text, max_text_chars)
            except UserError as exc:
                raise UserError(f"{turn.where}: {exc.message}") from None
        yield turn


def _from_jsonl(path: Path, limit: int) -> Iterator[_Turn]:
    counters: dict[str | None, int] = {}
    # a character is at least one byte: more characters than the limit means more bytes too
    budget = limit
    try:
        with path.open(encoding="utf-8") as handle:
            number = 0
            while line := handle.readline(budget + 1):
                number += 1
                budget -= len(line)
                if budget < 0:
                    raise _too_large(path, f"more than {limit}", limit)
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{where} is not valid JSON: {exc.msg} at column {exc.colno}") from None
                except (ValueError, RecursionError) as exc:
                    raise UserError(f"{where} is not valid JSON: {_json_problem(exc)}") from None
                yield _message(obj, where, counters, session=None, event_time=None)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (bad byte near offset {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _from_json(doc: Any, path: Path) -> Iterator[_Turn]:
    if isinstance(doc, list):
        counters: dict[str | None, int] = {}
        for number, obj in enumerate(doc, start=1):
            yield _message(obj, f"{path} message {number}", counters, session=None, event_time=None)
        return
    if not isinstance(doc, Mapping) or "sessions" not in doc:
        raise UserError(f"{path}: expected an object with a 'sessions' list, or a list of messages")
    sessions = doc["sessions"]
    if not isinstance(sessions, list):
        raise UserError(f"{path}: 'sessions' must be a list, not {_kind(sessions)}")
    for number, session in enumerate(sessions, start=1):
        where = f"{path} session {number}"
        if not isinstance(session, Mapping):
            raise UserError(f"{where}: expected an object, got {_kind(session)}")
        session_id = _ident(session.get("id"), where, "id") or f"s{number}"
        where = f"{path} session {session_id!r}"
        if "turns" not in session:
            raise UserError(f"{where}: missing field 'turns'")
        turns = session["turns"]
        if not isinstance(turns, list):
            raise UserError(f"{where}: 'turns' must be a list, not {_kind(turns)}")
        date = _when(session.get("date"), where, "date")
        counters = {}
        for index, obj in enumerate(turns, start=1):
            yield _message(obj, f"{where} turn {index}", counters, session=session_id, event_time=date)


def _from_locomo(doc: Any, path: Path) -> Iterator[_Turn]:
    samples = doc if isinstance(doc, list) else [doc]
    # one sample lands in the target namespace itself; several get one sub-namespace each
    several = len(samples) > 1
    seen: set[str] = set()
    checked: list[tuple[Suffix, str, Mapping[str, Any]]] = []
    for number, sample in enumerate(samples, start=1):
        where = f"{path} sample {number}"
        if not isinstance(sample, Mapping):
            raise UserError(f"{where}: expected a LoCoMo sample object, got {_kind(sample)}")
        sample_id = _ident(sample.get("sample_id"), where, "sample_id")
        if sample_id is not None:
            where = f"{path} sample {sample_id!r}"
        conversation = sample.get("conversation")
        if conversation is None:
            raise UserError(f"{where}: missing field 'conversation'")
        if not isinstance(conversation, Mapping):
            raise UserError(f"{where}: 'conversation' must be an object, not {_kind(conversation)}")
        suffix: Suffix = None
        if several:
            if sample_id is None:
                raise UserError(f"{where}: missing field 'sample_id' (needed to name its namespace)")
            if sample_id in seen:
                raise UserError(f"{where}: sample_id {sample_id!r} appears twice")
            seen.add(sample_id)
            try:
                suffix = parse_namespace((sample_id,))
            except UserError as exc:
                raise UserError(f"{where}: sample_id cannot name a namespace: {exc.message}") from None
        checked.append((suffix, where, conversation))
    for suffix, where, conversation in checked:
        yield from _locomo_sessions(conversation, where, suffix)


def _locomo_sessions(conversation: Mapping[str, Any], where: str, suffix: Suffix) -> Iterator[_Turn]:
    numbers = sorted(_session_number(key, where) for key in conversation if _SESSION_KEY.fullmatch(str(key)))
    for number in numbers:
        session_id = f"session_{number}"
        here = f"{where} {session_id}"
        turns = conversation[session_id]
        if not isinstance(turns, list):
            raise UserError(f"{here}: must be a list of turns, not {_kind(turns)}")
        raw_date = conversation.get(f"{session_id}_date_time")
        date = None
        if raw_date not in (None, ""):
            try:
                date = parse_locomo_date(raw_date)
            except UserError as exc:
                raise UserError(f"{here}_date_time: {exc.message}") from None
        for index, obj in enumerate(turns, start=1):
            turn_where = f"{here} turn {index}"
            if not isinstance(obj, Mapping):
                raise UserError(f"{turn_where}: expected an object, got {_kind(obj)}")
            dia_id = _ident(obj.get("dia_id"), turn_where, "dia_id")
            if dia_id is None:
                raise UserError(f"{turn_where}: missing field 'dia_id'")
            turn_where = f"{here} turn {dia_id}"
            speaker = _required_text(obj, ("speaker",), turn_where)
            body = _required_text(obj, ("text",), turn_where)
            request = _request(speaker, body, _caption(obj, turn_where), date, session_id, dia_id, dia_id)
            yield _Turn(suffix, turn_where, session_id, request)


def _session_number(key: str, where: str) -> int:
    """The number of a LoCoMo session key; UserError for a key that only looks like one (session_01, session_٣)."""
    digits = _SESSION_KEY.fullmatch(key).group(1)  # type: ignore[union-attr]
    if not digits.isascii() or len(digits) > _MAX_SESSION_DIGITS or str(int(digits)) != digits:
        raise UserError(f"{where}: {_quote(key)} is not a LoCoMo session key: name them session_1, session_2, ...")
    return int(digits)


def _message(
    obj: Any, where: str, counters: dict[str | None, int], *, session: str | None, event_time: datetime | None
) -> _Turn:
    """A message object: speaker|role, text|content, and optional time, session, id, blip_caption."""
    if not isinstance(obj, Mapping):
        raise UserError(f"{where}: expected a message object, got {_kind(obj)}")
    speaker = _required_text(obj, ("speaker", "role"), where)
    body = _required_text(obj, ("text", "content"), where)
    if session is None:
        session = _ident(obj.get("session"), where, "session")
    external_id = _ident(obj.get("id"), where, "id")
    counters[session] = counters.get(session, 0) + 1
    turn_id = external_id or (f"{session}:{counters[session]}" if session else str(counters[session]))
    when = _when(obj.get("time"), where, "time") or event_time
    request = _request(speaker, body, _caption(obj, where), when, session, turn_id, external_id)
    return _Turn(None, where, session, request)


def _request(
    speaker: str,
    body: str,
    caption: str | None,
    event_time: datetime | None,
    session_id: str | None,
    turn_id: str | None,
    external_id: str | None,
) -> WriteRequest:
    text = f"{speaker}: {body}"
    if caption:
        text += f" [shares an image: {caption}]"
    return WriteRequest(
        text=text,
        level=Level.short,
        event_time=event_time,
        provenance={
            "source": "message",
            "session_id": session_id,
            "turn_id": turn_id,
            "external_id": external_id,
            "speaker": speaker,
        },
        labels=dict(TURN_LABELS),
    )


def _required_text(obj: Mapping[str, Any], names: tuple[str, ...], where: str) -> str:
    """The first of `names` present in obj, as non-empty text."""
    name = next((n for n in names if n in obj), None)
    if name is None:
        spelled = " (or ".join(repr(n) for n in names) + ")" * (len(names) - 1)
        raise UserError(f"{where}: missing field {spelled}")
    value = _unicode(obj[name], where, name)
    if not value.strip():
        raise UserError(f"{where}: {name!r} is empty")
    return value.strip() if name in ("speaker", "role") else value


def _caption(obj: Mapping[str, Any], where: str) -> str | None:
    caption = obj.get("blip_caption")
    if caption is None:
        return None
    return _unicode(caption, where, "blip_caption").strip() or None


def _ident(value: Any, where: str, name: str) -> str | None:
    """An optional identifier field: a string or an integer, as a string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UserError(f"{where}: {name!r} must be a string, not {_kind(value)}")
    text = (_unicode(value, where, name) if isinstance(value, str) else str(value)).strip()
    if len(text) > MAX_ID_CHARS:
        raise UserError(f"{where}: {name!r} is {len(text)} characters, over the limit of {MAX_ID_CHARS} for an id")
    return text or None


def _unicode(value: Any, where: str, name: str) -> str:
    """A string that can be stored: JSON's \\ud800-style escapes can make lone surrogates, which cannot."""
    if not isinstance(value, str):
        raise UserError(f"{where}: {name!r} must be a string, not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(
            f"{where}: {name!r} holds a lone surrogate (\\u{ord(value[exc.start]):04x}), not valid Unicode"
        ) from None
    return value


def _quote(value: str) -> str:
    """A value for an error message: its repr, cut short."""
    shown = repr(value)
    return shown if len(shown) <= _QUOTE_CHARS else shown[: _QUOTE_CHARS - 3] + "..."


def _when(value: Any, where: str, name: str) -> datetime | None:
    try:
        return inputs.when(value, name)
    except UserError as exc:
        raise UserError(f"{where}: {exc.message}") from None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
