"""A real PostgreSQL deadlock: the aborted transaction is `Busy` (nothing written) and `transact` runs it again.

Two threads each lock one row and then want the other's; the server aborts one of them (SQLSTATE 40P01).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from memos.errors import Busy
from memos.storage.catalog import Catalog

if TYPE_CHECKING:
    from conftest import Postgres

Body = Callable[[Connection], None]
ROWS = sa.table("rows", sa.column("id", sa.Integer), sa.column("n", sa.Integer))


@pytest.fixture
def catalog(postgres: Postgres) -> Iterator[Catalog]:
    name = postgres.create_database()
    cat = Catalog(postgres.url(name))
    with cat.tx() as conn:
        conn.execute(sa.text("CREATE TABLE rows (id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(sa.text("INSERT INTO rows VALUES (1, 0), (2, 0)"))
    yield cat
    cat.close()
    postgres.drop_database(name)


def _bump(conn: Connection, row: int) -> None:
    conn.execute(sa.update(ROWS).where(ROWS.c.id == row).values(n=ROWS.c.n + 1))


def _crossed(run: Callable[[Body], object]) -> list[BaseException | None]:
    """Run two transactions that lock rows 1,2 and 2,1 with both first locks held before either second one."""
    both_hold_one = threading.Barrier(2, timeout=30)
    first_try = [True, True]
    outcome: list[BaseException | None] = [None, None]

    def body(k: int) -> Body:
        def locks(conn: Connection) -> None:
            first, second = (1, 2) if k == 0 else (2, 1)
            _bump(conn, first)
            if first_try[k]:
                first_try[k] = False
                both_hold_one.wait()
            _bump(conn, second)

        return locks

    def worker(k: int) -> None:
        try:
            run(body(k))
        except BaseException as exc:  # handed to the assertions
            outcome[k] = exc

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a transaction hung"
    return outcome


def _counts(catalog: Catalog) -> dict[int, int]:
    with catalog.read() as conn:
        return {int(i): int(n) for i, n in conn.execute(sa.select(ROWS.c.id, ROWS.c.n))}


def test_a_deadlock_is_busy_and_writes_nothing(catalog: Catalog) -> None:
    def once(body: Body) -> None:
        with catalog.tx() as conn:
            body(conn)

    outcome = _crossed(once)
    failed = [exc for exc in outcome if exc is not None]
    assert len(failed) == 1, outcome
    assert isinstance(failed[0], Busy)
    assert "deadlock" in str(failed[0]) and "nothing was saved" in str(failed[0])
    assert _counts(catalog) == {1: 1, 2: 1}  # only the surviving transaction's two increments


def test_transact_runs_the_aborted_transaction_again(catalog: Catalog) -> None:
    outcome = _crossed(catalog.transact)
    assert outcome == [None, None]
    assert _counts(catalog) == {1: 2, 2: 2}  # both transactions committed, each exactly once


def test_transact_gives_up_after_its_tries(catalog: Catalog) -> None:
    calls = []

    def always_busy(conn: Connection) -> None:
        calls.append(1)
        conn.execute(sa.text("SELECT 1"))
        raise Busy("held by another transaction")

    with pytest.raises(Busy):
        catalog.transact(always_busy, tries=3)
    assert len(calls) == 3
