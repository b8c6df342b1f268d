"""The gateway's database: SQLite or PostgreSQL engines, one writer at a time, migrations.

SQLite (WAL, ``synchronous=FULL``) is the embedded default; PostgreSQL through
psycopg 3 when the gateway runs on several machines. Every write that must not
interleave with another (an audit append above all) goes through
``Database.begin_write()``, which serializes writers across threads, processes
and, on PostgreSQL, machines.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import PoolProxiedConnection

from signing.errors import RogatoryError

SQLITE_BUSY_TIMEOUT_SECONDS = 60.0
WRITER_LOCK = "rogatory-writer"


class DatabaseError(RogatoryError):
    """The database URL is unusable or the schema cannot be brought up to date."""


def create_engine(url: str, **options: Any) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://...`` set up for durability."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"{url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise DatabaseError("an in-memory SQLite database cannot hold the gateway's record")
        engine = sa.create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, **options
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            # One driver, one set of behaviours to test: psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True, **options)
    raise DatabaseError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


# How the next transaction on this thread begins; writers say IMMEDIATE (see _begin_immediate).
_SQLITE_BEGIN: ContextVar[str] = ContextVar("rogatory_sqlite_begin", default="BEGIN DEFERRED")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN cannot say IMMEDIATE; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a crashed process.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.close()

    def _do_begin(connection: PoolProxiedConnection) -> None:
        driver = connection.driver_connection
        assert driver is not None  # a checked-out connection always has one
        driver.execute(_SQLITE_BEGIN.get())

    # The dialect's own hook rather than a "begin" event: any engine event makes
    # SQLAlchemy dispatch events around every statement, which cost more than the BEGIN.
    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign, assignment]


def _begin_immediate(connection: Connection) -> RootTransaction:
    """Begin a write on SQLite: IMMEDIATE takes the write lock up front, so two
    writers never both read, then deadlock upgrading to a write."""
    token = _SQLITE_BEGIN.set("BEGIN IMMEDIATE")
    try:
        return connection.begin()
    finally:
        _SQLITE_BEGIN.reset(token)


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _SqliteWriterGate:
    """One SQLite writer at a time across threads and processes, waiting in the kernel.

    SQLite's own busy handler makes a waiting writer sleep with back-off (up to
    100 ms a try), so contended writers leave the lock idle between holders. A
    thread lock plus ``flock`` on a file beside the database hands the lock on
    at once; the kernel drops a dead process's ``flock``.
    """

    def __init__(self, database: str) -> None:
        self.path = f"{database}-writer.lock"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            if self._pid != os.getpid():  # a forked worker opens its own descriptor
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_GATES: dict[str, _SqliteWriterGate] = {}
_GATES_LOCK = threading.Lock()


def _sqlite_file(engine: Engine) -> str | None:
    """The absolute path of an SQLite database file; None for any other database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return os.path.abspath(database)


def _gate(path: str) -> _SqliteWriterGate:
    with _GATES_LOCK:
        return _GATES.get(path) or _GATES.setdefault(path, _SqliteWriterGate(path))


class _SqliteWriter:
    """The connection one ``Database`` writes SQLite with, kept open from write to write.

    It is used only inside the writer gate, so by one thread at a time, and
    saves each write a pool checkout and checkin (with its reset). After a
    failed write, or in a forked process, a fresh one is opened.
    """

    def __init__(self, engine: Engine, path: str) -> None:
        self.engine = engine
        self.gate = _gate(path)
        self._connection: Connection | None = None
        self._pid = 0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.gate.held():
            connection = self._connection
            if connection is None or self._pid != os.getpid():
                connection = self.engine.connect()
                self._connection, self._pid = connection, os.getpid()
            try:
                with _begin_immediate(connection):
                    yield connection
            except BaseException:
                # Rolled back, but whatever failed may have left the connection unfit.
                self.close()
                raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            connection.close()


@contextmanager
def write_transaction(engine: Engine, lock: str = WRITER_LOCK) -> Iterator[Connection]:
    """A transaction that holds the writer lock from its first statement to its commit."""
    path = _sqlite_file(engine)
    if path is not None:
        writer = _SqliteWriter(engine, path)
        try:
            with writer.transaction() as connection:
                yield connection
        finally:
            writer.close()
        return
    with engine.connect() as connection, connection.begin():
        if engine.dialect.name == "postgresql":
            # Released by COMMIT or ROLLBACK, so a dead client never holds it.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(lock)}
            )
        yield connection


@dataclass
class Database:
    """An engine and the two kinds of transaction the gateway uses."""

    engine: Engine
    _writer: _SqliteWriter | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = _sqlite_file(self.engine)
        self._writer = None if path is None else _SqliteWriter(self.engine, path)

    @classmethod
    def from_url(cls, url: str, *, migrate_schema: bool = True) -> Database:
        database = cls(create_engine(url))
        if migrate_schema:
            migrate(database.engine)
        return database

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def begin_write(self, lock: str = WRITER_LOCK) -> AbstractContextManager[Connection]:
        """A serialized write transaction: one holder of ``lock`` at a time, everywhere."""
        if self._writer is not None:  # SQLite: one writer at all, whatever the lock's name
            return self._writer.transaction()
        return write_transaction(self.engine, lock)

    def begin_read(self) -> AbstractContextManager[Connection]:
        """A plain transaction for reads; it never waits for writers."""
        return self.engine.begin()

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.engine.dispose()


# --- Migrations: append only; a migration, once released, never changes. ---

Migration = tuple[str, Callable[[Connection], None]]


def _m0001_audit_log(connection: Connection) -> None:
    metadata = sa.MetaData()
    sa.Table(
        "audit_entries",
        metadata,
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True, index=True),
    )
    sa.Table(
        "audit_nodes",
        metadata,
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    head = sa.Table(
        "audit_head",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "audit_checkpoints",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    metadata.create_all(connection)
    empty_root = hashlib.sha256(b"").digest()
    connection.execute(head.insert().values(id=1, size=0, root_hash=empty_root, frontier=b""))


def _m0002_messages(connection: Connection) -> None:
    """Messages, their first answers, history, attachments, evidences; blobs for PostgreSQL."""
    metadata = sa.MetaData()
    when = sa.DateTime(timezone=True)
    digest = sa.String(64)
    sa.Table(
        "blobs",
        metadata,
        sa.Column("sha256", digest, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", when, nullable=False),
    )
    sa.Table(
        "blob_chunks",
        metadata,
        # The digest, or a temporary key while the blob is being written.
        sa.Column("sha256", digest, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "submissions",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("authority_id", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("envelope_sha256", digest, nullable=False),
        sa.Column("http_status", sa.SmallInteger, nullable=False),
        sa.Column("response_body", sa.LargeBinary, nullable=False),
        sa.Column("response_type", sa.String(255), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.UniqueConstraint("authority_id", "message_id", name="uq_submissions_authority_message"),
    )
    sa.Table(
        "messages",
        metadata,
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("submission_id", sa.String(36), sa.ForeignKey("submissions.id"), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("sender_id", sa.String(255), nullable=False),
        sa.Column("recipient_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("request_type", sa.String(64), nullable=True),
        sa.Column("legal_basis", sa.Text, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("envelope_sha256", digest, nullable=False),
        sa.Column("verdict_json", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.Index("ix_messages_inbox", "recipient_id", "status", "created_at", "message_id"),
        sa.Index("ix_messages_recipient", "recipient_id", "created_at", "message_id"),
        sa.Index("ix_messages_sender", "sender_id", "created_at", "message_id"),
        sa.Index("ix_messages_conversation", "conversation_id"),
    )
    sa.Table(
        "status_history",
        metadata,
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("at", when, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("audit_index", sa.BigInteger, nullable=False),
    )  # fmt: skip
    sa.Table(
        "attachments",
        metadata,
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  primary_key=True),
        sa.Column("content_id", sa.String(255), primary_key=True),
        sa.Column("file_name", sa.String(255), nullable=True),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", digest, nullable=False),
        sa.Column("verdict_json", sa.Text, nullable=True),
    )  # fmt: skip
    sa.Table(
        "evidences",
        metadata,
        sa.Column("evidence_id", sa.String(255), primary_key=True),
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  nullable=False, index=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("issued_at", when, nullable=False),
        sa.Column("sha256", digest, nullable=False),
        sa.Column("subject_sha256", digest, nullable=False),
    )  # fmt: skip
    metadata.create_all(connection)


def _m0003_outbox(connection: Connection) -> None:
    """Routing and delivery: how a message came and goes, and the dispatcher's queue."""
    for column in (
        sa.Column("in_reply_to", sa.String(255), nullable=True),
        sa.Column("arrived_via", sa.Text, nullable=True),  # inbound: the channel it came by
        sa.Column("route", sa.Text, nullable=True),  # outbound: the channel chosen for it
    ):
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE messages ADD COLUMN {column.name} {kind}"))
    metadata = sa.MetaData()
    sa.Table("messages", metadata, autoload_with=connection)  # for the foreign key
    when = sa.DateTime(timezone=True)
    sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("message_id", sa.String(255), sa.ForeignKey("messages.message_id"),
                  nullable=False, index=True),
        # "message": send the message; "evidence": send one of our evidences about it back.
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("evidence_id", sa.String(255), nullable=True),
        sa.Column("channel", sa.Text, nullable=False),  # JSON, see gateway.routing
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", when, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", when, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Index("ix_outbox_due", "next_attempt_at"),
    )  # fmt: skip
    metadata.tables["outbox"].create(connection)


def _m0004_small_blobs(connection: Connection) -> None:
    """Envelopes and evidences kept in the database, committed with what names them."""
    sa.Table(
        "small_blobs",
        sa.MetaData(),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    ).create(connection)


MIGRATIONS: tuple[Migration, ...] = (
    ("0001_audit_log", _m0001_audit_log),
    ("0002_messages", _m0002_messages),
    ("0003_outbox", _m0003_outbox),
    ("0004_small_blobs", _m0004_small_blobs),
)

_schema_migrations = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("applied_at", sa.String(40), nullable=False),
)


def migrate(engine: Engine, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded, in order, in one serialized transaction.

    Safe to run from several processes at once: the writer lock makes the
    second one find everything applied. Returns the ids it applied.
    """
    applied: list[str] = []
    with write_transaction(engine) as connection:
        _schema_migrations.create(connection, checkfirst=True)
        done = set(connection.execute(sa.select(_schema_migrations.c.id)).scalars())
        for migration_id, apply in migrations:
            if migration_id in done:
                continue
            apply(connection)
            connection.execute(
                _schema_migrations.insert().values(
                    id=migration_id, applied_at=datetime.now(UTC).isoformat()
                )
            )
            applied.append(migration_id)
    return applied


def applied_migrations(engine: Engine) -> list[str]:
    """The ids recorded in ``schema_migrations``, oldest first."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("schema_migrations"):
            return []
        rows = connection.execute(
            sa.select(_schema_migrations.c.id).order_by(_schema_migrations.c.id)
        )
        return list(rows.scalars())
