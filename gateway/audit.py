"""The audit trail: an append-only Merkle log (RFC 9162) of every event, in the database.

Each entry is canonical JSON that names the root of the log before it
(``gateway.audit_entry``, whose names this module also offers).

Tables (migration ``0001_audit_log``): ``audit_entries`` (idx, leaf_hash,
entry, kind, message_id), ``audit_nodes`` (level, idx, hash) for every
complete subtree, and a one-row ``audit_head`` (size, root_hash, frontier)
that an append reads and rewrites under the writer lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway import merkle
from gateway.audit_entry import (
    ENTRY_VERSION,
    JSON,
    MAX_DEPTH,
    MAX_ENTRY_BYTES,
    AuditEntry,
    AuditError,
    AuditEvent,
    canonical_json,
    decode_entry,
    encode_entry,
)
from gateway.checkpoint import (
    Checkpoint,
    PrivateKey,
    format_time,
    parse_checkpoint,
    sign_checkpoint,
)
from gateway.db import Database
from gateway.driver_sql import DriverStatement

EXPORT_FORMAT = "rogatory-audit-log"

_metadata = sa.MetaData()
entries_table = sa.Table(
    "audit_entries",
    _metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("leaf_hash", sa.LargeBinary(32)),
    sa.Column("entry", sa.LargeBinary),
    sa.Column("kind", sa.String(64)),
    sa.Column("message_id", sa.String(255)),
)
nodes_table = sa.Table(
    "audit_nodes",
    _metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True),
    sa.Column("idx", sa.BigInteger, primary_key=True),
    sa.Column("hash", sa.LargeBinary(32)),
)
head_table = sa.Table(
    "audit_head",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("size", sa.BigInteger),
    sa.Column("root_hash", sa.LargeBinary(32)),
    sa.Column("frontier", sa.LargeBinary),
)
checkpoints_table = sa.Table(
    "audit_checkpoints",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("size", sa.BigInteger),
    sa.Column("note", sa.Text),
)


@dataclass(frozen=True)
class AuditEntryRef:
    index: int
    leaf_hash: bytes


class KeyHolder(Protocol):
    """Anything carrying a private key, such as ``signing.keys.Signer``."""

    @property
    def key(self) -> PrivateKey: ...


def _now() -> datetime:
    return datetime.now(UTC)


_BATCH_KEY = "rogatory.audit_batch"


# The hot path of every write, run on the driver's cursor (gateway.driver_sql).
_READ_HEAD = DriverStatement(
    sa.select(head_table.c.size, head_table.c.root_hash, head_table.c.frontier)
    .where(head_table.c.id == 1)
    .with_for_update()
)
_MOVE_HEAD = DriverStatement(
    head_table.update()
    .where(head_table.c.id == 1, head_table.c.size == sa.bindparam("start"))
    .values(
        size=sa.bindparam("size"),
        root_hash=sa.bindparam("root_hash"),
        frontier=sa.bindparam("frontier"),
    ),
    ["start", "size", "root_hash", "frontier"],
)
_INSERT_ENTRY = DriverStatement(
    entries_table.insert(), ["idx", "leaf_hash", "entry", "kind", "message_id"]
)
_INSERT_NODE = DriverStatement(nodes_table.insert(), ["level", "idx", "hash"])
_SIZE = sa.select(head_table.c.size)


class _Batch:
    """Entries appended in one transaction, held until ``flush``."""

    def __init__(self, log: AuditLog, connection: Connection) -> None:
        self.log = log
        self.connection = connection
        [(size, root_hash, frontier)] = _READ_HEAD.rows(connection)
        self.start = self.size = int(size)
        self.root_hash = bytes(root_hash)
        self.frontier = merkle.Frontier.from_bytes(self.size, frontier)
        self.entries: list[tuple[Any, ...]] = []
        self.nodes: list[tuple[int, int, bytes]] = []

    def append(self, event: AuditEvent) -> AuditEntryRef:
        index = self.size
        encoded = encode_entry(index, self.log._clock(), event, self.root_hash)
        leaf = merkle.leaf_hash(encoded)
        completed = self.frontier.append(leaf)
        self.entries.append((index, leaf, encoded, event.kind, event.message_id))
        self.nodes += completed
        self.size += 1
        self.root_hash = self.frontier.root()
        return AuditEntryRef(index, leaf)

    def flush(self) -> None:
        if not self.entries:
            return
        _INSERT_ENTRY.executemany(self.connection, self.entries)
        if self.nodes:
            _INSERT_NODE.executemany(self.connection, self.nodes)
        moved = _MOVE_HEAD.execute(
            self.connection, (self.start, self.size, self.root_hash, self.frontier.to_bytes())
        )
        if moved != 1:
            # Only a writer that bypassed begin_write() can get here; refuse to fork.
            raise AuditError("the audit log grew under this append; use Database.begin_write()")
        self.log.saw_size(self.size)


class AuditLog:
    """The append-only log over a ``Database``; appends are serialized by its writer lock."""

    def __init__(
        self, db: Database, *, origin: str = "rogatory", clock: Callable[[], datetime] = _now
    ) -> None:
        self.db = db
        self.origin = origin
        self._clock = clock
        self._size_seen = 0

    def append(self, event: AuditEvent, *, connection: Connection | None = None) -> AuditEntryRef:
        """Log ``event``; durable when the transaction commits.

        Pass ``connection`` (from ``db.begin_write()``) to log in the caller's
        transaction, so the event and what it records commit or vanish together.
        Inside ``batch(connection)`` the entry is written with the batch.
        """
        if connection is not None:
            pending = connection.info.get(_BATCH_KEY)
            if isinstance(pending, _Batch):
                return pending.append(event)
            with self.batch(connection) as one:
                return one.append(event)
        with self.db.begin_write() as own, self.batch(own) as one:
            return one.append(event)

    @contextmanager
    def batch(self, connection: Connection) -> Iterator[_Batch]:
        """Appends inside the caller's write transaction, written together at the end.

        The head is read once and written once, and entries and nodes go in one
        statement each: a message's several entries cost a few statements, not
        a few per entry. Indexes and leaf hashes are known at each append.
        """
        if _BATCH_KEY in connection.info:
            raise AuditError("an audit batch is already open on this connection")
        pending = _Batch(self, connection)
        connection.info[_BATCH_KEY] = pending
        try:
            yield pending
            pending.flush()
        finally:
            del connection.info[_BATCH_KEY]

    def size(self) -> int:
        with self.db.begin_read() as connection:
            size = int(connection.execute(_SIZE).scalar_one())
        self.saw_size(size)
        return size

    @property
    def size_seen(self) -> int:
        """The largest size this process saw the log reach, by its appends or ``size()``; no query.

        Not the size now: other processes append too, and an append seen here
        may yet be rolled back. Good for deciding when to read the real size.
        """
        return self._size_seen

    def saw_size(self, size: int) -> None:
        # Unlocked: a lost update only makes size_seen lag until the next append.
        if size > self._size_seen:
            self._size_seen = size

    def root(self, size: int | None = None) -> bytes:
        with self.db.begin_read() as connection:
            return self._root(connection, self.current_size(connection, size))

    def entry(self, index: int) -> AuditEntry:
        with self.db.begin_read() as connection:
            encoded = connection.execute(
                sa.select(entries_table.c.entry).where(entries_table.c.idx == index)
            ).scalar_one_or_none()
        if encoded is None:
            raise AuditError(f"the audit log has no entry {index}")
        return decode_entry(bytes(encoded))

    def entries_for(self, message_id: str) -> list[AuditEntry]:
        """Every entry about one message, oldest first (for its written record)."""
        query = (
            sa.select(entries_table.c.entry)
            .where(entries_table.c.message_id == message_id)
            .order_by(entries_table.c.idx)
        )
        with self.db.begin_read() as connection:
            return [decode_entry(bytes(e)) for e in connection.execute(query).scalars()]

    def checkpoint(self, signer: PrivateKey | KeyHolder) -> Checkpoint:
        """Sign the current tree head and keep the checkpoint with the log."""
        key = signer.key if hasattr(signer, "key") else signer
        with self.db.begin_write() as connection:
            head = connection.execute(sa.select(head_table).where(head_table.c.id == 1)).one()
            signed = sign_checkpoint(self.origin, head.size, head.root_hash, self._clock(), key)
            connection.execute(
                checkpoints_table.insert().values(size=head.size, note=signed.to_note())
            )
        return signed

    def checkpoints(self) -> list[Checkpoint]:
        return [parse_checkpoint(note) for note in self.notes(None)]

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, read alone (the list grows with the log)."""
        query = sa.select(checkpoints_table.c.note).order_by(checkpoints_table.c.id.desc()).limit(1)
        with self.db.begin_read() as connection:
            note = connection.execute(query).scalar_one_or_none()
        return None if note is None else parse_checkpoint(note)

    def inclusion_proof(self, index: int, size: int | None = None) -> merkle.InclusionProof:
        with self.db.begin_read() as connection:
            size = self.current_size(connection, size)
            if not 0 <= index < size:
                raise AuditError(f"entry {index} is not in the log of size {size}")
            complete = self._complete(connection)
            path = merkle.inclusion_path(
                index, size, lambda s, e: merkle.subtree_split(s, e, complete)
            )
            return merkle.InclusionProof(
                index, size, complete(index, index + 1), self._root(connection, size), path
            )

    def consistency_proof(
        self, old_size: int, new_size: int | None = None
    ) -> merkle.ConsistencyProof:
        with self.db.begin_read() as connection:
            new_size = self.current_size(connection, new_size)
            if not 0 < old_size <= new_size:
                raise AuditError(f"no consistency proof from size {old_size} to {new_size}")
            complete = self._complete(connection)
            path = merkle.consistency_path(
                old_size, new_size, lambda s, e: merkle.subtree_split(s, e, complete)
            )
            return merkle.ConsistencyProof(
                old_size,
                new_size,
                self._root(connection, old_size),
                self._root(connection, new_size),
                path,
            )

    def export(self, out: Path | str | IO[bytes]) -> int:
        """Write the log as JSON Lines (header, entries, checkpoints); return the entry count.

        The export is a snapshot at the size read first: later appends are
        left out, and so are checkpoints beyond that size.
        """
        if isinstance(out, Path | str):
            tmp = Path(f"{out}.part")
            with tmp.open("wb") as stream:
                count = self.export(stream)
                stream.flush()
                os.fsync(stream.fileno())
            tmp.replace(out)
            return count
        with self.db.begin_read() as connection:
            size = self.current_size(connection, None)
            notes = self.notes(size, connection)
            header: dict[str, JSON] = {"format": EXPORT_FORMAT, "version": 1}
            header |= {"origin": self.origin, "size": size, "checkpoints": len(notes)}
            header["exported"] = format_time(_now())
            out.write(canonical_json(header) + b"\n")
            for encoded in self.stream_entries(connection, size):
                out.write(encoded + b"\n")
            for note in notes:
                out.write(canonical_json({"checkpoint": note}) + b"\n")
        return size

    @staticmethod
    def stream_entries(
        connection: Connection, size: int, with_leaves: bool = False
    ) -> Iterator[Any]:
        """Entry bytes (or (bytes, stored leaf hash)) for indexes 0..size-1, in order, streamed."""
        columns = [entries_table.c.entry, entries_table.c.leaf_hash]
        query = sa.select(*columns).where(entries_table.c.idx < size).order_by(entries_table.c.idx)
        result = connection.execution_options(yield_per=2000).execute(query)
        for encoded, leaf in result:
            yield (bytes(encoded), bytes(leaf)) if with_leaves else bytes(encoded)

    def notes(self, size: int | None, connection: Connection | None = None) -> list[str]:
        query = sa.select(checkpoints_table.c.note).order_by(checkpoints_table.c.id)
        if size is not None:
            query = query.where(checkpoints_table.c.size <= size)
        if connection is None:
            with self.db.begin_read() as own:
                return list(own.execute(query).scalars())
        return list(connection.execute(query).scalars())

    @staticmethod
    def current_size(connection: Connection, size: int | None) -> int:
        current = int(connection.execute(sa.select(head_table.c.size)).scalar_one())
        if size is None:
            return current
        if not 0 <= size <= current:
            raise AuditError(f"the audit log has {current} entries, not {size}")
        return size

    def _root(self, connection: Connection, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.subtree_split(0, size, self._complete(connection))

    @staticmethod
    def _complete(connection: Connection) -> merkle.SubtreeHash:
        """Hashes of complete subtrees, as stored by appends: leaves and ``audit_nodes``."""

        def complete(start: int, end: int) -> bytes:
            level = (end - start).bit_length() - 1
            if level == 0:
                query = sa.select(entries_table.c.leaf_hash).where(entries_table.c.idx == start)
            else:
                query = sa.select(nodes_table.c.hash).where(
                    nodes_table.c.level == level, nodes_table.c.idx == start >> level
                )
            return bytes(connection.execute(query).scalar_one())

        return complete


__all__ = [
    "ENTRY_VERSION",
    "EXPORT_FORMAT",
    "JSON",
    "MAX_DEPTH",
    "MAX_ENTRY_BYTES",
    "AuditEntry",
    "AuditEntryRef",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "KeyHolder",
    "canonical_json",
    "checkpoints_table",
    "decode_entry",
    "encode_entry",
    "entries_table",
    "head_table",
    "nodes_table",
]
