"""The audit trail: an append-only Merkle log (RFC 9162) of every event, in the database.

An entry is one canonical JSON object (RFC 8785 style: keys sorted by UTF-16
code units, no whitespace, UTF-8, integers only)::

    {"actor":"ES-MJ","details":{...},"index":41,"kind":"message.accepted",
     "message_id":"ES-2026-0001","previous_root":"<hex MTH of entries 0..40>",
     "time":"2026-11-22T10:00:00.000000Z","v":1}

Its leaf hash is SHA-256(0x00 || bytes). Each entry names the root of the log
before it, so an entry moved, dropped or edited breaks the chain at once.

Tables (migration ``0001_audit_log``): ``audit_entries`` (idx, leaf_hash,
entry, kind, message_id), ``audit_nodes`` (level, idx, hash) for every
complete subtree, and a one-row ``audit_head`` (size, root_hash, frontier)
that an append reads and rewrites under the writer lock.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway import merkle
from gateway.checkpoint import (
    Checkpoint,
    PrivateKey,
    format_time,
    parse_checkpoint,
    sign_checkpoint,
)
from gateway.db import Database
from signing.errors import RogatoryError

JSON: TypeAlias = bool | int | str | list["JSON"] | dict[str, "JSON"] | None

ENTRY_VERSION = 1
EXPORT_FORMAT = "rogatory-audit-log"
MAX_ENTRY_BYTES = 64 * 1024
MAX_DEPTH = 16
_SAFE_INT = 2**53 - 1
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_FIELDS = frozenset(
    {"v", "index", "time", "kind", "message_id", "actor", "details", "previous_root"}
)

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


class AuditError(RogatoryError):
    """An event cannot be logged, or a proof was asked for entries the log does not hold."""


@dataclass(frozen=True)
class AuditEvent:
    """Something that happened: what (``kind``), who did it, to which message, and details."""

    kind: str
    actor: str
    message_id: str | None = None
    details: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntryRef:
    index: int
    leaf_hash: bytes


@dataclass(frozen=True)
class AuditEntry:
    """A logged entry, decoded; ``encoded`` is the exact bytes that were hashed."""

    index: int
    time: str
    kind: str
    message_id: str | None
    actor: str
    details: dict[str, JSON]
    previous_root: bytes
    encoded: bytes

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.encoded)


def canonical_json(value: JSON) -> bytes:
    """RFC 8785-style bytes: sorted keys, no whitespace, UTF-8, no floats."""
    return _dumps(_canonical(value, 0))


# Built once (json.dumps builds one a call); canonical values hold no cycles to check for.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)


def _dumps(value: JSON) -> bytes:
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError("audit entries hold valid Unicode text only") from None


def _canonical(value: object, depth: int) -> JSON:
    if depth > MAX_DEPTH:
        raise AuditError(f"audit details nest deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind is str or value is None:
        return value  # type: ignore[return-value]  # a str
    # The usual object, done fast: ASCII keys sort the same by code point as by
    # UTF-16 code unit, and a plain string value needs no more than the depth check.
    if kind is dict and all(type(k) is str and k.isascii() for k in value):  # type: ignore[attr-defined]
        items: dict[str, Any] = value  # type: ignore[assignment]
        if depth < MAX_DEPTH:
            return {
                key: item if type(item) is str else _canonical(item, depth + 1)
                for key, item in sorted(items.items())
            }
        return {key: _canonical(item, depth + 1) for key, item in sorted(items.items())}
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        # Beyond 2^53 JSON readers disagree on the value, so the entry would not be canonical.
        if abs(value) > _SAFE_INT:
            raise AuditError(f"integer {value} is too large for an audit entry; use a string")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise AuditError("audit detail keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return {key: _canonical(value[key], depth + 1) for key in keys}
    raise AuditError(f"a {type(value).__name__} cannot be part of an audit entry")


def encode_entry(index: int, when: datetime, event: AuditEvent, previous_root: bytes) -> bytes:
    """The canonical bytes of entry ``index``; ``AuditError`` if the event is not loggable."""
    if not _KIND.fullmatch(event.kind):
        raise AuditError(f"event kind {event.kind!r} must look like 'message.accepted'")
    if not event.actor or len(event.actor) > 255:
        raise AuditError("an audit event needs an actor of at most 255 characters")
    if event.message_id is not None and not 0 < len(event.message_id) <= 255:
        raise AuditError("a message id in the audit log has 1 to 255 characters")
    # The entry's fields written in canonical (sorted) order: only values need canonicalizing.
    entry = {
        "actor": _canonical(event.actor, 1),
        "details": _canonical(event.details, 1),
        "index": _canonical(index, 1),
        "kind": _canonical(event.kind, 1),
        "message_id": _canonical(event.message_id, 1),
        "previous_root": previous_root.hex(),
        "time": format_time(when),
        "v": ENTRY_VERSION,
    }
    encoded = _dumps(entry)
    if len(encoded) > MAX_ENTRY_BYTES:
        raise AuditError(f"the audit entry is larger than {MAX_ENTRY_BYTES} bytes")
    return encoded


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_entry(encoded: bytes) -> AuditEntry:
    """An ``AuditEntry`` from logged bytes; ``ValueError`` says why they are not one."""
    if len(encoded) > MAX_ENTRY_BYTES:
        raise ValueError("longer than any entry the gateway writes")
    obj = json.loads(encoded, parse_constant=_reject_constant)
    if not isinstance(obj, dict) or obj.keys() != _FIELDS:
        raise ValueError("not an audit entry object with exactly the entry fields")
    index, message_id, details = obj["index"], obj["message_id"], obj["details"]
    if obj["v"] != ENTRY_VERSION or type(index) is not int or index < 0:
        raise ValueError("unknown entry version or bad index")
    if not all(isinstance(obj[k], str) for k in ("time", "kind", "actor", "previous_root")):
        raise ValueError("time, kind, actor and previous_root must be strings")
    if not (message_id is None or isinstance(message_id, str)) or not isinstance(details, dict):
        raise ValueError("bad message_id or details")
    previous_root = bytes.fromhex(obj["previous_root"])
    if len(previous_root) != merkle.HASH_SIZE:
        raise ValueError("previous_root is not a SHA-256 hash")
    return AuditEntry(
        index, obj["time"], obj["kind"], message_id, obj["actor"], details, previous_root, encoded
    )


class KeyHolder(Protocol):
    """Anything carrying a private key, such as ``signing.keys.Signer``."""

    @property
    def key(self) -> PrivateKey: ...


def _now() -> datetime:
    return datetime.now(UTC)


_BATCH_KEY = "rogatory.audit_batch"


# Built once and reused: the hot path of every write.
_READ_HEAD = sa.select(head_table).where(head_table.c.id == 1).with_for_update()
_MOVE_HEAD = (
    head_table.update()
    .where(head_table.c.id == 1, head_table.c.size == sa.bindparam("start"))
    .values(
        size=sa.bindparam("size"),
        root_hash=sa.bindparam("root_hash"),
        frontier=sa.bindparam("frontier"),
    )
)
_INSERT_ENTRY = entries_table.insert()
_SIZE = sa.select(head_table.c.size)
_INSERT_NODE = nodes_table.insert()


class _Batch:
    """Entries appended in one transaction, held until ``flush``."""

    def __init__(self, log: AuditLog, connection: Connection) -> None:
        self.log = log
        self.connection = connection
        head = connection.execute(_READ_HEAD).one()
        self.start = self.size = int(head.size)
        self.root_hash = bytes(head.root_hash)
        self.frontier = merkle.Frontier.from_bytes(self.size, head.frontier)
        self.entries: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []

    def append(self, event: AuditEvent) -> AuditEntryRef:
        index = self.size
        encoded = encode_entry(index, self.log._clock(), event, self.root_hash)
        leaf = merkle.leaf_hash(encoded)
        completed = self.frontier.append(leaf)
        self.entries.append(
            {"idx": index, "leaf_hash": leaf, "entry": encoded, "kind": event.kind,
             "message_id": event.message_id}
        )  # fmt: skip
        self.nodes += [{"level": lv, "idx": i, "hash": h} for lv, i, h in completed]
        self.size += 1
        self.root_hash = self.frontier.root()
        return AuditEntryRef(index, leaf)

    def flush(self) -> None:
        if not self.entries:
            return
        self.connection.execute(_INSERT_ENTRY, self.entries)
        if self.nodes:
            self.connection.execute(_INSERT_NODE, self.nodes)
        moved = self.connection.execute(
            _MOVE_HEAD,
            {"start": self.start, "size": self.size, "root_hash": self.root_hash,
             "frontier": self.frontier.to_bytes()},
        )  # fmt: skip
        if moved.rowcount != 1:
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
