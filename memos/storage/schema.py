"""The catalog's tables (SQLAlchemy Core) and its named, ordered migrations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

metadata = sa.MetaData()

#: times are stored as integer microseconds since the epoch (UTC): exact, sortable, portable
Micros = sa.BigInteger

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("applied_at", Micros, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", Micros, nullable=False),
)

#: ownership is per root segment: ("alice", "chat") belongs to the owner of root "alice"
roots = sa.Table(
    "roots",
    metadata,
    sa.Column("root", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("ns", sa.String(600), primary_key=True),
    sa.Column("grantee", sa.String(64), primary_key=True),
    sa.Column("right", sa.String(8), nullable=False),
    sa.Column("granted_by", sa.String(64), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)

cubes = sa.Table(
    "cubes",
    metadata,
    # rid: the integer row id the lexical index points at
    sa.Column("rid", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("ns", sa.String(600), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=True),
    sa.Column("blob", sa.String(600), nullable=True),
    sa.Column("sources", sa.Text, nullable=False, default="[]"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("previous", sa.Integer, nullable=True),
    sa.Column("provenance", sa.Text, nullable=False),
    sa.Column("external_id", sa.String(256), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("event_time", Micros, nullable=True),
    sa.Column("expires_at", Micros, nullable=True),
    sa.Column("access_count", sa.Integer, nullable=False, default=0),
    sa.Column("last_access", Micros, nullable=True),
    sa.Column("heat", sa.Float, nullable=False, default=0.0),
    sa.Column("acl", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False, default="[]"),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
    sa.Column("tokens", sa.Integer, nullable=False, default=0),
    sa.Column("embedder", sa.String(128), nullable=True),
    sa.Index("ix_cubes_ns_level", "ns", "level"),
    sa.Index("ix_cubes_external_id", "external_id"),
)

cube_tags = sa.Table(
    "cube_tags",
    metadata,
    sa.Column("cube_id", sa.String(36), primary_key=True),
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Index("ix_cube_tags_tag", "tag"),
)

cube_labels = sa.Table(
    "cube_labels",
    metadata,
    sa.Column("cube_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Index("ix_cube_labels_kv", "key", "value"),
)

cube_versions = sa.Table(
    "cube_versions",
    metadata,
    sa.Column("cube_id", sa.String(36), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    # the whole cube as JSON, as it was at this version
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("recorded_at", Micros, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Micros, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("cube_id", sa.String(36), nullable=True),
    sa.Column("ns", sa.String(600), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
    sa.Index("ix_audit_cube", "cube_id"),
)

#: transactional outbox: cube ids whose vectors must be brought in line with the catalog
vector_outbox = sa.Table(
    "vector_outbox",
    metadata,
    sa.Column("cube_id", sa.String(36), primary_key=True),
    sa.Column("queued_at", Micros, nullable=False),
    # bumped by every re-queue, so a sync clears only the requests it has seen (see Catalog.clear_vector_sync)
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
)

#: mid-term segments (MemoryOS sessions): the paging state of a segment cube (level mid, labels type=segment)
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("ns", sa.String(600), nullable=False),
    # N_visit: retrievals that hit the segment since its last promotion
    sa.Column("visits", sa.Integer, nullable=False, default=0),
    # L_interaction: pages merged into it since its last promotion
    sa.Column("interactions", sa.Integer, nullable=False, default=0),
    sa.Column("last_visit", Micros, nullable=False),
    sa.Column("heat", sa.Float, nullable=False, default=0.0),
    # JSON list of the summary's keywords
    sa.Column("keywords", sa.Text, nullable=False, default="[]"),
    # JSON list of the page ids already analysed by a promotion
    sa.Column("analyzed", sa.Text, nullable=False, default="[]"),
    # 1 while paged out (the segment and its pages archived, still searchable)
    sa.Column("paged_out", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Index("ix_segments_ns_heat", "ns", "paged_out", "heat"),
)

_V1_TABLES = [schema_migrations, users, roots, grants, cubes, cube_tags, cube_labels, cube_versions, audit]


def _v1_core(conn: Connection) -> None:
    for table in _V1_TABLES:
        table.create(conn, checkfirst=True)


def _v2_lexical(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS cubes_fts USING fts5(content, tokenize='porter unicode61')"
        )
    else:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS cubes_fts (rid INTEGER PRIMARY KEY, tsv tsvector NOT NULL)")
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_cubes_fts_tsv ON cubes_fts USING GIN (tsv)")


def _v3_vector_outbox(conn: Connection) -> None:
    # the table as 0003 made it; 0007 adds the generation column
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS vector_outbox (cube_id VARCHAR(36) PRIMARY KEY, queued_at BIGINT NOT NULL)"
    )


def _v4_drop_status_index(conn: Connection) -> None:
    # four statuses make a useless index, and without statistics SQLite picks it over the unique id
    # index for `id IN (...) AND status = ...`, scanning every active cube
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_cubes_status")


def _v5_lexical_vocabulary(conn: Connection) -> None:
    # per-term document counts, so queries can skip terms found in most cubes (BM25 gives them ~0)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("CREATE VIRTUAL TABLE IF NOT EXISTS cubes_fts_vocab USING fts5vocab(cubes_fts, 'row')")


def _v6_filter_index(conn: Connection) -> None:
    # lets counts and id lists under a namespace with status/kind/level/expiry conditions come from
    # the index alone instead of reading every row
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_cubes_filter ON cubes (ns, status, kind, level, expires_at)")


def _v7_outbox_generation(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE vector_outbox ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


def _v8_segments(conn: Connection) -> None:
    segments.create(conn, checkfirst=True)


def _v9_lexical_context(conn: Connection) -> None:
    # a second lexical column: the text just before a page in its conversation (its `preceded_by`), so a
    # reply is found by the words of the question it answers; rebuilt from the cubes table
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DROP TABLE IF EXISTS cubes_fts_vocab")
        conn.exec_driver_sql("DROP TABLE IF EXISTS cubes_fts")
        conn.exec_driver_sql("CREATE VIRTUAL TABLE cubes_fts USING fts5(content, context, tokenize='porter unicode61')")
        conn.exec_driver_sql("CREATE VIRTUAL TABLE cubes_fts_vocab USING fts5vocab(cubes_fts, 'row')")
        conn.exec_driver_sql(
            "INSERT INTO cubes_fts(rowid, content, context) SELECT rid, content, '' FROM cubes"
            " WHERE content IS NOT NULL AND content != '' AND status IN ('active', 'archived')"
        )
    else:
        conn.exec_driver_sql("ALTER TABLE cubes_fts ADD COLUMN IF NOT EXISTS ctx tsvector")


def _v10_namespace_order_index(conn: Connection) -> None:
    # "the newest cubes of a namespace" (a turn's predecessor in its session, at every write) reads a few
    # index entries instead of sorting the whole namespace
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_cubes_ns_rid ON cubes (ns, rid)")


#: applied in this order, each once, recorded by name in schema_migrations
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_core_tables", _v1_core),
    ("0002_lexical_index", _v2_lexical),
    ("0003_vector_outbox", _v3_vector_outbox),
    ("0004_drop_status_index", _v4_drop_status_index),
    ("0005_lexical_vocabulary", _v5_lexical_vocabulary),
    ("0006_filter_index", _v6_filter_index),
    ("0007_outbox_generation", _v7_outbox_generation),
    ("0008_segments", _v8_segments),
    ("0009_lexical_context", _v9_lexical_context),
    ("0010_namespace_order_index", _v10_namespace_order_index),
]


#: the PostgreSQL advisory lock key that serialises migrations between processes ("memos" in ASCII)
MIGRATION_LOCK_KEY = 0x6D656D6F73


def _pending(conn: Connection) -> bool:
    """Whether some migration is not recorded yet (read without any lock)."""
    if not sa.inspect(conn).has_table(schema_migrations.name):
        return True
    done = set(conn.execute(sa.select(schema_migrations.c.name)).scalars())
    return any(name not in done for name, _ in MIGRATIONS)


def _lock_for_migration(conn: Connection) -> None:
    """Take, for the rest of the caller's transaction, the lock that lets one process migrate at a time."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:
            # the write lock now, not at the first change: another process migrating waits (busy_timeout)
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied now (idempotent, safe across processes).

    Processes opening a new catalog together take turns: the first applies the migrations under a
    lock (an advisory lock on PostgreSQL, the write lock on SQLite), the others then find them recorded.
    """
    if not _pending(conn):
        return []
    _lock_for_migration(conn)
    schema_migrations.create(conn, checkfirst=True)
    done = set(conn.execute(sa.select(schema_migrations.c.name)).scalars())
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        step(conn)
        conn.execute(sa.insert(schema_migrations).values(name=name, applied_at=to_micros(datetime.now(UTC))))
        applied.append(name)
    return applied


def to_micros(when: datetime | None) -> int | None:
    """Datetime -> integer microseconds since the epoch (naive datetimes are taken as UTC)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int | None) -> datetime | None:
    """Integer microseconds since the epoch -> aware UTC datetime."""
    if value is None:
        return None
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
