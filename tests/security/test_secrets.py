"""Secrets: an API key reaches the model server and nowhere else (settings reprs, errors, logs, CLI output, audit)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Cli
from support.fake_openai import FakeOpenAIServer

from memos import BackendError, ManualClock, MemOS, UserError
from memos.config import Settings
from memos.llm import make_llm
from memos.log import MASK, configure, get_logger, redact
from memos.tools.memory import SEARCH, MemoryTools

KEY = "sk-memos-test-K3Y-5ecr3t-0123456789abcdef"
#: how a server that echoes the key it was given answers
ECHO = f"Incorrect API key provided: {KEY}. You can find your API key at the dashboard."


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on 127.0.0.1 for this test."""
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Tests here reconfigure structlog; put the library default back afterwards."""
    yield
    configure()


def _clean(*texts: object) -> None:
    for text in texts:
        assert KEY not in str(text), f"the API key leaked into: {str(text)[:300]}"


def test_settings_hide_the_key_but_hand_it_to_clients(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMOS_OPENAI_API_KEY", KEY)
    settings = Settings.load(tmp_path / "home")
    assert settings.secret("openai_api_key") == KEY
    _clean(
        repr(settings),
        str(settings),
        settings.model_dump(),
        settings.model_dump_json(),
        repr(settings.openai_api_key),
        settings.model_copy(update={"llm": "openai:x"}),
    )
    assert MASK in repr(settings.openai_api_key)
    # from memos.toml too
    home = tmp_path / "toml-home"
    home.mkdir()
    (home / "memos.toml").write_text(f'openai_api_key = "{KEY}2"\n')
    monkeypatch.delenv("MEMOS_OPENAI_API_KEY")
    from_file = Settings.load(home)
    assert from_file.secret("openai_api_key") == KEY + "2"
    _clean(repr(from_file), from_file.model_dump_json())
    assert Settings.load(tmp_path / "none").secret("openai_api_key") is None


def test_bad_settings_beside_a_key_never_show_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMOS_OPENAI_API_KEY", KEY)
    for overrides in ({"embed_batch_size": 0}, {"openai_timeout_s": -1}, {"openai_api_key": 12}):
        with pytest.raises(UserError) as caught:
            Settings.load(tmp_path / "home", **overrides)
        _clean(caught.value, repr(caught.value), caught.value.fields)
    home = tmp_path / "typo"
    home.mkdir()
    (home / "memos.toml").write_text(f'openai_apikey = "{KEY}"\n')
    with pytest.raises(UserError, match="openai_apikey") as caught:
        Settings.load(home)
    _clean(caught.value)
    # nor does the traceback a Python caller would print (pydantic's error, which quotes the input, is not chained)
    _clean("".join(traceback.format_exception(caught.value)))


def test_server_errors_echoing_the_key_are_masked(server: FakeOpenAIServer) -> None:
    settings = Settings(llm="openai:fake-model", openai_base_url=server.url, openai_api_key=KEY, openai_max_retries=0)
    llm = make_llm(settings)
    assert llm is not None
    for status in (401, 403, 404, 500):
        server.fail_next(status, message=ECHO)
        with pytest.raises(BackendError) as caught:
            llm.chat("hello")
        _clean(caught.value, repr(caught.value), caught.value.fields)
        assert MASK in str(caught.value)
    server.enqueue_chat("fine")
    assert llm.chat("hello") == "fine"
    # the key did reach the server, on every request
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


def test_embedding_endpoint_errors_and_the_stored_home_hold_no_key(
    server: FakeOpenAIServer, tmp_path: Path, clock: ManualClock
) -> None:
    options = {"openai_base_url": server.url, "openai_api_key": KEY, "openai_max_retries": 0}
    server.fail_next(401, message=ECHO)
    with pytest.raises(BackendError) as caught:
        MemOS.open(tmp_path / "home", embedder="openai:fake-embed", clock=clock, **options)
    _clean(caught.value, repr(caught.value))
    with MemOS.open(tmp_path / "home", embedder="openai:fake-embed", clock=clock, **options) as mos:
        alice = mos.as_user("alice")
        cube = alice.write(("alice",), "the blue tram")
        server.fail_next(500, message=ECHO)
        with pytest.raises(BackendError) as caught:
            alice.recall(("alice",), "tram")
        _clean(caught.value)
        tools = MemoryTools(alice, ("alice",))
        server.fail_next(500, message=ECHO)
        result = tools.run_all([_search_call()])[0]
        assert not result.ok
        _clean(result.content, result.data)
        _clean(alice.audit(), alice.audit(cube.id), mos.catalog.audit_log(limit=10_000), repr(mos.settings))
    # nothing under the home (catalog, vectors) holds the key; memos.toml was never given one
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _search_call() -> object:
    from memos.llm.base import ToolCall

    return ToolCall(id="s", name=SEARCH, arguments={"query": "tram"})


@pytest.mark.parametrize("as_json", [False, True])
def test_log_lines_mask_the_key(as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    Settings(openai_api_key=KEY)  # registers the key with the log scrubber
    configure(json=as_json, level="debug")
    log = get_logger("test")
    log.warning("calling the server", api_key=KEY, authorization=f"Bearer {KEY}", url="http://127.0.0.1")
    log.error("the server refused", error=ECHO, detail={"sent": KEY})
    try:
        raise RuntimeError(ECHO)
    except RuntimeError:
        log.exception("a failure with a traceback")
    err = capsys.readouterr().err
    _clean(err)
    assert err.count(MASK) >= 5
    if as_json:
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert [line["event"] for line in lines] == [
            "calling the server",
            "the server refused",
            "a failure with a traceback",
        ]
        assert lines[0]["api_key"] == MASK and lines[0]["url"] == "http://127.0.0.1"
    assert redact(f"x {KEY} y") == f"x {MASK} y"


def test_cli_output_and_logs_never_show_the_key(server: FakeOpenAIServer, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli("add", "alice/chat", "the blue tram")
    env = {
        "MEMOS_LLM": "openai:fake-model",
        "MEMOS_OPENAI_BASE_URL": server.url,
        "MEMOS_OPENAI_API_KEY": KEY,
        "MEMOS_OPENAI_MAX_RETRIES": "0",
        "MEMOS_LOG_LEVEL": "debug",
    }
    outputs: list[str] = []
    for log_json in (False, True):
        flag = ("--log-json",) if log_json else ()
        for status in (401, 500):
            server.fail_next(status, message=ECHO)
            result = cli(*flag, "ask", "which tram?", "--ns", "alice/chat", ok=False, env=env)
            assert result.exit_code != 0
            assert MASK in result.stderr
            outputs += [result.stdout, result.stderr]
        server.enqueue_chat("the blue one")
        result = cli(*flag, "ask", "which tram?", "--ns", "alice/chat", env=env)
        assert "the blue one" in result.stdout
        outputs += [result.stdout, result.stderr]
        for args in (("stats", "--json"), ("audit", "--json"), ("search", "alice/chat", "tram", "--json")):
            result = cli(*flag, *args, env=env)
            outputs += [result.stdout, result.stderr]
    _clean(*outputs)
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


def test_vllm_errors_echoing_the_key_are_masked(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """Every vLLM call that can fail (chat, warm, metrics, LoRA load and unload) masks a key the server echoes."""
    settings = Settings(llm=f"vllm:{server.url}#fake-model", openai_api_key=KEY, openai_max_retries=0)
    llm = make_llm(settings)
    assert llm is not None
    (tmp_path / "adapter").mkdir()
    calls = {
        "chat": lambda: llm.chat("hello"),
        "warm": lambda: llm.warm([{"role": "user", "content": "hello"}]),  # type: ignore[attr-defined]
        "metrics": lambda: llm.prefix_cache_stats(),  # type: ignore[attr-defined]
        "load": lambda: llm.load_adapter("notes", tmp_path / "adapter"),  # type: ignore[attr-defined]
        "unload": lambda: llm.unload_adapter("notes"),  # type: ignore[attr-defined]
    }
    for name, call in calls.items():
        for status in (401, 404, 500):
            server.fail_next(status, message=ECHO)
            with pytest.raises(BackendError) as caught:
                call()
            _clean(caught.value, repr(caught.value), caught.value.fields)
            assert MASK in str(caught.value), (name, status, str(caught.value))
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
