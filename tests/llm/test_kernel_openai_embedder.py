"""A home whose embedder is an OpenAI-compatible endpoint: the whole write/recall path over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAIServer

from memos import ManualClock, MemOS, UserError


def test_home_on_an_openai_compatible_embedding_endpoint(
    openai_server: FakeOpenAIServer, tmp_path: Path, clock: ManualClock
) -> None:
    settings = {"openai_base_url": openai_server.url, "openai_api_key": "sk-test"}
    with MemOS.open(tmp_path / "home", embedder="openai:fake-embed", clock=clock, **settings) as mos:
        assert (mos.embedder.id, mos.vectors.dim) == ("openai:fake-embed", 8)
        alice = mos.as_user("alice")
        cubes = alice.write_many(("alice",), [{"text": "the blue tram to Belém"}, {"text": "cello on Tuesdays"}])
        hits = alice.recall(("alice",), "the blue tram to Belém", k=2)
        assert hits[0].cube.id == cubes[0].id and hits[0].dense == pytest.approx(1.0, abs=1e-6)
    embed_calls = [r for r in openai_server.requests if r.path.endswith("/embeddings")]
    # one probe for the dimension, one batch for the two writes, one for the query
    assert [r.json["input"] for r in embed_calls] == [
        ["dimension probe"],
        ["the blue tram to Belém", "cello on Tuesdays"],
        ["the blue tram to Belém"],
    ]
    assert {r.json["model"] for r in embed_calls} == {"fake-embed"}

    # the index remembers its embedder: the hashing embedder is refused on the same home
    with pytest.raises(UserError, match="built with embedder 'openai:fake-embed'"):
        MemOS.open(tmp_path / "home", embedder="hash", clock=clock, **settings)


def test_embedding_endpoint_failure_writes_nothing(
    openai_server: FakeOpenAIServer, tmp_path: Path, clock: ManualClock
) -> None:
    from memos import BackendError
    from memos.storage.catalog import CubeFilter

    settings = {"openai_base_url": openai_server.url, "openai_api_key": "sk-test", "openai_max_retries": 1}
    with MemOS.open(tmp_path / "home", embedder="openai:fake-embed", clock=clock, **settings) as mos:
        alice = mos.as_user("alice")
        alice.write(("alice",), "kept")
        openai_server.fail_next(500, count=2)
        with pytest.raises(BackendError, match=r"embedding endpoint at http://127\.0\.0\.1:\d+/v1/ failed .* 500"):
            alice.write(("alice",), "lost to a server error")
        assert [c.text for c in mos.catalog.select(CubeFilter())] == ["kept"]
        assert mos.vectors.count() == 1


def test_update_survives_an_endpoint_failure_after_commit(
    openai_server: FakeOpenAIServer, tmp_path: Path, clock: ManualClock
) -> None:
    settings = {"openai_base_url": openai_server.url, "openai_api_key": "sk-test", "openai_max_retries": 0}
    with MemOS.open(tmp_path / "home", embedder="openai:fake-embed", clock=clock, **settings) as mos:
        alice = mos.as_user("alice")
        cube = alice.write(("alice",), "the spare key is under the plant")
        openai_server.fail_next(503, count=1)
        # the new text is committed before its vector is computed: the update stands, the vector waits
        updated = alice.update(cube.id, "the spare key is with the neighbour")
        assert alice.get(cube.id).text == updated.text == "the spare key is with the neighbour"
        assert mos.catalog.pending_vector_sync() == [cube.id]
        assert [h.cube.id for h in alice.recall(("alice",), "neighbour", k=1)] == [cube.id]
        done = alice.tick()
        assert (done["expired"], done["vector_synced"]) == (0, 1)
        assert mos.catalog.pending_vector_sync() == []
        hits = alice.recall(("alice",), "the spare key is with the neighbour", k=1)
        assert hits[0].dense == pytest.approx(1.0, abs=1e-6)
