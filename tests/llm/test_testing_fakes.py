"""The fakes that ship in memos.llm.testing: ScriptedLLM and FunctionLLM."""

from __future__ import annotations

import pytest

from memos.errors import UserError
from memos.llm import Capabilities, Completion, Message, ToolCall, ToolSchema, Usage
from memos.llm.testing import Call, FunctionLLM, ScriptedLLM, ScriptExhausted

SEARCH = ToolSchema(name="search", description="Search memory.", parameters={"type": "object"})


def test_scripted_replies_come_in_order_and_strings_become_completions() -> None:
    tool_reply = Completion(
        tool_calls=[ToolCall(id="c1", name="search", arguments={"q": "cats"})],
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
        model="scripted",
    )
    llm = ScriptedLLM(["first"]).enqueue(tool_reply, "third")

    assert llm.complete([Message(role="user", content="a")]) == Completion(text="first", model="scripted")
    assert llm.complete([Message(role="user", content="b")]) is tool_reply
    assert llm.chat("c") == "third"
    assert len(llm.replies) == 0


def test_scripted_records_every_call_validated() -> None:
    llm = ScriptedLLM(["one", "two"])

    llm.complete(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        tools=[SEARCH],
        max_tokens=16,
        temperature=0.5,
        stop="END",
    )
    llm.chat("again", system="be brief")

    assert llm.calls == [
        Call(
            messages=[Message(role="system", content="sys"), Message(role="user", content="hi")],
            tools=[SEARCH],
            kwargs={"max_tokens": 16, "temperature": 0.5, "stop": ["END"]},
        ),
        Call(
            messages=[Message(role="system", content="be brief"), Message(role="user", content="again")],
            tools=[],
            kwargs={"max_tokens": None, "temperature": None, "stop": None},
        ),
    ]


def test_an_empty_script_says_so() -> None:
    llm = ScriptedLLM(["only"])
    llm.chat("first")

    with pytest.raises(ScriptExhausted) as caught:
        llm.chat("second question")

    assert str(caught.value) == (
        "ScriptedLLM has no reply queued for request 2 (last message: 'second question'); enqueue one more reply"
    )
    # the failed request is still recorded, so the test can see what was asked
    assert [call.messages[-1].content for call in llm.calls] == ["first", "second question"]


def test_scripted_stream_yields_chunks_and_records_the_call() -> None:
    llm = ScriptedLLM(["Hello, world", ""], chunk_size=5)

    assert list(llm.stream([Message(role="user", content="hi")], max_tokens=4)) == ["Hello", ", wor", "ld"]
    assert list(llm.stream([Message(role="user", content="hi")])) == []
    assert [call.streamed for call in llm.calls] == [True, True]
    assert llm.calls[0].kwargs == {"max_tokens": 4, "temperature": None, "stop": None}


def test_fakes_reject_what_a_server_would_reject_and_record_nothing() -> None:
    llm = ScriptedLLM(["unused"])

    with pytest.raises(UserError, match="messages is empty"):
        llm.complete([])
    with pytest.raises(UserError, match="role 'bot' is not one of"):
        llm.stream([{"role": "bot", "content": "x"}])
    with pytest.raises(UserError, match="temperature must be >= 0"):
        llm.complete([Message(role="user", content="x")], temperature=-1)
    assert llm.calls == []
    assert len(llm.replies) == 1


def test_enqueue_rejects_a_wrong_reply_type_at_set_up() -> None:
    with pytest.raises(TypeError, match="a fake LLM reply must be a str or a Completion, got int"):
        ScriptedLLM().enqueue(42)  # type: ignore[arg-type]


def test_function_llm_answers_with_the_function() -> None:
    def answer(messages: list[Message], tools: list[ToolSchema]) -> str | Completion:
        if tools and messages[-1].role == "user":
            return Completion(
                tool_calls=[ToolCall(id="c1", name=tools[0].name, arguments={"q": messages[-1].content})],
                finish_reason="tool_calls",
            )
        return f"{len(messages)} messages, last: {messages[-1].content}"

    llm = FunctionLLM(answer, model_id="fn-test", chunk_size=3)

    first = llm.complete([Message(role="user", content="cats")], tools=[SEARCH])
    assert first.tool_calls == [
        ToolCall(id="c1", name="search", arguments={"q": "cats"}, raw_arguments='{"q": "cats"}')
    ]
    followup = [
        Message(role="user", content="cats"),
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", content="3 found", tool_call_id="c1"),
    ]
    assert llm.complete(followup, tools=[SEARCH]) == Completion(text="3 messages, last: 3 found", model="fn-test")
    assert list(llm.stream([Message(role="user", content="dog")])) == ["1 m", "ess", "age", "s, ", "las", "t: ", "dog"]
    assert [call.streamed for call in llm.calls] == [False, False, True]


def test_fakes_identify_themselves() -> None:
    assert ScriptedLLM().model_id == "scripted"
    assert FunctionLLM(lambda messages, tools: "x").model_id == "function"
    assert ScriptedLLM().capabilities == Capabilities(stream=True, tools=True)
    with pytest.raises(UserError, match="chunk_size must be at least 1, got 0"):
        ScriptedLLM(chunk_size=0)
