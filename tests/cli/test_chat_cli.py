"""`memos chat` in-process with scripted standard input, the model an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from support.cli import Cli
from support.fake_openai import FakeOpenAIServer

from memos import MemOS
from memos.agents.memory_agent import NO_LLM
from memos.tokens import count_tokens

NS = "alice/chat"
LISBON = "I moved to Lisbon in May 2023."
QUESTION = "When did I move to Lisbon?"
CHUNKS = ["You moved ", "to Lisbon ", "in May 2023."]
ANSWER = "".join(CHUNKS)
#: the working set of QUESTION over the one memory (a short-term page), and its tokens
CONTEXT = f"## Recent conversation\n[8 May 2023] {LISBON}"
CONTEXT_TOKENS = count_tokens(CONTEXT)


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    """A started OpenAI-compatible server on 127.0.0.1, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def env(fake_server: FakeOpenAIServer) -> dict[str, str]:
    """The environment that makes the fake server the home's model (paging only on tick, no retries)."""
    return {
        "MEMOS_LLM": "openai:fake-model",
        "MEMOS_OPENAI_BASE_URL": fake_server.url,
        "MEMOS_OPENAI_MAX_RETRIES": "0",
        "MEMOS_AUTO_PAGING": "false",
    }


@pytest.fixture
def lisbon(cli: Cli) -> str:
    """The id of one memory of alice/chat, dated 8 May 2023."""
    return cli("add", NS, LISBON, "--event-time", "2023-05-08").stdout.strip()


def chat(cli: Cli, env: dict[str, str], *lines: str, args: tuple[str, ...] = ("--ns", NS)) -> Result:
    """Run `memos chat` with these lines typed, then end of input; it must exit 0."""
    return cli("chat", *args, input="".join(f"{line}\n" for line in lines), env=env)


def chat_requests(server: FakeOpenAIServer) -> list[Any]:
    """The JSON bodies of the chat completion requests the server received."""
    return [r.json for r in server.requests if r.path == "/v1/chat/completions"]


def test_a_turn_streams_the_answer_and_remembers_the_exchange(
    cli: Cli, env: dict[str, str], fake_server: FakeOpenAIServer, lisbon: str
) -> None:
    fake_server.enqueue_chat(CHUNKS)

    result = chat(cli, env, QUESTION, "/exit")

    lines = result.stdout.splitlines()
    assert lines[0] == "memos chat: alice/chat as alice, thread default, model openai:fake-model, policy heuristic"
    assert lines[1] == "type /help for commands, /exit to leave"
    assert lines[2] == f"you> {ANSWER}"
    assert (
        lines[3] == f"-- 1 memory in context ({CONTEXT_TOKENS}/1500 tokens), 0 earlier messages; remembered 2 memories"
    )
    assert lines[4:] == ["you> "]
    assert result.stderr == ""
    [body] = chat_requests(fake_server)
    assert body["stream"] is True
    assert body["messages"][-1]["content"] == f"{CONTEXT}\n\nQuestion: {QUESTION}"
    with MemOS.open(cli.home, embedder="hash") as mos:
        texts = [c.text for c in mos.as_user("alice").list(NS)]
    assert texts == [LISBON, f"alice: {QUESTION}", f"assistant: {ANSWER}"]


def test_memory_lists_and_forget_works_and_a_bad_id_does_not_end_the_chat(
    cli: Cli, env: dict[str, str], lisbon: str
) -> None:
    other = cli("add", NS, "My cat Pixel is grey.").stdout.strip()

    result = chat(cli, env, "/memory", f"/forget {other}", "/forget nope", "/forget", "/memory 5", "/exit")

    out = result.stdout
    first, second = out.split("forgot", 1)
    assert "short" in first and "My cat Pixel is grey." in first
    # newest first: the memory added last is listed above the Lisbon one
    assert 0 <= first.index(other) < first.index(lisbon)
    assert "-- 2 memories under alice/chat, newest first" in first
    assert f" {other}: My cat Pixel is grey." in out
    # after /forget the listing holds the other memory only
    assert lisbon in second and other not in second.split("\n", 1)[1]
    assert "-- 1 memory under alice/chat, newest first" in second
    assert result.stderr.splitlines() == [
        "error: 'nope' is not a cube id (ids look like 01890a5d-ac96-774b-bcce-b302099a8057)",
        "error: usage: /forget ID (ids are listed by /memory)",
    ]
    [entry] = [e for e in cli.json("audit", other) if e["action"] == "forget"]
    assert entry["actor"] == "alice"


def test_context_shows_the_working_set_of_the_last_turn_with_token_counts(
    cli: Cli, env: dict[str, str], fake_server: FakeOpenAIServer, lisbon: str
) -> None:
    fake_server.enqueue_chat(CHUNKS)

    result = chat(cli, env, "/context", QUESTION, "/context", "/exit")

    before, after = result.stdout.split(ANSWER, 1)
    assert "no answer yet: the working set of each answer shows here after it" in before
    row = next(line for line in after.splitlines() if lisbon in line)
    assert row.split()[:3] == ["recent", lisbon, str(count_tokens(f"[8 May 2023] {LISBON}"))]
    assert f"-- working set: 1 item, {CONTEXT_TOKENS}/1500 tokens for {QUESTION!r}" in after
    assert "-- history: 0 earlier messages, 0 tokens" in after
    assert "-- prompt: 2 messages, " in after


def test_the_same_thread_resumes_in_a_later_chat(
    cli: Cli, env: dict[str, str], fake_server: FakeOpenAIServer, lisbon: str
) -> None:
    fake_server.enqueue_chat(CHUNKS)
    chat(cli, env, QUESTION)  # ends at end of input
    fake_server.enqueue_chat("Porto is three hours north.")

    result = chat(cli, env, "How far is Porto from there?", "/exit", args=("--ns", NS, "--thread", "default"))

    assert "resumed thread default: 2 earlier messages" in result.stdout
    assert "Porto is three hours north." in result.stdout
    second = chat_requests(fake_server)[1]
    assert [(m["role"], m["content"]) for m in second["messages"][1:3]] == [("user", QUESTION), ("assistant", ANSWER)]
    # another thread starts afresh
    fake_server.enqueue_chat("Hello.")
    fresh = chat(cli, env, "Hello there, who are you?", args=("--ns", NS, "--thread", "other"))
    assert "resumed" not in fresh.stdout
    assert [m["role"] for m in chat_requests(fake_server)[2]["messages"]] == ["system", "user"]


def test_help_unknown_commands_and_a_failing_model_keep_the_chat_going(
    cli: Cli, env: dict[str, str], fake_server: FakeOpenAIServer
) -> None:
    fake_server.fail_next(400, message="the model is overloaded")
    fake_server.enqueue_chat("Still here.")

    result = chat(cli, env, "/help", "/nope", "Are you there, model?", "Are you there now?")

    for usage in ("/memory [N]", "/forget ID", "/context", "/help", "/exit"):
        assert f"  {usage}" in result.stdout
    stderr = result.stderr.splitlines()
    assert stderr[0] == "error: unknown command '/nope': type /help for the commands"
    assert len(stderr) == 2 and "the model is overloaded" in stderr[1]
    assert "Still here." in result.stdout
    # the failed turn was not kept: the second request carries no history
    assert [m["role"] for m in chat_requests(fake_server)[1]["messages"]] == ["system", "user"]


def test_without_a_model_chat_says_how_to_configure_one_and_exits_2(cli: Cli) -> None:
    assert cli.user_error("chat") == f"error: {NO_LLM}"
    assert cli.user_error("chat", env={"MEMOS_LLM": "none"}) == f"error: {NO_LLM}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--thread", "a b"),
            "error: invalid thread id 'a b': use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit",
        ),
        (("--budget", "0"), "error: --budget must be from 1 to 1000000 tokens, got 0"),
        (("--max-tokens", "0"), "error: --max-tokens must be at least 1, got 0"),
        (("--ns", "alice//x"), "error: invalid namespace segment ''"),
    ],
)
def test_bad_options_are_one_line_errors(cli: Cli, env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    assert cli.user_error("chat", *args, env=env).startswith(message)


def test_an_unknown_policy_is_one_line_error(cli: Cli, env: dict[str, str]) -> None:
    assert cli.user_error("chat", "--policy", "no-such-policy", env=env).startswith(
        "error: unknown policy 'no-such-policy': available policies are "
    )


def test_on_a_terminal_the_answer_is_rendered_as_markdown_while_it_streams(mos: MemOS) -> None:
    import io
    import re

    from rich.console import Console

    from memos.agents.memory_agent import MemoryAgent
    from memos.cli.chat import Chat
    from memos.llm.testing import ScriptedLLM

    alice = mos.as_user("alice")
    alice.write(NS, LISBON, event_time="2023-05-08")
    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, width=120, color_system="standard")
    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM(["You moved to **Lisbon** in May 2023."])) as agent:
        chat = Chat(agent, "default", out)
        chat.turn(QUESTION)
        chat.context()

    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    # the markdown is rendered (no asterisks left), then the line on memory used and written
    assert "You moved to Lisbon in May 2023." in shown and "**" not in shown
    assert "-- 1 memory in context" in shown and "remembered 2 memories" in shown
    assert f"-- working set: 1 item, {CONTEXT_TOKENS}/1500 tokens for {QUESTION!r}" in shown
