"""A LangGraph chat app whose long-term memory is memos: `MemosStore` is the compiled graph's store.

    python examples/langgraph_app.py [HOME] [--embedder hash] [--llm SPEC]

Each turn, one node recalls what the store knows about the user (a semantic search, which memos answers
with its hybrid recall) and another asks the LLM, then stores each fact the reply marks with
`REMEMBER <topic>: <fact>` under that topic, so a new fact about a topic updates it (a new cube version).
Two threads are two conversations, each checkpointed on its own; the store is shared, so the second
thread knows what the first one learnt. At the end the store's items are shown as the memos cubes they
are, with their versions.

By default a scripted LLM plays the assistant (offline, same output every run); `--llm` takes any
MEMOS_LLM spec, e.g. `openai:gpt-4o-mini`. HOME (default ./.demo/langgraph) is deleted first;
`--embedder hash` uses the deterministic hashing embedder instead of the local MiniLM model.
"""

from __future__ import annotations

import argparse
import operator
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from rich.console import Console
from rich.table import Table

from memos import MemOS, MemosError
from memos.llm.base import LLM
from memos.llm.testing import ScriptedLLM
from memos.plugins.langgraph_store import MemosStore

USER = "alice"
SYSTEM = (
    "You are a friendly assistant with a long-term memory. Answer in one or two sentences, using what "
    "you remember when it helps. When the user tells you something about themselves worth keeping, add "
    "one line per fact: `REMEMBER <topic>: <fact>`, the topic one lowercase word (home, pet, work, ...)."
)
#: (thread, what the user says, what the scripted assistant replies)
SCRIPT: list[tuple[str, str, str]] = [
    (
        "monday",
        "Hi! I just moved to Lisbon with my greyhound Pixel.",
        "Welcome to Lisbon, and hello to Pixel!\n"
        "REMEMBER home: The user lives in Lisbon.\n"
        "REMEMBER pet: The user has a greyhound called Pixel.",
    ),
    (
        "monday",
        "Next week I start as a nurse at the city hospital.",
        "Good luck with the new job!\nREMEMBER work: The user is a nurse at the city hospital.",
    ),
    ("friday", "What was my dog called again?", "Your greyhound is called Pixel."),
    (
        "friday",
        "Big news: I moved again, I live in Porto now.",
        "Porto is lovely, congratulations!\nREMEMBER home: The user lives in Porto.",
    ),
    ("friday", "Where do I live these days?", "You live in Porto."),
]
_REMEMBER = re.compile(r"^REMEMBER\s+([A-Za-z0-9_-]+)\s*:\s*(.+)$", re.MULTILINE)


@dataclass
class Context:
    """What every run of the graph is told: whose memories to use."""

    user: str


class State(TypedDict, total=False):
    """One thread's state: its transcript (checkpointed), and the current turn's question, memories and answer."""

    transcript: Annotated[list[dict[str, str]], operator.add]
    question: str
    memories: list[str]
    answer: str
    remembered: list[str]


def build_graph(llm: LLM, store: MemosStore) -> CompiledStateGraph:
    """recall -> respond, compiled with the store and an in-memory checkpointer (one transcript per thread)."""

    def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        hits = runtime.store.search(("memories", runtime.context.user), query=state["question"], limit=3)
        return {"memories": [hit.value["text"] for hit in hits]}

    def respond(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        known = "\n".join(f"- {m}" for m in state["memories"]) or "(nothing yet)"
        messages = [
            {"role": "system", "content": f"{SYSTEM}\n\nWhat you remember about the user:\n{known}"},
            *state.get("transcript", []),
            {"role": "user", "content": state["question"]},
        ]
        reply = llm.complete(messages).text
        facts = _REMEMBER.findall(reply)
        for topic, fact in facts:
            runtime.store.put(("memories", runtime.context.user), topic.lower(), {"text": fact.strip()})
        answer = _REMEMBER.sub("", reply).strip()
        turn = [{"role": "user", "content": state["question"]}, {"role": "assistant", "content": answer}]
        return {"answer": answer, "transcript": turn, "remembered": [f"{t}: {f.strip()}" for t, f in facts]}

    builder = StateGraph(State, context_schema=Context)
    builder.add_node("recall", recall)
    builder.add_node("respond", respond)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "respond")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=InMemorySaver(), store=store)


def converse(mos: MemOS, llm: LLM, console: Console) -> MemosStore:
    """Play the script through the graph, printing each turn; return the store it wrote to."""
    store = MemosStore(mos.as_user(USER), index={"fields": ["text"]})
    graph = build_graph(llm, store)
    for turn, (thread, question, _) in enumerate(SCRIPT):
        config = {"configurable": {"thread_id": thread}}
        out = graph.invoke({"question": question}, config, context=Context(user=USER))
        if turn == 0 or SCRIPT[turn - 1][0] != thread:
            console.rule(f"thread {thread}")
        console.print(f"[bold]{USER}[/bold]: {question}", markup=True, highlight=False)
        for memory in out["memories"]:
            console.print(f"  recalled: {memory}", markup=False, highlight=False)
        console.print(f"[bold]assistant[/bold]: {out['answer']}", highlight=False)
        for fact in out["remembered"]:
            console.print(f"  stored: {fact}", markup=False, highlight=False)
    return store


def show_store(store: MemosStore, console: Console) -> None:
    """The store's items as the memos cubes that hold them: key, current text, versions, cube id."""
    table = Table(title="the store's items, as memos cubes", title_justify="left")
    for column in ("namespace", "key", "value", "versions", "cube"):
        table.add_column(column)
    for item in store.search((), limit=100):
        cube = store.cube(item.namespace, item.key)
        assert cube is not None  # listed a moment ago, and nothing else writes to this home
        versions = " -> ".join(c.text for c in store.session.history(cube.id))
        table.add_row("/".join(item.namespace), item.key, item.value["text"], versions, cube.id[:13] + "…")
    console.print(table)


def fresh_home(path: Path) -> Path:
    """Delete a previous home of this app, refusing to touch a folder that is not a memos home."""
    path = path.expanduser().resolve()
    if path.exists():
        if any(path.iterdir()) and not (path / "memos.toml").is_file():
            raise SystemExit(f"refusing to delete {path}: it is not empty and has no memos.toml")
        shutil.rmtree(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the app; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("home", nargs="?", default="./.demo/langgraph", help="memos home (deleted first)")
    parser.add_argument("--embedder", default=None, help="minilm (default setting), hash, hash:DIM")
    parser.add_argument("--llm", default=None, help="a MEMOS_LLM spec; default: the scripted assistant")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    overrides: dict[str, object] = {"auto_paging": False}
    if args.embedder:
        overrides["embedder"] = args.embedder
    try:
        with MemOS.open(fresh_home(Path(args.home)), llm=args.llm, **overrides) as mos:
            llm = mos.llm or ScriptedLLM([reply for _, _, reply in SCRIPT])
            console.print(f"[bold]memos + LangGraph[/bold]: assistant {llm.model_id}, embedder {mos.embedder.id}\n")
            show_store(converse(mos, llm, console), console)
    except MemosError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
