"""Catalog and vector URLs: accepted spellings, clear errors, hidden passwords, and homes sharing one server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from memos import ManualClock, MemOS
from memos.config import Settings
from memos.errors import BackendError, UserError
from memos.storage.vectors import server_target

if TYPE_CHECKING:
    from conftest import ChromaServer, Postgres


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1:8000", "use http://host:port"),
        ("http://127.0.0.1:99999", "port must be a number"),
        ("http://127.0.0.1:8000/ab", "collection 'ab'"),
        ("http://127.0.0.1:8000/bad name", "collection 'bad name'"),
    ],
)
def test_bad_vector_urls(tmp_path: Path, url: str, problem: str) -> None:
    """A vector URL that is not http[s]://host[:port][/collection] is one clear UserError line."""
    with pytest.raises(UserError, match=problem) as caught:
        Settings.load(tmp_path / "home", vector_url=url)
    assert "\n" not in str(caught.value)


def test_vector_url_parts() -> None:
    """The URL's path names the collection; the default port is 8000 (443 with https)."""
    assert server_target("http://127.0.0.1:9000") == ("127.0.0.1", 9000, False, "memos_cubes")
    assert server_target("https://chroma.internal/team-a") == ("chroma.internal", 443, True, "team-a")
    assert server_target("http://localhost/home_1/") == ("localhost", 8000, False, "home_1")


def test_catalog_url_spellings(tmp_path: Path) -> None:
    """postgres:// means postgresql://; a blank URL means the home's SQLite file."""
    settings = Settings.load(tmp_path / "home", catalog_url="postgres://u@127.0.0.1/db")
    assert settings.catalog == "postgresql://u@127.0.0.1/db"
    assert Settings.load(tmp_path / "home", catalog_url="  ").catalog.startswith("sqlite:///")


def test_unreachable_catalog_hides_password(tmp_path: Path) -> None:
    """A catalog server that does not answer is a one-line BackendError that never shows the password."""
    url = f"postgresql+psycopg://memos:s3cret-pw@127.0.0.1:{_closed_port()}/memos?connect_timeout=2"
    with pytest.raises(BackendError) as caught:
        MemOS.open(tmp_path / "home", embedder="hash", catalog_url=url)
    message = str(caught.value)
    assert "s3cret-pw" not in message and "***" in message and "\n" not in message


def test_unreachable_vector_server(tmp_path: Path) -> None:
    """A Chroma server that does not answer is a BackendError naming the URL."""
    url = f"http://127.0.0.1:{_closed_port()}/memos_cubes"
    with pytest.raises(BackendError, match="cannot open the vector index"):
        MemOS.open(tmp_path / "home", embedder="hash", vector_url=url)


def test_postgres_spelling_and_shared_server(postgres: Postgres, chroma_server: ChromaServer, tmp_path: Path) -> None:
    """Two homes on one PostgreSQL cluster and one Chroma server (own database, own collection) stay apart."""
    homes = []
    databases = [postgres.create_database(), postgres.create_database()]
    try:
        for i, database in enumerate(databases):
            url = postgres.url(database).replace("postgresql+psycopg://", "postgres://")
            mos = MemOS.open(
                tmp_path / f"home{i}",
                embedder="hash",
                clock=ManualClock(),
                auto_paging=False,
                catalog_url=url,
                vector_url=chroma_server.url(f"shared_{database}"),
            )
            homes.append(mos)
            mos.as_user("alice").write(("alice", "n"), f"home {i} keeps this note")
        # reopening one home repairs its own index only: the other's vectors are not "extra" to it
        homes[0].close()
        homes[0] = MemOS.open(
            tmp_path / "home0",
            embedder="hash",
            auto_paging=False,
            catalog_url=postgres.url(databases[0]),
            vector_url=chroma_server.url(f"shared_{databases[0]}"),
        )
        for i, mos in enumerate(homes):
            assert mos.vectors.count() == 1
            hits = mos.as_user("alice").recall(("alice", "n"), "note", k=5)
            assert [h.cube.text for h in hits] == [f"home {i} keeps this note"]
    finally:
        for mos in homes:
            mos.close()
        for database in databases:
            postgres.drop_database(database)
