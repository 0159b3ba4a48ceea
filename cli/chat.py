"""The chat command: talk with the memory agent in the terminal, the answer streamed token by token.

Each message is answered from the namespace's working set and the thread's earlier messages, and
the exchange is remembered through a memory policy (see `memos.agents.memory_agent`). Threads are
kept in the home, so `memos chat --thread ID` resumes a conversation. Slash commands look at and
edit the memory between turns. Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from memos.errors import MemosError, UserError

from .common import console, load_settings, one_line, open_session, plural, shorten

if TYPE_CHECKING:
    from rich.console import Console

    from memos.agents.memory_agent import MemoryAgent, Reply, ReplyStream
    from memos.cube import MemCube

#: the prompt before each message
PROMPT = "you> "
#: memories `/memory` lists when no number is given, and the most it lists
MEMORY_ROWS = 20
MAX_MEMORY_ROWS = 500
#: width of a memory's text in the `/memory` and `/context` tables
TEXT_WIDTH = 80
HELP = (
    ("/memory [N]", f"the namespace's N most recent memories (default {MEMORY_ROWS}): id, level, text"),
    ("/forget ID", "forget a memory (soft: `memos restore ID` brings it back)"),
    ("/context", "the working set the last answer was built from, with token counts"),
    ("/help", "this list"),
    ("/exit", "leave (so do Ctrl-D and Ctrl-C); the thread is kept for next time"),
)


def chat(
    ctx: typer.Context,
    namespace: Annotated[
        str | None, typer.Option("--ns", "-n", help="Namespace to talk about (default: your own root namespace).")
    ] = None,
    thread: Annotated[
        str, typer.Option("--thread", "-t", help="Conversation thread; the same id resumes it later.")
    ] = "default",
    policy: Annotated[
        str, typer.Option("--policy", help="Memory policy that decides what to remember (see `memos plugins list`).")
    ] = "heuristic",
    budget: Annotated[int, typer.Option("--budget", "-b", help="Token budget of each turn's working set.")] = 1500,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Most tokens per answer.")] = None,
) -> None:
    """Chat with the configured LLM (MEMOS_LLM): memories recalled for every message, the exchange remembered."""
    from memos.agents.threads import check_thread_id
    from memos.cube import parse_namespace

    # checked before the home (and with it a model) is loaded: bad input fails fast and on one line
    if namespace is not None:
        parse_namespace(namespace)
    check_thread_id(thread)
    if not 1 <= budget <= 1_000_000:
        raise UserError(f"--budget must be from 1 to 1000000 tokens, got {budget}")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {max_tokens}")
    agent_class = _agent_class()
    if load_settings(ctx).llm.strip() == "none":
        from memos.agents.memory_agent import NO_LLM

        raise UserError(NO_LLM)
    with open_session(ctx) as session:
        # only a missing --ns defaults to the user's root namespace
        where = session.user if namespace is None else namespace
        with agent_class(session, namespace=where, policy=policy, budget_tokens=budget, max_tokens=max_tokens) as agent:
            Chat(agent, thread, console()).run()


def _agent_class() -> type[MemoryAgent]:
    try:
        from memos.agents.memory_agent import MemoryAgent
    except ImportError as exc:
        raise UserError(
            f"memos chat needs LangGraph ({exc.name or exc} is missing): pip install -e '.[agents]'"
        ) from None
    return MemoryAgent


class Chat:
    """The read-answer loop of `memos chat`: messages go to the agent, slash commands act on memory."""

    def __init__(self, agent: MemoryAgent, thread_id: str, out: Console) -> None:
        self.agent = agent
        self.thread_id = thread_id
        self.out = out
        #: the last finished turn (what /context shows)
        self.last: Reply | None = None

    def run(self) -> None:
        """Greet, then answer messages and commands until /exit, end of input or Ctrl-C."""
        self.greet()
        while True:
            try:
                line = self.out.input(PROMPT).strip()
            except (EOFError, KeyboardInterrupt):
                self.out.print()
                return
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return
                else:
                    self.turn(line)
            except KeyboardInterrupt:
                self.out.print("\n(interrupted)", markup=False)
                return
            except MemosError as err:
                # a bad command or a failing model ends the turn, never the chat
                self.error(err.message)

    def greet(self) -> None:
        """Say where the chat is and whether the thread is resumed."""
        agent = self.agent
        where = "/".join(agent.namespace)
        self.out.print(
            f"memos chat: {where} as {agent.session.user}, thread {self.thread_id}, model {agent.llm.model_id}, "
            f"policy {agent.policy.name}",
            markup=False,
        )
        earlier = agent.history(self.thread_id)
        if earlier:
            self.out.print(f"resumed thread {self.thread_id}: {plural(len(earlier), 'earlier message')}", markup=False)
        self.out.print("type /help for commands, /exit to leave", markup=False)

    def turn(self, message: str) -> None:
        """Answer one message, printing the answer as it streams, then a line on memory used and written."""
        replies = self.agent.stream(message, thread_id=self.thread_id)
        try:
            self._show(replies)
        finally:
            replies.close()
        reply = replies.reply
        self.last = reply
        self.out.print(f"-- {used_line(reply)}", style="dim", markup=False, highlight=False)
        for failed in reply.failed:
            self.error(f"not remembered: {failed.error}")

    def _show(self, replies: ReplyStream) -> None:
        out = self.out
        if not out.is_terminal:
            # plain output (a pipe, a file, a test): each chunk is written as it arrives
            try:
                for chunk in replies:
                    out.file.write(chunk)
                    out.file.flush()
            finally:
                # ends the line even when the model fails half-way, so the error starts a line of its own
                out.file.write("\n")
            return
        from rich.live import Live
        from rich.markdown import Markdown

        text = ""
        with Live(Markdown(text), console=out, refresh_per_second=15, vertical_overflow="visible") as live:
            for chunk in replies:
                text += chunk
                live.update(Markdown(text))

    def command(self, line: str) -> bool:
        """Run a slash command; False when the chat should end."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            for usage, what in HELP:
                self.out.print(f"  {usage:<12} {what}", markup=False, highlight=False)
        elif name == "/memory":
            self.memory(argument)
        elif name == "/forget":
            self.forget(argument)
        elif name == "/context":
            self.context()
        else:
            raise UserError(f"unknown command {name!r}: type /help for the commands")
        return True

    def memory(self, argument: str) -> None:
        """List the namespace's most recent memories."""
        limit = _count(argument)
        cubes = recent_memories(self.agent, limit)
        where = "/".join(self.agent.namespace)
        if not cubes:
            self.out.print(f"no memories under {where} yet", markup=False)
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        table.add_column("id", no_wrap=True)
        table.add_column("level", no_wrap=True)
        table.add_column("text")
        for cube in cubes:
            table.add_row(cube.id, cube.level.value, shorten(cube.text, TEXT_WIDTH))
        self.out.print(table)
        self.out.print(f"-- {memories(len(cubes))} under {where}, newest first", markup=False)

    def forget(self, argument: str) -> None:
        """Forget one memory through the kernel (soft, so it can be restored)."""
        if not argument or len(argument.split()) != 1:
            raise UserError("usage: /forget ID (ids are listed by /memory)")
        session = self.agent.session
        cube = session.get(argument)
        session.forget(cube.id)
        self.out.print(f"forgot {cube.id}: {shorten(cube.text, TEXT_WIDTH)}", markup=False, highlight=False)

    def context(self) -> None:
        """Show the working set, history and prompt sizes of the last turn."""
        if self.last is None:
            self.out.print("no answer yet: the working set of each answer shows here after it", markup=False)
            return
        reply = self.last
        working = reply.working_set
        if working.items:
            from rich import box
            from rich.table import Table

            table = Table(box=box.SIMPLE_HEAD, show_edge=False)
            table.add_column("section", no_wrap=True)
            table.add_column("id", no_wrap=True)
            table.add_column("tokens", justify="right", no_wrap=True)
            table.add_column("text")
            for item in working.items:
                table.add_row(item.section, item.cube.id, str(item.tokens), shorten(item.cube.text, TEXT_WIDTH))
            self.out.print(table)
        for line in context_lines(reply):
            self.out.print(line, markup=False, highlight=False)

    def error(self, message: str) -> None:
        """One `error: ...` line on standard error."""
        typer.echo(f"error: {one_line(message)}", err=True)


def used_line(reply: Reply) -> str:
    """What a turn used and wrote, as one line."""
    working = reply.working_set
    line = (
        f"{memories(len(working.items))} in context ({working.tokens}/{working.budget_tokens} tokens), "
        f"{plural(len(reply.history), 'earlier message')}; remembered {memories(len(reply.written))}"
    )
    if reply.failed:
        line += f", {len(reply.failed)} failed"
    return line


def memories(count: int) -> str:
    """'1 memory', '2 memories'."""
    return f"{count} {'memory' if count == 1 else 'memories'}"


def context_lines(reply: Reply) -> list[str]:
    """The token accounting of a turn: working set, history and the whole prompt."""
    working = reply.working_set
    return [
        f"-- working set: {plural(len(working.items), 'item')}, {working.tokens}/{working.budget_tokens} tokens"
        f" for {working.query!r}",
        f"-- history: {plural(len(reply.history), 'earlier message')}, {plural(reply.history_tokens, 'token')}",
        f"-- prompt: {plural(len(reply.messages), 'message')}, {plural(reply.prompt_tokens, 'token')}",
    ]


def recent_memories(agent: MemoryAgent, limit: int) -> list[MemCube]:
    """The active memories under the agent's namespace the user may read, most recently changed first."""
    return agent.session.list(agent.namespace, order="recent", limit=limit)


def _count(argument: str) -> int:
    if not argument:
        return MEMORY_ROWS
    if not argument.isdigit() or not 1 <= int(argument) <= MAX_MEMORY_ROWS:
        raise UserError(f"usage: /memory [N] with N from 1 to {MAX_MEMORY_ROWS}, got {argument!r}")
    return int(argument)


def register(app: typer.Typer) -> None:
    """Add the chat command to the app."""
    app.command()(chat)
