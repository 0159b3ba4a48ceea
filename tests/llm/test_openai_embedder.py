"""memos.embed.OpenAIEmbedder against a real HTTP server on 127.0.0.1 speaking the OpenAI wire format."""

from __future__ import annotations

import numpy as np
import pytest
from support.fake_openai import FakeOpenAIServer

from memos.embed import OpenAIEmbedder
from memos.errors import BackendError

EMBEDDINGS = "/v1/embeddings"


def make_embedder(server: FakeOpenAIServer, **kwargs: object) -> OpenAIEmbedder:
    """An OpenAIEmbedder pointed at the fake server, without retries unless asked."""
    options: dict[str, object] = {"api_key": "sk-test", "timeout_s": 5.0, "max_retries": 0, **kwargs}
    return OpenAIEmbedder("fake-embed", base_url=server.url, **options)


def expected(server: FakeOpenAIServer, texts: list[str]) -> np.ndarray:
    """The L2-normalised float32 rows the embedder should return for texts."""
    rows = np.asarray([server.embedding_for(text) for text in texts], dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_texts_are_sent_in_batches_and_vectors_come_back_normalised(openai_server: FakeOpenAIServer) -> None:
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    embedder = make_embedder(openai_server, batch_size=2, dim=8)

    vectors = embedder.embed(texts)

    assert [request.json for request in openai_server.requests] == [
        {"model": "fake-embed", "input": ["alpha", "beta"], "encoding_format": "base64"},
        {"model": "fake-embed", "input": ["gamma", "delta"], "encoding_format": "base64"},
        {"model": "fake-embed", "input": ["epsilon"], "encoding_format": "base64"},
    ]
    assert openai_server.paths() == [EMBEDDINGS] * 3
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-test"
    assert vectors.shape == (5, 8)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected(openai_server, texts), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.ones(5), rtol=1e-6)


def test_rows_follow_the_index_not_the_order_of_the_response(openai_server: FakeOpenAIServer) -> None:
    openai_server.reverse_embeddings = True
    texts = ["first", "second", "third"]

    vectors = make_embedder(openai_server, dim=8).embed(texts)

    np.testing.assert_allclose(vectors, expected(openai_server, texts), rtol=1e-6)


def test_dim_is_asked_of_the_endpoint_once_when_not_configured(openai_server: FakeOpenAIServer) -> None:
    openai_server.embedding_dim = 12
    embedder = make_embedder(openai_server)

    assert embedder.dim == 12
    assert embedder.dim == 12
    assert [request.json for request in openai_server.requests] == [
        {"model": "fake-embed", "input": ["dimension probe"], "encoding_format": "base64"}
    ]
    assert embedder.id == "openai:fake-embed"


def test_a_configured_dim_needs_no_request(openai_server: FakeOpenAIServer) -> None:
    embedder = make_embedder(openai_server, dim=8)

    assert embedder.dim == 8
    assert embedder.embed([]).shape == (0, 8)
    assert openai_server.requests == []


def test_server_errors_are_retried_by_the_client(openai_server: FakeOpenAIServer) -> None:
    openai_server.fail_next(500)

    vectors = make_embedder(openai_server, max_retries=1, dim=8).embed(["retry me"])

    np.testing.assert_allclose(vectors, expected(openai_server, ["retry me"]), rtol=1e-6)
    assert [request.headers["x-stainless-retry-count"] for request in openai_server.requests] == ["0", "1"]


@pytest.mark.parametrize("status", [401, 404, 500])
def test_failures_become_backend_errors_naming_the_model(openai_server: FakeOpenAIServer, status: int) -> None:
    openai_server.fail_next(status, message="nope")

    with pytest.raises(BackendError) as caught:
        make_embedder(openai_server, dim=8).embed(["x"])

    assert str(caught.value).startswith(f"the embedding endpoint at {openai_server.url}/ failed for model fake-embed: ")
    assert caught.value.fields == {"url": f"{openai_server.url}/"}
    assert "nope" in str(caught.value)
    assert len(openai_server.requests) == 1
