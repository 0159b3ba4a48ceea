"""OpenAIChat against a real HTTP server on 127.0.0.1 speaking the OpenAI wire format."""

from __future__ import annotations

import socket

import pytest
from support.fake_openai import FakeOpenAIServer

from memos.errors import BackendError, UserError
from memos.llm import Capabilities, Completion, Message, ToolCall, ToolSchema, Usage
from memos.llm.openai import OpenAIChat

CHAT = "/v1/chat/completions"
WEATHER = ToolSchema(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def make_chat(server: FakeOpenAIServer, *, max_retries: int = 0, timeout_s: float = 5.0) -> OpenAIChat:
    """An OpenAIChat pointed at the fake server, with short limits so a failure cannot hang."""
    return OpenAIChat(
        "fake-model", base_url=server.url, api_key="sk-test", timeout_s=timeout_s, max_retries=max_retries
    )


def retry_counts(server: FakeOpenAIServer) -> list[str]:
    """The client's retry counter of each recorded request (the openai client numbers its attempts)."""
    return [request.headers["x-stainless-retry-count"] for request in server.requests]


def test_complete_sends_the_exact_body_and_returns_text_usage_and_model(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.enqueue_chat("Paris.", model="fake-model-2025", usage={"prompt_tokens": 12, "completion_tokens": 2})
    llm = make_chat(openai_server)

    result = llm.complete(
        [
            Message(role="system", content="Answer in one word."),
            {"role": "user", "content": "Capital of France?"},
        ],
        max_tokens=5,
        temperature=0.0,
        stop="\n",
    )

    assert result == Completion(
        text="Paris.",
        tool_calls=[],
        finish_reason="stop",
        usage=Usage(prompt_tokens=12, completion_tokens=2),
        model="fake-model-2025",
    )
    [request] = openai_server.requests
    assert (request.method, request.path) == ("POST", CHAT)
    assert request.json == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "max_tokens": 5,
        "temperature": 0.0,
        "stop": ["\n"],
    }
    assert request.headers["authorization"] == "Bearer sk-test"


def test_unset_sampling_options_are_left_out_of_the_body(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat("ok")

    completion = make_chat(openai_server).complete([Message(role="user", content="hi")])

    assert completion.usage is None
    assert completion.model == "fake-model"
    assert openai_server.requests[0].json == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_chat_helper_sends_system_then_user(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat("hello")

    assert make_chat(openai_server).chat("Greet me.", system="Be warm.") == "hello"
    assert openai_server.requests[0].json["messages"] == [
        {"role": "system", "content": "Be warm."},
        {"role": "user", "content": "Greet me."},
    ]


def test_tools_are_sent_as_function_schemas_and_calls_come_back_parsed(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.enqueue_chat(
        tool_calls=[
            {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        ]
    )

    result = make_chat(openai_server).complete([Message(role="user", content="Weather?")], tools=[WEATHER])

    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}, raw_arguments='{"city": "Paris"}'),
        ToolCall(id="call_2", name="get_weather", arguments={"city": "Oslo"}, raw_arguments='{"city": "Oslo"}'),
    ]
    assert all(call.valid for call in result.tool_calls)
    assert openai_server.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]


def test_tool_results_go_back_in_the_wire_format(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat("It is sunny in Paris.")
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})

    result = make_chat(openai_server).complete(
        [
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", content='{"sky": "sunny"}', tool_call_id="call_1", name="get_weather"),
        ],
        tools=[WEATHER],
    )

    assert result.text == "It is sunny in Paris."
    assert openai_server.requests[0].json["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_1", "name": "get_weather"},
    ]


def test_malformed_tool_arguments_are_kept_and_marked_not_raised(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat(
        tool_calls=[
            {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Par'},
            {"id": "call_2", "name": "get_weather", "arguments": '["Paris"]'},
            {"id": "call_3", "name": "get_weather", "arguments": ""},
        ]
    )

    calls = make_chat(openai_server).complete([Message(role="user", content="?")], tools=[WEATHER]).tool_calls

    assert [(c.id, c.valid, c.arguments, c.raw_arguments) for c in calls] == [
        ("call_1", False, {}, '{"city": "Par'),
        ("call_2", False, {}, '["Paris"]'),
        ("call_3", True, {}, "{}"),
    ]
    assert calls[0].error is not None and calls[0].error.startswith("arguments are not valid JSON")
    assert calls[1].error == "arguments must be a JSON object, got list"


def test_stream_yields_the_text_deltas_in_order(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat(["The ", "sky ", "is ", "blue."])
    llm = make_chat(openai_server)

    chunks = llm.stream([Message(role="user", content="Sky?")], max_tokens=8)
    # the request is made by stream() itself, so connection errors surface at the call
    assert len(openai_server.requests) == 1

    assert list(chunks) == ["The ", "sky ", "is ", "blue."]
    assert openai_server.requests[0].json == {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": "Sky?"}],
        "max_tokens": 8,
    }


def test_stream_ignores_tool_call_deltas_and_can_be_abandoned(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue_chat(["Checking", "..."], tool_calls=[{"id": "c1", "name": "get_weather", "arguments": "{}"}])
    openai_server.enqueue_chat(["one", "two", "three"])
    llm = make_chat(openai_server)

    assert list(llm.stream([Message(role="user", content="?")], tools=[WEATHER])) == ["Checking", "..."]
    chunks = llm.stream([Message(role="user", content="?")])
    assert next(chunks) == "one"
    chunks.close()  # type: ignore[attr-defined]
    assert len(openai_server.requests) == 2


def test_server_errors_are_retried_then_succeed(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(500, count=2)
    openai_server.enqueue_chat("recovered")

    text = make_chat(openai_server, max_retries=2).chat("hi")

    assert text == "recovered"
    assert retry_counts(openai_server) == ["0", "1", "2"]
    assert [request.json for request in openai_server.requests] == [
        {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    ] * 3


def test_rate_limits_are_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(429)
    openai_server.enqueue_chat("ok")

    assert make_chat(openai_server, max_retries=1).chat("hi") == "ok"
    assert retry_counts(openai_server) == ["0", "1"]


def test_exhausted_retries_raise_backend_error_naming_server_model_and_status(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.fail_next(503, count=3, message="overloaded")

    with pytest.raises(BackendError) as caught:
        make_chat(openai_server, max_retries=2).chat("hi")

    assert str(caught.value) == (
        f"the OpenAI-compatible server at {openai_server.url} failed for model 'fake-model' (HTTP 503): overloaded"
    )
    assert caught.value.fields == {"url": openai_server.url, "status": 503, "model": "fake-model"}
    assert retry_counts(openai_server) == ["0", "1", "2"]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_point_at_the_key(openai_server: FakeOpenAIServer, status: int) -> None:
    openai_server.fail_next(status, message="invalid api key")

    with pytest.raises(BackendError) as caught:
        make_chat(openai_server, max_retries=3).chat("hi")

    assert str(caught.value) == (
        f"the OpenAI-compatible server at {openai_server.url} refused the API key (HTTP {status}) "
        "for model 'fake-model': invalid api key; check MEMOS_OPENAI_API_KEY"
    )
    assert caught.value.fields["status"] == status
    assert len(openai_server.requests) == 1


def test_unknown_model_names_the_model(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(404, message="The model `fake-model` does not exist")

    with pytest.raises(BackendError) as caught:
        make_chat(openai_server, max_retries=3).chat("hi")

    assert str(caught.value) == (
        f"the OpenAI-compatible server at {openai_server.url} has no model 'fake-model' (HTTP 404): "
        "The model `fake-model` does not exist; check the model name in MEMOS_LLM and that "
        "MEMOS_OPENAI_BASE_URL ends in /v1"
    )
    assert caught.value.fields == {"url": openai_server.url, "status": 404, "model": "fake-model"}
    assert len(openai_server.requests) == 1


def test_a_bad_request_is_not_retried(openai_server: FakeOpenAIServer) -> None:
    # nothing enqueued: the fake server answers 400
    with pytest.raises(BackendError) as caught:
        make_chat(openai_server, max_retries=3).chat("hi")

    assert caught.value.fields["status"] == 400
    assert "no chat reply enqueued" in str(caught.value)
    assert len(openai_server.requests) == 1


def test_stream_errors_raise_at_the_call(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(500)

    with pytest.raises(BackendError) as caught:
        make_chat(openai_server).stream([Message(role="user", content="hi")])

    assert caught.value.fields["status"] == 500


def test_a_slow_server_times_out_as_backend_error(openai_server: FakeOpenAIServer) -> None:
    openai_server.stall_next(1.0)
    openai_server.enqueue_chat("too late")

    with pytest.raises(BackendError) as caught:
        make_chat(openai_server, timeout_s=0.2).chat("hi")

    assert str(caught.value) == (
        f"the OpenAI-compatible server at {openai_server.url} did not answer within 0.2 s for model "
        "'fake-model' (after 0 retries); raise MEMOS_OPENAI_TIMEOUT_S or check the server"
    )
    assert caught.value.fields == {"url": openai_server.url, "status": None, "model": "fake-model"}


def test_an_unreachable_server_is_a_backend_error() -> None:
    # a port that was free a moment ago: nothing listens there
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAIChat("fake-model", base_url=url, api_key="sk-test", timeout_s=2.0, max_retries=0)

    with pytest.raises(BackendError) as caught:
        llm.chat("hi")

    assert str(caught.value).startswith(f"could not connect to the OpenAI-compatible server at {url}")
    assert str(caught.value).endswith("is it running? check MEMOS_OPENAI_BASE_URL")
    assert caught.value.fields == {"url": url, "status": None, "model": "fake-model"}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages is empty: send at least one message, e.g. a user message"),
        (
            [{"role": "robot", "content": "hi"}],
            "message 0: message role 'robot' is not one of system, user, assistant, tool",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}],
            "message 1: a tool message needs tool_call_id: the id of the call it answers",
        ),
        ([{"role": "user", "text": "hi"}], "message 0 is malformed: text: Extra inputs are not permitted"),
    ],
)
def test_bad_input_is_a_user_error_and_sends_nothing(
    openai_server: FakeOpenAIServer, messages: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(UserError) as caught:
        make_chat(openai_server).complete(messages)

    assert str(caught.value) == message
    assert openai_server.requests == []


def test_bad_sampling_and_tools_are_user_errors(openai_server: FakeOpenAIServer) -> None:
    llm = make_chat(openai_server)
    hi = [Message(role="user", content="hi")]

    with pytest.raises(UserError, match="max_tokens must be at least 1, got 0"):
        llm.complete(hi, max_tokens=0)
    with pytest.raises(UserError, match="tool names must be unique; repeated: get_weather"):
        llm.complete(hi, tools=[WEATHER, WEATHER])
    with pytest.raises(UserError, match="tool name 'get weather' must be"):
        llm.stream(hi, tools=[{"name": "get weather"}])
    assert openai_server.requests == []


def test_identity_and_capabilities(openai_server: FakeOpenAIServer) -> None:
    llm = make_chat(openai_server)

    assert llm.model_id == "openai:fake-model"
    assert llm.base_url == openai_server.url
    assert llm.capabilities == Capabilities(stream=True, tools=True)


def test_a_local_server_needs_no_key(openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_server.enqueue_chat("ok")

    OpenAIChat("fake-model", base_url=openai_server.url, timeout_s=5.0, max_retries=0).chat("hi")

    assert openai_server.requests[0].headers["authorization"] == "Bearer unused"


def test_the_openai_api_without_a_key_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    with pytest.raises(UserError, match="set MEMOS_OPENAI_API_KEY"):
        OpenAIChat("gpt-4o-mini")
