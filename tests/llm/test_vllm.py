"""VLLMChat against a real HTTP server on 127.0.0.1 speaking vLLM's flavour of the OpenAI wire format."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAIServer

from memos.config import Settings
from memos.errors import BackendError, UserError
from memos.llm import Capabilities, Completion, Message, Usage, make_llm
from memos.llm.vllm import MetricSample, PrefixCacheStats, VLLMChat, parse_metrics, parse_spec

CHAT = "/v1/chat/completions"
LORA_HINT = "the server must run with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
# rendered by the fake as "<|system|>" + 54 characters: 64 tokens, exactly 4 blocks of 16
PREFIX = [Message(role="system", content="m" * 54)]
PREFIX_WIRE = [{"role": "system", "content": "m" * 54}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake vLLM server serving 'base-model', answering 404 for models it does not serve."""
    with FakeOpenAIServer(model="base-model", check_models=True) as fake:
        yield fake


def make_vllm(server: FakeOpenAIServer, model: str = "base-model") -> VLLMChat:
    """A VLLMChat pointed at the fake server, with short limits so a failure cannot hang."""
    return VLLMChat(model, base_url=server.url, api_key="sk-test", timeout_s=5.0, max_retries=0)


def calls(server: FakeOpenAIServer) -> list[tuple[str, str, object]]:
    """(method, path, JSON body) of each recorded request."""
    return [(request.method, request.path, request.json) for request in server.requests]


def free_port() -> int:
    """A port that was free a moment ago: nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- make_llm ------------------------------------------------------------------------------------


def test_make_llm_builds_a_vllm_client_from_the_spec_and_the_openai_settings(server: FakeOpenAIServer) -> None:
    settings = Settings(
        llm=f"vllm:{server.url}#base-model",
        openai_api_key="sk-from-settings",
        openai_timeout_s=3.5,
        openai_max_retries=1,
    )
    server.enqueue_chat("from vllm")

    llm = make_llm(settings)

    assert isinstance(llm, VLLMChat)
    assert (llm.model, llm.model_id, llm.base_url, llm.root_url) == (
        "base-model",
        "vllm:base-model",
        server.url,
        server.url.removesuffix("/v1"),
    )
    assert (llm.timeout_s, llm.max_retries) == (3.5, 1)
    assert llm.chat("hi") == "from vllm"
    assert llm.list_models() == ["base-model"]
    # the key reaches both the chat client and vLLM's own endpoints
    assert [request.headers["authorization"] for request in server.requests] == ["Bearer sk-from-settings"] * 2
    assert server.requests[0].headers["x-stainless-read-timeout"] == "3.5"


@pytest.mark.parametrize("suffix", ["", "/"])
def test_make_llm_adds_the_missing_v1(server: FakeOpenAIServer, suffix: str) -> None:
    server.enqueue_chat("ok")

    llm = make_llm(Settings(llm=f"vllm:http://127.0.0.1:{server.port}{suffix}#base-model"))

    assert isinstance(llm, VLLMChat)
    assert llm.base_url == server.url
    assert llm.chat("hi") == "ok"
    assert server.paths() == [CHAT]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("vllm:http://gpu:8000/v1#qwen", ("http://gpu:8000/v1", "qwen")),
        ("vllm:http://gpu:8000#qwen", ("http://gpu:8000/v1", "qwen")),
        (
            "vllm:https://gpu.example:8443/v1/#Qwen/Qwen2.5-7B-Instruct",
            ("https://gpu.example:8443/v1", "Qwen/Qwen2.5-7B-Instruct"),
        ),
        ("vllm:http://proxy.local/vllm/#qwen", ("http://proxy.local/vllm/v1", "qwen")),
        ("vllm:http://gpu:8000/v1# qwen ", ("http://gpu:8000/v1", "qwen")),
    ],
)
def test_parse_spec_splits_url_and_model(spec: str, expected: tuple[str, str]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("vllm:http://gpu:8000/v1", "name the model the server serves after '#'"),
        ("vllm:http://gpu:8000/v1#", "name the model the server serves after '#'"),
        ("vllm:ftp://gpu:8000/v1#qwen", "the server URL must start with http:// or https://"),
        ("vllm:gpu:8000/v1#qwen", "the server URL must start with http:// or https://"),
        ("vllm:", "the server URL must start with http:// or https://"),
        ("vllm:http:///v1#qwen", "the server URL names no host"),
        ("vllm:http://gpu:eighty/v1#qwen", "the port must be a number below 65536"),
        ("vllm:http://gpu:8000/v1?key=1#qwen", "the server URL must not have a query string"),
    ],
)
def test_make_llm_rejects_a_malformed_spec_in_one_line(spec: str, problem: str) -> None:
    with pytest.raises(UserError) as caught:
        make_llm(Settings(llm=spec))

    assert str(caught.value) == f"bad MEMOS_LLM {spec!r}: {problem}; write vllm:http://HOST:PORT/v1#MODEL"
    assert caught.value.fields == {"llm": spec}


def test_unknown_forms_name_the_vllm_form() -> None:
    with pytest.raises(UserError, match=r"or 'vllm:http://HOST:PORT/v1#MODEL' \(a vLLM server\)$"):
        make_llm(Settings(llm="anthropic:claude"))


def test_identity_and_capabilities(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)

    assert (llm.model_id, llm.base_model, llm.adapter, llm.loaded_adapters) == (
        "vllm:base-model",
        "base-model",
        None,
        [],
    )
    assert llm.capabilities == Capabilities(
        stream=True, tools=True, kv_injection=False, adapters=True, prefix_caching=True
    )
    with pytest.raises(UserError, match=r"^a vLLM chat model needs the name the server serves"):
        VLLMChat(" ", base_url=server.url)


def test_importing_the_vllm_backend_loads_neither_torch_nor_the_openai_client() -> None:
    code = "import sys, memos.llm.vllm; print('torch' in sys.modules, 'openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)

    assert result.stdout.strip() == "False False"


# --- chat ----------------------------------------------------------------------------------------


def test_complete_goes_through_the_chat_api(server: FakeOpenAIServer) -> None:
    server.enqueue_chat("Paris.", usage={"prompt_tokens": 9, "completion_tokens": 2})

    result = make_vllm(server).complete([Message(role="user", content="Capital of France?")], max_tokens=5)

    assert result == Completion(
        text="Paris.", finish_reason="stop", usage=Usage(prompt_tokens=9, completion_tokens=2), model="base-model"
    )
    assert calls(server) == [
        (
            "POST",
            CHAT,
            {"model": "base-model", "messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 5},
        )
    ]


def test_stream_yields_the_deltas(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(["Par", "is", "."])

    assert list(make_vllm(server).stream([Message(role="user", content="Capital?")])) == ["Par", "is", "."]
    assert server.requests[0].json["stream"] is True
    assert server.requests[0].json["model"] == "base-model"


def test_an_unknown_model_is_a_backend_error_pointing_at_the_spec(server: FakeOpenAIServer) -> None:
    with pytest.raises(BackendError) as caught:
        make_vllm(server, "qwen-typo").chat("hi")

    assert str(caught.value) == (
        f"the vLLM server at {server.url} does not serve model 'qwen-typo' (HTTP 404): The model `qwen-typo` does "
        "not exist; write the name it serves after '#' in MEMOS_LLM (list_models() shows them)"
    )
    assert caught.value.fields == {"url": server.url, "model": "qwen-typo", "status": 404}


def test_an_unreachable_server_points_at_the_spec() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = VLLMChat("base-model", base_url=url, timeout_s=2.0, max_retries=0)

    with pytest.raises(BackendError) as caught:
        llm.chat("hi")

    assert str(caught.value).startswith(f"could not connect to the vLLM server at {url} for model 'base-model'")
    assert str(caught.value).endswith("is it running? check the URL in MEMOS_LLM")
    assert caught.value.fields == {"url": url, "model": "base-model", "status": None}


# --- prefix cache --------------------------------------------------------------------------------


def test_warm_sends_exactly_the_prefix_for_one_token(server: FakeOpenAIServer) -> None:
    server.enqueue_chat(".")

    make_vllm(server).warm(PREFIX)

    assert calls(server) == [("POST", CHAT, {"model": "base-model", "messages": PREFIX_WIRE, "max_tokens": 1})]


def test_warm_errors_name_the_server(server: FakeOpenAIServer) -> None:
    server.fail_next(503, message="overloaded")

    with pytest.raises(BackendError) as caught:
        make_vllm(server).warm(PREFIX)

    assert str(caught.value) == (
        f"the OpenAI-compatible server at {server.url} failed for model 'base-model' (HTTP 503): overloaded"
    )
    with pytest.raises(UserError, match=r"^messages is empty"):
        make_vllm(server).warm([])


def test_after_warm_the_same_prefix_hits_the_cache_and_another_does_not(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    assert llm.prefix_cache_stats() == PrefixCacheStats(queries=0, hits=0)
    assert llm.prefix_cache_stats().hit_rate == 0.0
    server.enqueue_chat(".")
    server.enqueue_chat("hi")
    server.enqueue_chat("hi")

    llm.warm(PREFIX)
    warmed = llm.prefix_cache_stats()
    llm.complete([*PREFIX, Message(role="user", content="hello")])
    same_prefix = llm.prefix_cache_stats()
    llm.complete([Message(role="system", content="x" * 54), Message(role="user", content="hello")])
    other_prefix = llm.prefix_cache_stats()

    # the warm request queries its 64 tokens and finds nothing
    assert warmed == PrefixCacheStats(queries=64, hits=0)
    # "<|user|>hello" adds 13 tokens; the 4 warmed blocks (64 tokens) are hits
    assert same_prefix == PrefixCacheStats(queries=64 + 77, hits=64)
    # only "<|system|>" (10 tokens, less than a block) is shared with what came before
    assert other_prefix == PrefixCacheStats(queries=64 + 77 + 77, hits=64)
    assert other_prefix.hit_rate == 64 / 218
    assert server.paths() == ["/metrics", "/metrics", CHAT, "/metrics", CHAT, "/metrics", CHAT, "/metrics"]


METRICS = r"""# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen2.5-7B, instruct"} 1.5e+03
vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen2.5-7B, instruct"} 500 1712345678000
vllm:prefix_cache_queries_created{engine="0",model_name="Qwen/Qwen2.5-7B, instruct"} 1.712e+09

# a free comment, then a label value holding a quote, a brace, a comma and spaces
vllm:prefix_cache_hits_total{model_name="a \"quoted\" } name, here" , engine="0"} 750.0
vllm:prefix_cache_hits_total{engine="1",model_name="x",} 2.5E2
vllm:gpu_prefix_cache_queries_total{engine="0"} 99999
vllm:gpu_prefix_cache_hits_total{engine="0"} 5
vllm:num_requests_running{engine="0",model_name="x"} 3
"""


def test_prefix_cache_stats_sum_the_counters_over_label_sets(server: FakeOpenAIServer) -> None:
    server.metrics_text = METRICS

    stats = make_vllm(server).prefix_cache_stats()

    # the V1 names win over their deprecated gpu_ twins; _created samples are not counts
    assert stats == PrefixCacheStats(queries=2000, hits=1000, reported_hit_rate=None)
    assert stats.hit_rate == 0.5
    assert calls(server) == [("GET", "/metrics", None)]


def test_prefix_cache_stats_read_the_deprecated_counters(server: FakeOpenAIServer) -> None:
    server.metrics_text = 'vllm:gpu_prefix_cache_queries_total{engine="0"} 40\nvllm:gpu_prefix_cache_hits_total 10\n'

    assert make_vllm(server).prefix_cache_stats() == PrefixCacheStats(queries=40, hits=10)


def test_prefix_cache_stats_fall_back_to_the_old_hit_rate_gauge(server: FakeOpenAIServer) -> None:
    server.metrics_text = (
        "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\n"
        'vllm:gpu_prefix_cache_hit_rate{model_name="a"} 0.25\n'
        'vllm:gpu_prefix_cache_hit_rate{model_name="b"} 7.5e-1\n'
    )

    stats = make_vllm(server).prefix_cache_stats()

    assert stats == PrefixCacheStats(queries=0, hits=0, reported_hit_rate=0.5)
    assert stats.hit_rate == 0.5


def test_no_prefix_cache_metrics_is_a_backend_error(server: FakeOpenAIServer) -> None:
    server.metrics_text = "# HELP vllm:num_requests_running Running requests.\nvllm:num_requests_running 0\n"
    root = server.url.removesuffix("/v1")

    with pytest.raises(BackendError) as caught:
        make_vllm(server).prefix_cache_stats()

    assert str(caught.value) == (
        f"the vLLM server at {root} exposes no prefix-cache metrics at {root}/metrics; start vllm with "
        "--enable-prefix-caching (and without --disable-log-stats)"
    )
    assert caught.value.fields == {"url": f"{root}/metrics", "status": 200}


def test_a_failing_metrics_page_is_a_backend_error(server: FakeOpenAIServer) -> None:
    server.fail_next(500, message="engine dead")
    root = server.url.removesuffix("/v1")

    with pytest.raises(BackendError) as caught:
        make_vllm(server).prefix_cache_stats()

    assert (
        str(caught.value) == f"the vLLM server at {root} failed to read its metrics at /metrics (HTTP 500): engine dead"
    )
    assert caught.value.fields == {"url": f"{root}/metrics", "status": 500}


def test_parse_metrics_reads_escapes_and_special_values_and_skips_malformed_lines() -> None:
    text = "\n".join(
        [
            r'm{a="x\\y",b="line\nbreak",c="say \"hi\""} +Inf',
            "plain -1.5E-3",
            "not_a_number NaN",
            'unclosed{a="x" 1',
            "novalue",
            'glued{a="x"}1',
            "9starts_with_digit 1",
            "too many fields 1 2 3",
            '  spaced { a = "1" } 2 # {trace_id="abc"} 1',
        ]
    )

    samples = parse_metrics(text)

    assert samples[0] == MetricSample("m", {"a": "x\\y", "b": "line\nbreak", "c": 'say "hi"'}, math.inf)
    assert samples[1] == MetricSample("plain", {}, -0.0015)
    assert (samples[2].name, math.isnan(samples[2].value)) == ("not_a_number", True)
    assert samples[3:] == [MetricSample("spaced", {"a": "1"}, 2.0)]


# --- LoRA adapters -------------------------------------------------------------------------------


def test_load_list_and_unload_adapters(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)

    llm.load_adapter("sql", "/adapters/sql")
    llm.load_adapter("legal", Path("/adapters/legal"))
    loaded, listed = llm.loaded_adapters, llm.list_models()
    llm.unload_adapter("sql")

    assert (loaded, listed) == (["legal", "sql"], ["base-model", "sql", "legal"])
    assert (llm.loaded_adapters, llm.list_models()) == (["legal"], ["base-model", "legal"])
    assert server.adapters == {"legal": "/adapters/legal"}
    assert calls(server) == [
        ("POST", "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/adapters/sql"}),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "legal", "lora_path": "/adapters/legal"}),
        ("GET", "/v1/models", None),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "sql"}),
        ("GET", "/v1/models", None),
    ]
    assert {request.headers["authorization"] for request in server.requests} == {"Bearer sk-test"}


def test_loading_a_loaded_name_again_is_fine(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    other = make_vllm(server)

    llm.load_adapter("sql", "/adapters/sql")
    llm.load_adapter("sql", "/adapters/sql")
    # another client finds the name taken: the server keeps the first path, and this client may use it
    other.load_adapter("sql", "/adapters/sql-v2")

    assert (llm.loaded_adapters, other.loaded_adapters) == (["sql"], ["sql"])
    assert server.adapters == {"sql": "/adapters/sql"}
    assert server.paths() == ["/v1/load_lora_adapter"] * 3


def test_unloading_a_name_the_server_does_not_know_is_fine(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)

    llm.unload_adapter("ghost")

    assert llm.loaded_adapters == []
    assert calls(server) == [("POST", "/v1/unload_lora_adapter", {"lora_name": "ghost"})]


def test_a_server_error_while_loading_is_a_backend_error_with_a_hint(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    server.fail_next(500, message="CUDA out of memory.")
    root = server.url.removesuffix("/v1")

    with pytest.raises(BackendError) as caught:
        llm.load_adapter("sql", "/adapters/sql")

    assert str(caught.value) == (
        f"the vLLM server at {root} failed to load LoRA adapter 'sql' from '/adapters/sql' (HTTP 500): "
        f"CUDA out of memory; {LORA_HINT}"
    )
    assert caught.value.fields == {"url": f"{server.url}/load_lora_adapter", "status": 500, "adapter": "sql"}
    assert llm.loaded_adapters == []


def test_a_server_without_runtime_lora_updating_gets_the_hint(server: FakeOpenAIServer) -> None:
    server.runtime_lora_updating = False
    root = server.url.removesuffix("/v1")

    with pytest.raises(BackendError) as caught:
        make_vllm(server).load_adapter("sql", "/adapters/sql")

    assert str(caught.value) == (
        f"the vLLM server at {root} failed to load LoRA adapter 'sql' from '/adapters/sql' (HTTP 404): "
        f"Not Found; {LORA_HINT}"
    )


def test_unload_failures_are_backend_errors(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    llm.load_adapter("sql", "/adapters/sql")
    server.fail_next(500, message="engine dead")

    with pytest.raises(BackendError, match=r"failed to unload LoRA adapter 'sql' \(HTTP 500\): engine dead; "):
        llm.unload_adapter("sql")
    assert llm.loaded_adapters == ["sql"]

    url = f"http://127.0.0.1:{free_port()}"
    gone = VLLMChat("base-model", base_url=url, timeout_s=2.0, max_retries=0)
    with pytest.raises(BackendError) as caught:
        gone.unload_adapter("sql")
    assert str(caught.value).startswith(f"could not reach the vLLM server at {url} to unload LoRA adapter 'sql'")
    assert str(caught.value).endswith("is it running? check the URL in MEMOS_LLM")
    assert caught.value.fields == {"url": f"{url}/v1/unload_lora_adapter", "status": None}


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        ("bad name", "/a", "LoRA adapter name 'bad name' must be 1-64 letters, digits, '_' or '-'"),
        ("", "/a", "LoRA adapter name '' must be 1-64 letters, digits, '_' or '-'"),
        ("x" * 65, "/a", f"LoRA adapter name {'x' * 65!r} must be 1-64 letters, digits, '_' or '-'"),
        ("sql", "  ", "LoRA adapter 'sql' needs a path: its directory as the vLLM server sees it"),
    ],
)
def test_bad_adapter_names_and_paths_are_user_errors_and_send_nothing(
    server: FakeOpenAIServer, name: str, path: str, message: str
) -> None:
    with pytest.raises(UserError) as caught:
        make_vllm(server).load_adapter(name, path)

    assert str(caught.value) == message
    assert server.requests == []


def test_with_adapters_sends_the_adapter_as_the_model(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    llm.load_adapter("sql", "/adapters/sql")
    server.enqueue_chat("SELECT 1;")
    server.enqueue_chat("hello")
    server.enqueue_chat("SELECT 2;")

    view = llm.with_adapters(["sql"])
    answers = [view.chat("query?"), llm.chat("hi"), "".join(view.stream([Message(role="user", content="again")]))]

    assert answers == ["SELECT 1;", "hello", "SELECT 2;"]
    assert [request.json["model"] for request in server.requests[1:]] == ["sql", "base-model", "sql"]
    assert (view.model, view.adapter, view.model_id) == ("sql", "sql", "vllm:base-model+sql")
    assert llm.with_adapters([]) is llm
    assert view.with_adapters([]) is llm
    assert view.with_adapters(["sql", "sql"]) is view
    # the view and its client share one set of loaded adapters
    view.load_adapter("legal", "/adapters/legal")
    assert llm.loaded_adapters == ["legal", "sql"]
    assert llm.with_adapters(["legal"]).model == "legal"


def test_with_adapters_refuses_what_vllm_cannot_serve(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    llm.load_adapter("sql", "/adapters/sql")
    llm.load_adapter("legal", "/adapters/legal")

    with pytest.raises(UserError) as two:
        llm.with_adapters(["sql", "legal"])
    with pytest.raises(UserError) as unloaded:
        llm.with_adapters(["medical"])
    with pytest.raises(UserError) as string:
        llm.with_adapters("sql")

    assert str(two.value) == (
        "a vLLM server applies one LoRA adapter per request, got 2: sql, legal; "
        "pick one, or merge them into one adapter"
    )
    assert str(unloaded.value) == (
        f"LoRA adapter 'medical' is not loaded on the vLLM server at {server.url} (loaded: legal, sql); "
        "load it first with load_adapter('medical', PATH)"
    )
    assert str(string.value) == "adapters must be a list of names, not the string 'sql': write ['sql']"
    assert server.paths() == ["/v1/load_lora_adapter"] * 2


def test_an_adapter_unloaded_behind_a_views_back_is_a_clear_backend_error(server: FakeOpenAIServer) -> None:
    llm = make_vllm(server)
    llm.load_adapter("sql", "/adapters/sql")
    view = llm.with_adapters(["sql"])
    make_vllm(server).unload_adapter("sql")

    with pytest.raises(BackendError) as caught:
        view.chat("query?")

    assert str(caught.value) == (
        f"the vLLM server at {server.url} does not serve LoRA adapter 'sql' (HTTP 404): The model `sql` does not "
        "exist; it was unloaded or the server restarted: load it again with load_adapter"
    )
    assert caught.value.fields == {"url": server.url, "model": "sql", "status": 404, "adapter": "sql"}
