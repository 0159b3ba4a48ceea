"""make_llm: from the MEMOS_LLM setting to a backend."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.fake_openai import FakeOpenAIServer

from memos.config import Settings
from memos.errors import UserError
from memos.llm import make_llm
from memos.llm.openai import OpenAIChat

ACCEPTED = (
    "'none', 'openai:MODEL' (any OpenAI-compatible server at MEMOS_OPENAI_BASE_URL), "
    "'hf:/path/to/model' (a local model) or 'vllm:http://HOST:PORT/v1#MODEL' (a vLLM server)"
)


def test_none_means_no_llm() -> None:
    assert make_llm(Settings(llm="none")) is None


def test_openai_builds_a_client_from_the_settings(openai_server: FakeOpenAIServer) -> None:
    settings = Settings(
        llm="openai:fake-model",
        openai_base_url=openai_server.url,
        openai_api_key="sk-from-settings",
        openai_timeout_s=3.5,
        openai_max_retries=1,
    )
    openai_server.fail_next(500)
    openai_server.enqueue_chat("from the server")

    llm = make_llm(settings)

    assert isinstance(llm, OpenAIChat)
    assert (llm.model, llm.model_id, llm.base_url) == ("fake-model", "openai:fake-model", openai_server.url)
    assert (llm.timeout_s, llm.max_retries) == (3.5, 1)
    assert llm.chat("hi") == "from the server"
    # the key, the retry budget and the timeout all reached the client
    assert [request.headers["authorization"] for request in openai_server.requests] == ["Bearer sk-from-settings"] * 2
    assert [request.headers["x-stainless-retry-count"] for request in openai_server.requests] == ["0", "1"]
    assert openai_server.requests[0].headers["x-stainless-read-timeout"] == "3.5"


@pytest.mark.parametrize("spec", ["openai:", "openai:  "])
def test_openai_without_a_model_is_a_user_error(spec: str) -> None:
    with pytest.raises(UserError, match=r"name the model, e\.g\. openai:gpt-4o-mini"):
        make_llm(Settings(llm=spec))


@pytest.mark.parametrize("spec", ["gpt-4o", "anthropic:claude", "", "openai"])
def test_unknown_forms_list_the_accepted_ones(spec: str) -> None:
    with pytest.raises(UserError) as caught:
        make_llm(Settings(llm=spec))

    assert str(caught.value) == f"unknown MEMOS_LLM {spec!r}: use {ACCEPTED}"


def test_importing_the_llm_layer_does_not_load_the_openai_client() -> None:
    code = "import sys, memos.llm, memos.llm.testing; print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)

    assert result.stdout.strip() == "False"
