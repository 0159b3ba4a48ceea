"""The memory agent end to end on real homes: recall -> respond -> memorize, threads in SQLite, streaming."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.fake_openai import FakeOpenAIServer

from memos import ManualClock, MemOS
from memos.agents.memory_agent import NO_LLM, MemoryAgent, trim_history
from memos.agents.threads import THREADS_FILE
from memos.cube import Level, Namespace
from memos.errors import BackendError, UserError
from memos.kernel import Session
from memos.llm.base import Message, MessageLike, ToolLike, ToolSchema
from memos.llm.testing import FunctionLLM, ScriptedLLM
from memos.policy import MemoryOp, Observation, OpKind, Policy
from memos.tiers.activation import SYSTEM_PROMPT

NS = "alice/chat"
LISBON = "I moved to Lisbon in May 2023."
FACTS = [LISBON, "My cat Pixel is grey and sleeps in boxes.", "I work as a nurse at the Santa Maria hospital."]
QUESTION = "When did I move to Lisbon?"
ANSWER = "You moved to Lisbon in May 2023."


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    """A started OpenAI-compatible server on 127.0.0.1, stopped after the test."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def alice(mos: MemOS) -> Session:
    """Alice with three memories in alice/chat, written on 2024-01-01 (the Lisbon one dated 8 May 2023)."""
    session = mos.as_user("alice")
    session.write(NS, FACTS[0], event_time="2023-05-08")
    for fact in FACTS[1:]:
        session.write(NS, fact)
    return session


def reopen(home: Path, clock: ManualClock, **overrides: object) -> MemOS:
    """The test home opened the way the `mos` fixture opens it."""
    return MemOS.open(home, embedder="hash", clock=clock, auto_paging=False, **overrides)


def stored_turns(session: Session) -> list[tuple[str, str]]:
    """(text, level) of the cubes the policy wrote in alice/chat, oldest first."""
    return [(c.text, c.level.value) for c in session.list(NS) if c.header.provenance.source.value == "policy"]


def test_recall_puts_the_relevant_memory_into_the_prompt(alice: Session) -> None:
    llm = ScriptedLLM([ANSWER])
    with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
        reply = agent.invoke(QUESTION)

    [call] = llm.calls
    assert call.streamed
    system, user = call.messages
    assert system == Message(role="system", content=SYSTEM_PROMPT)
    assert user.role == "user"
    assert "[8 May 2023] I moved to Lisbon in May 2023." in user.content.splitlines()
    assert user.content.endswith(f"\n\nQuestion: {QUESTION}")
    # the prompt carries exactly the working set the reply reports
    assert user.content == f"{reply.working_set.render()}\n\nQuestion: {QUESTION}"
    lisbon = next(c for c in alice.list(NS) if c.text == LISBON)
    assert lisbon.id in [item.cube.id for item in reply.working_set.items]
    assert (reply.text, reply.thread_id, reply.history, reply.adapters) == (ANSWER, "default", [], [])
    assert reply.messages == [m.to_openai() for m in call.messages]
    count = alice.mos.tokenizer.count
    assert reply.prompt_tokens == count(SYSTEM_PROMPT) + count(user.content) + 2 * 4
    assert reply.history_tokens == 0


def test_memorize_writes_the_exchange_through_the_kernel_with_audit(alice: Session) -> None:
    llm = ScriptedLLM([ANSWER, "Sure thing!"])
    with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
        first = agent.invoke(QUESTION, thread_id="t1")
        filler = agent.invoke("ok thanks", thread_id="t1")

    assert stored_turns(alice) == [(f"alice: {QUESTION}", "short"), (f"assistant: {ANSWER}", "short")]
    assert [cube.text for cube in first.written] == [f"alice: {QUESTION}", f"assistant: {ANSWER}"]
    asked, answered = first.written
    assert asked.header.provenance.model_dump(include={"source", "actor", "session_id", "turn_id", "speaker"}) == {
        "source": "policy",
        "actor": "alice",
        "session_id": "alice/t1",
        "turn_id": "alice/t1:1",
        "speaker": "alice",
    }
    assert (answered.header.provenance.speaker, answered.header.provenance.turn_id) == ("assistant", "alice/t1:2")
    # the kernel linked the reply to the message it answers (same conversation session)
    assert answered.header.provenance.preceded_by == asked.id
    assert asked.header.labels == {"policy": "heuristic"}
    for cube in first.written:
        [entry] = alice.audit(cube.id)
        assert (entry["action"], entry["actor"], entry["ns"]) == ("write", "alice", NS)
    # "ok thanks" and "Sure thing!" are filler or too short for the heuristic policy: nothing written
    assert (filler.ops, filler.written, len(stored_turns(alice))) == ([], [], 2)


def test_a_thread_resumes_after_the_home_is_closed_and_opened_again(home: Path, clock: ManualClock) -> None:
    mos = reopen(home, clock)
    alice = mos.as_user("alice")
    alice.write(NS, FACTS[1])
    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM(["Pixel is your grey cat."])) as agent:
        agent.invoke("What is my cat called?", thread_id="pets")
    mos.close()
    assert (home / THREADS_FILE).is_file()

    mos = reopen(home, clock)
    alice = mos.as_user("alice")
    llm = ScriptedLLM(["Boxes."])
    with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
        earlier = [
            {"role": "user", "content": "What is my cat called?"},
            {"role": "assistant", "content": "Pixel is your grey cat."},
        ]
        assert agent.history("pets") == earlier
        assert agent.history("other") == []
        reply = agent.invoke("Where does it like to sleep?", thread_id="pets")
        assert agent.history("pets") == [
            *earlier,
            {"role": "user", "content": "Where does it like to sleep?"},
            {"role": "assistant", "content": "Boxes."},
        ]
        # bob's thread of the same name is his own
        assert MemoryAgent(mos.as_user("bob"), namespace="bob", llm=llm).history("pets") == []
    mos.close()

    [call] = llm.calls
    assert [(m.role, m.content) for m in call.messages[1:3]] == [(m["role"], m["content"]) for m in earlier]
    assert call.messages[-1].content.endswith("Question: Where does it like to sleep?")
    assert reply.history == earlier
    # the turns the history carries are not repeated in the working set
    assert "What is my cat called?" not in call.messages[-1].content
    assert "[1 January 2024] My cat Pixel is grey and sleeps in boxes." in call.messages[-1].content


def test_streaming_yields_the_text_invoke_returns(alice: Session) -> None:
    text = "You moved to Lisbon, in May 2023, for work."
    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM([text, text], chunk_size=5)) as agent:
        replies = agent.stream(QUESTION, thread_id="streamed")
        assert not replies.done
        with pytest.raises(UserError, match="read the stream to its end first"):
            _ = replies.reply
        chunks = list(replies)
        invoked = agent.invoke(QUESTION, thread_id="invoked")

    assert chunks == [text[i : i + 5] for i in range(0, len(text), 5)]
    assert "".join(chunks) == replies.reply.text == invoked.text == text
    assert LISBON in replies.reply.working_set.render() and LISBON in invoked.working_set.render()


def test_the_first_chunk_arrives_before_the_model_has_finished(alice: Session) -> None:
    # a model that yields its first chunk, then waits until the caller has seen it
    seen = threading.Event()

    class Gated(ScriptedLLM):
        def stream(
            self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None, **kwargs: Any
        ) -> Iterator[str]:
            chunks = super().stream(messages, tools, **kwargs)

            def gated() -> Iterator[str]:
                yield next(chunks)
                assert seen.wait(5), "the caller never received the first chunk"
                yield from chunks

            return gated()

    with MemoryAgent(alice, namespace=NS, llm=Gated([ANSWER], chunk_size=8)) as agent:
        replies = agent.stream(QUESTION)
        first = next(replies)
        seen.set()
        rest = list(replies)
    assert first + "".join(rest) == ANSWER


def test_a_failing_model_leaves_the_thread_and_memory_as_they_were(alice: Session) -> None:
    def down(messages: list[Message], tools: list[ToolSchema]) -> str:
        raise BackendError("the model server at http://127.0.0.1:9 is unreachable")

    before = len(alice.list(NS))
    with MemoryAgent(alice, namespace=NS, llm=FunctionLLM(down)) as agent:
        with pytest.raises(BackendError, match="unreachable"):
            agent.invoke(QUESTION)
        assert agent.history() == []
    assert len(alice.list(NS)) == before

    llm = ScriptedLLM([ANSWER])
    with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
        agent.invoke(QUESTION)
        # the failed message left nothing behind: one system message, the new message, no stray history
        assert len(llm.calls[0].messages) == 2
        assert agent.history() == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]


def test_history_is_trimmed_to_its_token_budget(alice: Session) -> None:
    count = alice.mos.tokenizer.count
    turns = [
        {"role": "user", "content": "first question about Lisbon"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ]
    # room for the last three messages only: the leading assistant message is dropped too
    budget = sum(count(t["content"]) + 4 for t in turns[1:])
    kept, used = trim_history(turns, budget, count)
    assert kept == turns[2:]
    assert used == sum(count(t["content"]) + 4 for t in turns[2:])
    assert trim_history(turns, 3, count) == ([], 0)

    llm = ScriptedLLM(["one", "two", "three"])
    with MemoryAgent(alice, namespace=NS, llm=llm, history_tokens=12) as agent:
        agent.invoke("Hello there memory agent", thread_id="t")
        agent.invoke("Tell me more please", thread_id="t")
        reply = agent.invoke("And finally this", thread_id="t")
    # a message costs its tokens + 4: the latest reply (1 + 4) fits 12 tokens, the message before it does not,
    # and a reply without its message is dropped, so no history is sent
    assert [m.role for m in llm.calls[2].messages] == ["system", "user"]
    assert reply.history == []
    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM(["four"]), history_tokens=20) as agent:
        reply = agent.invoke("One more", thread_id="t")
    assert reply.history == [
        {"role": "user", "content": "And finally this"},
        {"role": "assistant", "content": "three"},
    ]
    assert reply.history_tokens == count("And finally this") + count("three") + 8


def test_a_custom_policy_instance_and_its_failures(alice: Session) -> None:
    class FactsOnly(Policy):
        """Stores the user's messages as long-term facts, and tries to update a cube that does not exist."""

        name = "facts-only"

        def observe(self, session: Session, namespace: Namespace, observation: Observation) -> list[MemoryOp]:
            if observation.speaker != "alice":
                return []
            missing = "01890a5d-ac96-774b-bcce-b302099a8057"
            return [
                MemoryOp(OpKind.insert, text=observation.text.removeprefix("alice: "), level=Level.long),
                MemoryOp(OpKind.update, cube_id=missing, text="never"),
            ]

    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM(["Noted."]), policy=FactsOnly()) as agent:
        reply = agent.invoke("My sister Ana lives in Porto.")

    [fact] = reply.written
    assert (fact.text, fact.level, fact.header.labels) == ("My sister Ana lives in Porto.", Level.long, {})
    assert alice.get(fact.id).text == "My sister Ana lives in Porto."
    [failed] = reply.failed
    assert failed.op.kind == OpKind.update
    assert failed.error == "no cube with id 01890a5d-ac96-774b-bcce-b302099a8057"


def test_the_graph_is_a_langgraph_state_graph_usable_directly(alice: Session) -> None:
    with MemoryAgent(alice, namespace=NS, llm=ScriptedLLM([ANSWER])) as agent:
        nodes = set(agent.graph.get_graph().nodes)
        state = agent.graph.invoke({"input": QUESTION}, agent.config("direct"))
        assert agent.history("direct") == state["messages"]

    assert {"recall", "respond", "memorize"} <= nodes
    assert state["namespace"] == NS
    assert "[8 May 2023] I moved to Lisbon in May 2023." in state["context"]
    assert state["context_tokens"] == alice.mos.tokenizer.count(state["context"])
    assert [alice.get(i).text for i in state["memorized"]] == [f"alice: {QUESTION}", f"assistant: {ANSWER}"]


def test_the_kernel_model_over_an_openai_compatible_server(
    home: Path, clock: ManualClock, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMOS_LLM", "openai:fake-model")
    monkeypatch.setenv("MEMOS_OPENAI_BASE_URL", fake_server.url)
    monkeypatch.setenv("MEMOS_OPENAI_MAX_RETRIES", "0")
    fake_server.enqueue_chat(["You moved ", "to Lisbon ", "in May 2023."])
    with reopen(home, clock) as mos:
        alice = mos.as_user("alice")
        alice.write(NS, LISBON, event_time="2023-05-08")
        with MemoryAgent(alice, namespace=NS) as agent:
            assert agent.llm is mos.llm
            chunks = list(agent.stream(QUESTION))
            stored = stored_turns(alice)

    assert chunks == ["You moved ", "to Lisbon ", "in May 2023."]
    [request] = [r for r in fake_server.requests if r.path == "/v1/chat/completions"]
    body = request.json
    assert (body["model"], body["stream"]) == ("fake-model", True)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[8 May 2023] I moved to Lisbon in May 2023." in body["messages"][1]["content"]
    assert stored == [(f"alice: {QUESTION}", "short"), ("assistant: You moved to Lisbon in May 2023.", "short")]


def test_no_model_is_one_line_saying_how_to_configure_one(mos: MemOS) -> None:
    assert mos.llm is None
    with pytest.raises(UserError) as caught:
        MemoryAgent(mos.as_user("alice"), namespace=NS)
    assert caught.value.message == NO_LLM
    assert "\n" not in NO_LLM
    for setting in ("MEMOS_LLM", "openai:MODEL", "MEMOS_OPENAI_BASE_URL", "hf:", "vllm:"):
        assert setting in NO_LLM
    assert not (mos.home / THREADS_FILE).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_tokens": 0}, "the working-set token budget must be an integer from 1 to 1000000, got 0"),
        ({"history_tokens": True}, "the history token budget must be an integer from 1 to 1000000, got True"),
        ({"policy": "no-such-policy"}, "unknown policy 'no-such-policy'"),
        ({"namespace": "alice//x"}, "invalid namespace segment ''"),
        ({"temperature": -1.0}, "temperature must be >= 0, got -1.0"),
    ],
)
def test_bad_settings_are_refused(alice: Session, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"namespace": NS, "llm": ScriptedLLM(), **kwargs}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MemoryAgent(alice, **arguments)  # type: ignore[arg-type]


def test_bad_messages_and_threads_are_refused_before_anything_runs(alice: Session) -> None:
    llm = ScriptedLLM([ANSWER])
    with MemoryAgent(alice, namespace=NS, llm=llm) as agent:
        with pytest.raises(UserError, match="the message is empty"):
            agent.stream("   ")
        with pytest.raises(UserError, match="invalid thread id 'a/b'"):
            agent.stream("hello there", thread_id="a/b")
        agent.invoke(QUESTION, thread_id="lisbon")
    with MemoryAgent(alice, namespace="alice/work", llm=llm) as agent, pytest.raises(UserError) as caught:
        agent.stream("hello there", thread_id="lisbon")
    assert caught.value.message == (
        "thread 'lisbon' talks about alice/chat, not alice/work: use --ns alice/chat or another thread"
    )
    assert len(llm.calls) == 1
    agent.close()
    with pytest.raises(UserError, match="this memory agent is closed"):
        agent.history()


def test_a_local_model_answers_with_the_namespace_block_injected(
    home: Path, clock: ManualClock, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from support.tiny_model import build_tiny_model

    from memos.llm.hf import HFChat

    llm = HFChat(build_tiny_model(tmp_path / "tiny"))
    with reopen(home, clock, llm=llm) as mos:
        alice = mos.as_user("alice")
        ids = [alice.write(NS, fact, level="long").id for fact in FACTS]
        [block] = alice.migrate(ids, to="activation")
        asked = alice.ask(NS, QUESTION, max_tokens=8)
        with MemoryAgent(alice, namespace=NS, max_tokens=8) as agent:
            reply = agent.invoke(QUESTION)
        injected = llm.last_stats.injected_tokens if llm.last_stats is not None else 0

    assert reply.working_set.activation is not None and reply.working_set.activation.id == block.id
    assert reply.messages[0]["content"] == reply.working_set.system
    # streamed through the kernel's model with the block's KV injected: the same greedy tokens as `ask`
    assert injected == asked.cached_tokens == block.header.tokens > 0
    assert reply.text == asked.text
