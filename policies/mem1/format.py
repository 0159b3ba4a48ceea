"""MEM1's tag formats: parse a model's turn (internal state + one action) and render every segment.

Two tag sets name the same three parts of a turn:

* ``"think"`` — the released model (Mem-Lab/Qwen2.5-7B-RL-RAG-Q2-EM-Release): ``<think>`` holds the
  internal state, the action is ``<search>QUERY</search>`` or ``<answer>a1; a2</answer>``, and the
  environment's reply comes back in ``<information>`` with a "[HINT]You have N turns left.[/HINT]" line
  and the top documents as "Doc i(Title: t) text";
* ``"paper"`` — the paper's names: ``<IS>``, ``<query>``, ``<answer>``, ``<info>``.

Parsing never raises: a turn without a complete internal state and a complete, non-empty action, or
with an opening tag left unclosed, comes back with ``valid=False`` and the problem in words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from memos.errors import UserError

FormatName = Literal["think", "paper"]
ActionKind = Literal["search", "answer"]
#: what separates the objectives' answers inside one answer action
ANSWER_SEPARATOR = ";"


@dataclass(frozen=True)
class Tags:
    """The tag names one format uses for the parts of a turn."""

    state: str
    search: str
    answer: str
    info: str

    def of(self, kind: ActionKind) -> str:
        """The tag of an action kind."""
        return self.search if kind == "search" else self.answer


FORMATS: dict[str, Tags] = {
    "think": Tags(state="think", search="search", answer="answer", info="information"),
    "paper": Tags(state="IS", search="query", answer="answer", info="info"),
}


def tags_for(format: str) -> Tags:
    """The tag set of a format name; UserError for an unknown one."""
    tags = FORMATS.get(format) if isinstance(format, str) else None
    if tags is None:
        raise UserError(f"unknown MEM1 format {format!r}: use one of {', '.join(FORMATS)}", format=format)
    return tags


@dataclass(frozen=True)
class Document:
    """One retrieved document as MEM1 shows it: a title and a text."""

    title: str
    text: str
    #: the environment's own id for it (a LoCoMo dia_id, a passage id); never shown to the model
    id: str = ""


@dataclass(frozen=True)
class ParsedTurn:
    """What one model turn said: its internal state and its action, or why it is not a valid turn."""

    raw: str
    valid: bool
    #: the internal state's text (inside the tags, stripped); None when missing
    state: str | None = None
    #: "search" or "answer"; None when no complete action was found
    action: ActionKind | None = None
    #: the query or the answer text (inside the tags, stripped)
    content: str = ""
    #: why the turn is invalid (None when valid)
    problem: str | None = None

    @property
    def answers(self) -> list[str]:
        """The answer action split into one answer per objective ("a1; a2" -> ["a1", "a2"])."""
        return split_answers(self.content) if self.action == "answer" else []


@dataclass(frozen=True)
class ParsedObservation:
    """What an information block held: the turns-left hint and the documents."""

    valid: bool
    turns_left: int | None = None
    hint: str = ""
    documents: list[Document] = field(default_factory=list)


def split_answers(text: str) -> list[str]:
    """One answer per objective: the text split at ';', each stripped."""
    return [part.strip() for part in text.split(ANSWER_SEPARATOR)]


def _blocks(tag: str, text: str) -> list[re.Match[str]]:
    """What `re.finditer(<tag>(.*?)</tag>)` finds, in linear time on any input.

    finditer retries at every opening tag and scans to the end of the text for a closing one, so
    thousands of unclosed tags took quadratic time. Here, once an opening tag has no closing tag
    after it, no later one can have one either, and the search stops.
    """
    opener = re.compile(rf"<{tag}>", re.IGNORECASE)
    block = re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL | re.IGNORECASE)
    found: list[re.Match[str]] = []
    position = 0
    while (start := opener.search(text, position)) is not None:
        match = block.match(text, start.start())
        if match is None:
            break
        found.append(match)
        position = match.end()
    return found


def _unbalanced(tag: str, text: str) -> bool:
    opened = len(re.findall(rf"<{tag}>", text, re.IGNORECASE))
    closed = len(re.findall(rf"</{tag}>", text, re.IGNORECASE))
    return opened != closed


def parse_turn(text: str, format: str = "think") -> ParsedTurn:
    """Parse one model turn: internal state, then one search or answer; invalid (never an exception) if malformed.

    When the text holds two or more answers, the last one counts: a completion echoed after the prompt
    carries the prompt's template answer tag first (MEM1's reward parser takes the last match for this
    reason). An answer anywhere wins over a search; of several searches the last counts too. The state
    is the last complete state block that opens before the chosen action.
    """
    tags = tags_for(format)
    if not isinstance(text, str):
        return ParsedTurn(raw="", valid=False, problem=f"the turn is not text but {type(text).__name__}")
    for tag in (tags.state, tags.search, tags.answer):
        if _unbalanced(tag, text):
            return ParsedTurn(raw=text, valid=False, problem=f"a <{tag}> tag is not closed (or closed twice)")
    answers, searches = _blocks(tags.answer, text), _blocks(tags.search, text)
    kind: ActionKind | None = "answer" if answers else "search" if searches else None
    if kind is None:
        return ParsedTurn(
            raw=text, valid=False, problem=f"no complete <{tags.search}> or <{tags.answer}> action in the turn"
        )
    action = (answers or searches)[-1]
    content = action.group(1).strip()
    states = [m for m in _blocks(tags.state, text) if m.start() < action.start()]
    state = states[-1].group(1).strip() if states else None
    problem = None
    if state is None:
        problem = f"no complete <{tags.state}> internal state before the action"
    elif not content:
        problem = f"the <{tags.of(kind)}> action is empty"
    return ParsedTurn(raw=text, valid=problem is None, state=state, action=kind, content=content, problem=problem)


def close_stopped_action(text: str, format: str = "think") -> str:
    """Re-append the closing action tag a server cut off as a stop sequence (as MEM1's inference client does)."""
    tags = tags_for(format)
    if not isinstance(text, str):
        raise UserError(f"a MEM1 turn is text, not {type(text).__name__}")
    for tag in (tags.answer, tags.search):
        opened = [m.end() for m in re.finditer(rf"<{tag}>", text, re.IGNORECASE)]
        closed = [m.end() for m in re.finditer(rf"</{tag}>", text, re.IGNORECASE)]
        if len(opened) == len(closed) + 1 and (not closed or opened[-1] > closed[-1]):
            return text.rstrip() + f"</{tag}>"
    return text


# ---- rendering -------------------------------------------------------------------------------


def render_state(state: str, format: str = "think") -> str:
    """The internal-state segment a turn keeps: the state in its tags, then a newline."""
    tag = tags_for(format).state
    return f"<{tag}>{state}</{tag}>\n"


def render_action(kind: ActionKind, content: str, format: str = "think") -> str:
    """The action segment: a query or the answers in their tags, then a newline."""
    tag = tags_for(format).of(kind)
    return f"<{tag}>{content}</{tag}>\n"


def render_answers(answers: Sequence[str]) -> str:
    """Answers joined as one answer action's content: "a1; a2; ..."."""
    return f"{ANSWER_SEPARATOR} ".join(a.strip() for a in answers)


def hint(turns_left: int) -> str:
    """The turns-left hint MEM1 puts at the top of each information block ("" when none are left)."""
    if turns_left > 1:
        return f"[HINT]You have {turns_left} turns left.[/HINT]"
    if turns_left == 1:
        return "[HINT]You have 1 turn left. You must answer the question in the next turn.[/HINT]"
    return ""


def format_documents(documents: Sequence[Document]) -> str:
    """Documents as MEM1 lists them: "Doc i(Title: t) text", one per line (newlines inside become spaces)."""
    lines = []
    for position, doc in enumerate(documents, start=1):
        title = " ".join(doc.title.split())
        text = " ".join(doc.text.split())
        lines.append(f"Doc {position}(Title: {title}) {text}\n")
    return "".join(lines)


def render_observation(documents_text: str, turns_left: int, format: str = "think") -> str:
    """The information segment: the hint line, then the documents, in the format's info tags."""
    tag = tags_for(format).info
    line = hint(turns_left)
    head = f"{line}\n" if line else ""
    body = documents_text.strip()
    return f"<{tag}>\n{head}{body}\n</{tag}>\n"


#: the hint's head; a count of more than 9 digits is not a hint
_HINT = re.compile(r"\[HINT\]\s*You have (\d{1,9}) turns? left\b", re.IGNORECASE)
_HINT_END = re.compile(r"\[/HINT\]", re.IGNORECASE)
_DOC = re.compile(r"^Doc (\d+)\(Title: (.*?)\) ?(.*)$", re.MULTILINE)


def parse_documents(text: str) -> list[Document]:
    """The "Doc i(Title: t) text" lines of a text, in order."""
    return [Document(title=m.group(2).strip(), text=m.group(3).strip()) for m in _DOC.finditer(text)]


def parse_observation(text: str, format: str = "think") -> ParsedObservation:
    """Parse the last information block of a text: its hint (turns left) and documents; invalid if there is none."""
    tag = tags_for(format).info
    blocks = _blocks(tag, text) if isinstance(text, str) else []
    if not blocks:
        return ParsedObservation(valid=False)
    body = blocks[-1].group(1)
    found = _hint(body)
    return ParsedObservation(
        valid=True,
        turns_left=int(found[0]) if found else None,
        hint=found[1] if found else "",
        documents=parse_documents(body),
    )


def _hint(body: str) -> tuple[str, str] | None:
    """(turns-left digits, whole hint) of the first closed hint, in linear time (a lazy regex took quadratic)."""
    head = _HINT.search(body)
    if head is None:
        return None
    end = _HINT_END.search(body, head.end())
    # no closing tag after the first hint: none after a later one either
    return (head.group(1), body[head.start() : end.end()]) if end else None
