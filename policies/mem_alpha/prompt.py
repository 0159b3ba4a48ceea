"""The single-turn prompt Mem-α answers for each chunk: memory in the system prompt, chunk in the user prompt."""

from __future__ import annotations

import json
from collections.abc import Sequence

from memos.llm.base import Message, ToolSchema

from .memory import MAX_CORE_TOKENS, MemoryState
from .parse import ARGS_MARK, FUNCTION_MARK, RESULT_MARK
from .tools import WRITE_TOOLS

#: the prompt limit of the paper's rollouts; the recent-item lists are halved until the prompt fits
MAX_PROMPT_TOKENS = 6144
#: semantic and episodic items shown per list before halving
MAX_RECENT_ITEMS = 5
#: the reply budget the instructions state (80% of the paper's 2,048-token response limit)
MAX_NEW_TOKENS = 1638

SYSTEM = "You manage the long-term memory of an assistant. The memory as it stands now:\n\n{memory}"

INSTRUCTIONS = """\
Memorise the new chunk below so that questions about it can be answered later from memory alone.
- Core memory: one short paragraph (at most {max_core} tokens) with the most important, lasting \
information: who is involved, the main topic, the goal. Rewrite it with memory_update when it should change.
- Episodic memory: one event per item, with its time, written as "At <timestamp>, <who> <did what>".
- Semantic memory: one general fact per item; for a labelled example write "<sample>; Label: <label>".
Add items with new_memory_insert, correct outdated ones with memory_update and remove wrong or \
redundant ones with memory_delete, giving the id shown in brackets. Do not store what memory already holds.
Keep your reply within {max_new_tokens} tokens.

<new_chunk>
{chunk}
</new_chunk>"""


def user_prompt(chunk: str, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The instructions followed by the chunk in `<new_chunk>` tags."""
    return INSTRUCTIONS.format(max_core=MAX_CORE_TOKENS, max_new_tokens=max_new_tokens, chunk=chunk)


def text_tool_prompt(schemas: Sequence[ToolSchema] = WRITE_TOOLS) -> str:
    """Tool descriptions and the ✿ calling convention, for models that write calls as text."""
    lines = ["# Tools", "", "You may call these tools:", ""]
    for schema in schemas:
        lines += [
            f"### {schema.name}",
            "",
            f"{schema.name}: {schema.description} Parameters: {json.dumps(schema.parameters)} "
            "Format the arguments as a JSON object.",
            "",
        ]
    names = ", ".join(schema.name for schema in schemas)
    lines += [
        "To call tools, write one block per call (as many blocks as you need), then stop:",
        "",
        f"{FUNCTION_MARK}: the tool's name, one of [{names}]",
        f"{ARGS_MARK}: the arguments as a JSON object",
        f"{FUNCTION_MARK}: the next tool's name",
        f"{ARGS_MARK}: its arguments",
        f"{RESULT_MARK}: the results (written by the system, not by you)",
    ]
    return "\n".join(lines)


def system_prompt(state: MemoryState, max_recent: int = MAX_RECENT_ITEMS, *, text_tools: bool = False) -> str:
    """The memory (core and the newest items of each list), plus the ✿ tool section when asked."""
    text = SYSTEM.format(memory=state.render(max_recent))
    return text + "\n\n" + text_tool_prompt() if text_tools else text


def chunk_messages(
    state: MemoryState,
    chunk: str,
    *,
    text_tools: bool = False,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_recent: int = MAX_RECENT_ITEMS,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[Message]:
    """System and user messages for one chunk, halving the recent items shown until within the limit.

    A chunk too long for the limit on its own is still sent whole, with no recent items shown.
    """
    user = user_prompt(chunk, max_new_tokens)
    user_tokens = state.tokenizer.count(user)
    system = system_prompt(state, max_recent, text_tools=text_tools)
    while max_recent > 0 and state.tokenizer.count(system) + user_tokens > max_prompt_tokens:
        max_recent //= 2
        system = system_prompt(state, max_recent, text_tools=text_tools)
    return [Message(role="system", content=system), Message(role="user", content=user)]
