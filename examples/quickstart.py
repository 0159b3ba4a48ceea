"""memos in one page: open a home, write memories, recall them, build a working set, chat with memory.

    python examples/quickstart.py ./quickstart-home

With MEMOS_LLM set (e.g. MEMOS_LLM=openai:gpt-4o-mini, or hf:/path/to/model) the memory agent talks to
that model. Without it, a stand-in model answers with the memory line of its prompt that shares the most
words with the message, so the script runs offline. Running it again resumes the same conversation thread.
"""

from __future__ import annotations

import re
import sys

from memos import MemOS
from memos.agents.memory_agent import MemoryAgent
from memos.llm.base import Message, ToolSchema
from memos.llm.testing import FunctionLLM

NS = "alice/chat"
FACTS = [
    ("I moved to Lisbon in May 2023.", "2023-05-08"),
    ("My cat Pixel is grey and sleeps in cardboard boxes.", None),
    ("I work night shifts as a nurse at Santa Maria hospital.", None),
]


def words(text: str) -> set[str]:
    """The lower-cased words of a text."""
    return set(re.findall(r"\w+", text.lower()))


def stand_in(messages: list[Message], tools: list[ToolSchema]) -> str:
    """A stand-in model: quotes the dated memory line of the prompt that best matches the question."""
    prompt = messages[-1].content
    memory, _, question = prompt.rpartition("Question: ")
    lines = [line for line in memory.splitlines() if line.startswith("[")]
    if not lines:
        return "I have no memory of that."
    return "From memory: " + max(lines, key=lambda line: len(words(line) & words(question)))


def main(home: str) -> None:
    """Run the tour on a home (created if missing)."""
    with MemOS.open(home) as mos:
        alice = mos.as_user("alice")
        if not alice.list(NS, limit=1):
            for text, when in FACTS:
                alice.write(NS, text, event_time=when, level="long")

        print("recall:")
        for hit in alice.recall(NS, "Where does Alice live?", k=2):
            print(f"  {hit.score:.3f}  {hit.cube.text}")

        working = alice.context(NS, "When did Alice move to Lisbon?", budget_tokens=200)
        print(f"working set ({working.tokens}/{working.budget_tokens} tokens):\n{working.render()}")

        llm = None if mos.llm is not None else FunctionLLM(stand_in)
        with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
            for message in ("When did I move to Lisbon?", "What does my cat Pixel like?"):
                print(f"you> {message}")
                replies = agent.stream(message, thread_id="quickstart")
                for chunk in replies:
                    print(chunk, end="", flush=True)
                reply = replies.reply
                print(f"\n   ({len(reply.working_set.items)} memories in context, {len(reply.written)} remembered)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/quickstart.py HOME  (a folder for the memos home; created if missing)")
    main(sys.argv[1])
