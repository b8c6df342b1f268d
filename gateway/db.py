"""The gateway's database: SQLite or PostgreSQL engines, one writer at a time.

SQLite (WAL, ``synchronous=FULL``) is the embedded default; PostgreSQL through
psycopg 3 when the gateway runs on several machines. Every write that must not
interleave with another (an audit append above all) goes through
``Database.begin_write()``, which serializes writers across threads, processes
and, on PostgreSQL, machines. The schema's migrations are in ``gateway.migrations``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import PoolProxiedConnection

from gateway.migrations import MIGRATIONS, Migration, applied_migrations, migrate
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


__all__ = [
    "MIGRATIONS",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "WRITER_LOCK",
    "Database",
    "DatabaseError",
    "Migration",
    "applied_migrations",
    "create_engine",
    "migrate",
    "write_transaction",
]
