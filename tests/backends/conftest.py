"""Backend fixtures: a throwaway PostgreSQL cluster and a Chroma server (session-scoped), and a home on each pair.

The servers are started once per test session on free 127.0.0.1 ports with their data in temporary
folders, and stopped (data removed) at the end. A server that cannot start fails the tests that need it
with the reason; these tests are never skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memos import ManualClock, MemOS

#: the backend pairs every conformance and concurrency test runs on: (catalog, vector index)
PAIRS = ("sqlite+embedded", "postgres+chroma-server")
#: seconds a server may take to accept connections before the tests fail
START_TIMEOUT_S = 60.0
#: the unprivileged account PostgreSQL runs as when the tests run as root (postgres refuses root)
PG_USER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tool(name: str) -> str:
    """The path of a PostgreSQL program (on PATH, or in the Debian package's versioned folder)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    pytest.fail(f"PostgreSQL's {name} was not found: install PostgreSQL (`make test` installs the Debian package)")


@dataclass
class Postgres:
    """A running throwaway PostgreSQL cluster, reachable on 127.0.0.1:port as superuser `user` (trust auth)."""

    port: int
    user: str
    datadir: Path

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database of the cluster (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement on the maintenance database, outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = "memos_" + uuid.uuid4().hex[:12]
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_pg_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster initialised in a temporary folder, listening on a free 127.0.0.1 port."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed: `pip install -e .[postgres]` (`make test` does)")
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="memos-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True, capture_output=True)
            account = pwd.getpwnam(PG_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
        user = PG_USER
    else:
        user = pwd.getpwuid(os.geteuid()).pw_name
    port = _free_port()
    init = subprocess.run(
        _as_pg_user([initdb, "-D", str(datadir), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync", "-N"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=200"
    log = root / "server.log"
    start = subprocess.run(
        _as_pg_user([pg_ctl, "-D", str(datadir), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
        capture_output=True,
        text=True,
        timeout=90,
    )
    if start.returncode != 0:
        text = log.read_text() if log.exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start on 127.0.0.1:{port}: {text.strip()[-2000:]}")
    try:
        yield Postgres(port=port, user=user, datadir=datadir)
    finally:
        subprocess.run(
            _as_pg_user([pg_ctl, "-D", str(datadir), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ChromaServer:
    """A running Chroma server on 127.0.0.1:port."""

    port: int

    def url(self, collection: str) -> str:
        """The vector_url of one collection on this server."""
        return f"http://127.0.0.1:{self.port}/{collection}"


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    """A Chroma server with its data in a temporary folder, on a free 127.0.0.1 port."""
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.fail(f"the chroma command is missing next to {sys.executable}: reinstall chromadb (`make test`)")
    root = Path(tempfile.mkdtemp(prefix="memos-chroma-"))
    port = _free_port()
    log = (root / "server.log").open("wb")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                text = (root / "server.log").read_text(errors="replace").strip()[-2000:]
                pytest.fail(f"the Chroma server did not start on 127.0.0.1:{port}: {text}")
            time.sleep(0.05)
        yield ChromaServer(port=port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Backend:
    """Where one test's home keeps its catalog and vectors: settings overrides for MemOS.open."""

    pair: str
    overrides: dict[str, str]


@pytest.fixture(params=PAIRS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh, empty catalog and vector index on one backend pair (a new database and collection per test)."""
    if request.param == "sqlite+embedded":
        yield Backend(pair=request.param, overrides={})
        return
    pg: Postgres = request.getfixturevalue("postgres")
    chroma: ChromaServer = request.getfixturevalue("chroma_server")
    database = pg.create_database()
    collection = "memos_" + uuid.uuid4().hex[:12]
    try:
        yield Backend(
            pair=request.param, overrides={"catalog_url": pg.url(database), "vector_url": chroma.url(collection)}
        )
    finally:
        pg.drop_database(database)


@pytest.fixture
def open_home(home: Path, clock: ManualClock, backend: Backend) -> Iterator[Callable[..., MemOS]]:
    """open_home(**overrides): MemOS.open on the test's home and backend pair (hash embedder, manual clock)."""
    opened: list[MemOS] = []

    def make(**overrides: object) -> MemOS:
        settings = {"embedder": "hash", "auto_paging": False, **backend.overrides, **overrides}
        mos = MemOS.open(home, clock=clock, **settings)
        opened.append(mos)
        return mos

    yield make
    for mos in opened:
        mos.close()
